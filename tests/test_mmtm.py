"""MMTM forward against numbers worked out by hand (SPEC.md section 1)."""

import math

import pytest
import torch

from greedymm.models.mmtm import MMTM


def sig(x):
    return 1 / (1 + math.exp(-x))


def hand_mmtm(gate="sigmoid"):
    m = MMTM(2, 2, ratio=4, gate=gate)  # dim(Z) = int(2 * (2 + 2) / 4) = 2
    with torch.no_grad():
        m.squeeze.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))
        m.squeeze.bias.copy_(torch.tensor([0.0, -3.0]))
        m.gates[0].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))
        m.gates[0].bias.zero_()
        m.gates[1].weight.copy_(torch.tensor([[-1.0, 3.0], [1.0, 1.0]]))
        m.gates[1].bias.copy_(torch.tensor([1.0, 0.0]))
    return m


# A: 2 channels x 4 positions, S_A = [3, 2]; B: S_B = [2, 0]
A = torch.tensor([[[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, 4.0]]])
B = torch.tensor([[[2.0, 2.0, 2.0, 2.0], [1.0, -1.0, 1.0, -1.0]]])


def test_forward_matches_hand_computation():
    # Z = ReLU([3 - 2, 2 + 0 - 3]) = [1, 0]; W_A Z = [2, 0]; W_B Z + b_B = [0, 1]
    m = hand_mmtm().eval()
    a2, b2 = m(A, B)
    g_a, g_b = [sig(2), 0.5], [0.5, sig(1)]
    assert torch.allclose(a2, A * torch.tensor(g_a)[None, :, None])
    assert torch.allclose(b2, B * torch.tensor(g_b)[None, :, None])
    assert a2[0, 0, 3].item() == pytest.approx(6 * 0.8807970779778823)
    assert b2[0, 1, 1].item() == pytest.approx(-0.7310585786300049)


def test_two_sigmoid_option_doubles_the_gates():
    m = hand_mmtm("2sigmoid").eval()
    a2, b2 = m(A, B)
    assert torch.allclose(a2, A * torch.tensor([2 * sig(2), 1.0])[None, :, None])
    assert torch.allclose(b2, B * torch.tensor([1.0, 2 * sig(1)])[None, :, None])


def test_dim_z_follows_the_ratio():
    assert MMTM(64, 64, ratio=4).squeeze.out_features == 64
    assert MMTM(32, 96, ratio=4).squeeze.out_features == 64
    with pytest.raises(ValueError, match="gate"):
        MMTM(4, 4, gate="tanh")


def test_running_gate_means_per_branch_training_only():
    m = hand_mmtm()
    m.train()
    m(A, B)
    m(A, B)
    assert int(m.gate_count) == 2
    assert torch.allclose(m.gate_mean0, torch.tensor([sig(2), 0.5]))
    assert torch.allclose(m.gate_mean1, torch.tensor([0.5, sig(1)]))  # its own gates, not branch 0's
    m.eval()
    m(A * 5, B)
    assert int(m.gate_count) == 2  # evaluation forwards leave the running means alone


def test_rebalance_mode_uses_running_mean_and_cuts_gradient():
    m = hand_mmtm()
    with torch.no_grad():
        m.gate_mean0.copy_(torch.tensor([0.25, 0.75]))
        m.gate_count.fill_(1000)  # one more forward barely moves the mean
    a = A.clone().requires_grad_()
    a2, b2 = m(a, B, mode="rebalance0")
    assert torch.allclose(a2, A * m.gate_mean0[None, :, None], atol=1e-3)
    (a2.sum() + b2.sum()).backward()
    assert m.gates[0].weight.grad is None  # the gate layer into branch 0 gets no gradient
    assert m.gates[1].weight.grad is not None and m.squeeze.weight.grad is not None


def test_cut_mode_uses_the_other_branch_train_mean():
    m = hand_mmtm().eval()
    with torch.no_grad():
        m.sq_mean0.copy_(torch.tensor([0.0, 4.0]))
        m.sq_mean1.copy_(torch.tensor([4.0, 1.0]))
    a2, b2 = m(A, B, mode="cut")
    # head 0: [S_A ; mean S_B] = [3, 2, 4, 1] -> Z = ReLU([3 - 2, 4 + 1 - 3]) = [1, 2]
    # -> g_A = [sig(2), sig(10)]
    assert torch.allclose(a2, A * torch.tensor([sig(2), sig(10)])[None, :, None])
    # head 1: [mean S_A ; S_B] = [0, 4, 2, 0] -> Z = ReLU([0 - 4, 2 + 0 - 3]) = [0, 0]
    # -> g_B = sigma(b_B) = [sig(1), 0.5]
    assert torch.allclose(b2, B * torch.tensor([sig(1), 0.5])[None, :, None])


def test_squeeze_means_from_training_forwards():
    m = hand_mmtm().train()
    m(A, B)
    m(A + 1, B - 1)
    assert m.commit_squeeze_means()
    assert torch.allclose(m.sq_mean0, torch.tensor([3.5, 2.5]))
    assert torch.allclose(m.sq_mean1, torch.tensor([1.5, -0.5]))
