"""MMTM forward against numbers worked out by hand (docs/PAPER.md section 1)."""

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
    assert torch.allclose(m.gate_mean0.float(), torch.tensor([sig(2), 0.5]))
    assert torch.allclose(m.gate_mean1.float(), torch.tensor([0.5, sig(1)]))  # its own gates, not branch 0's
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
    assert torch.allclose(a2, A * m.gate_mean0.float()[None, :, None], atol=1e-3)
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
    assert torch.allclose(m.sq_mean0.float(), torch.tensor([3.5, 2.5]))
    assert torch.allclose(m.sq_mean1.float(), torch.tensor([1.5, -0.5]))


def hand_mmtm3():
    """Three branches with one channel each; dim(Z) = int(2 * 3 / 3) = 2."""
    m = MMTM(1, 1, 1, ratio=3)
    with torch.no_grad():
        m.squeeze.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
        m.squeeze.bias.zero_()
        for k, w in enumerate(([1.0, 0.0], [0.0, 1.0], [1.0, -1.0])):
            m.gates[k].weight.copy_(torch.tensor([w]))
            m.gates[k].bias.zero_()
    return m


# three maps of one channel at 2 positions: S = (1, 2, 3)
X3 = [torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[3.0, 3.0]]])]


def test_three_way_mmtm_matches_hand_computation():
    m = hand_mmtm3().eval()
    assert m.squeeze.out_features == 2 and len(m.gates) == 3
    # Z = ReLU([1 + 2, 2 + 3]) = [3, 5]; g = sigma(3), sigma(5), sigma(3 - 5)
    out = m(*X3)
    for x, o, g in zip(X3, out, (sig(3), sig(5), sig(-2)), strict=True):
        assert torch.allclose(o, x * g)


def test_three_way_cut_keeps_each_branch_on_its_own_modality():
    m = hand_mmtm3().eval()
    with torch.no_grad():
        for k, v in enumerate((10.0, 20.0, 30.0)):
            m.buffer("sq_mean", k).fill_(v)
        for gate in m.gates:  # every gate reads Z_0 + Z_1 = S_0 + 2 S_1 + S_2, so it sees all three inputs, and
            gate.weight.fill_(0.05)  # small weights keep the sigmoids apart in float32
    out = m(*X3, mode="cut")
    # branch 0: [S_0; mean_1; mean_2] = [1, 20, 30] -> Z = [21, 50] -> g_0 = sigma(0.05 * 71) = sigma(3.55)
    # branch 1: [10, 2, 30] -> Z = [12, 32] -> g_1 = sigma(2.2)
    # branch 2: [10, 20, 3] -> Z = [30, 23] -> g_2 = sigma(2.65)
    # (replacing only one of the other two inputs would give sigma(2.2), sigma(1.75), sigma(0.85))
    for x, o, g in zip(X3, out, (sig(3.55), sig(2.2), sig(2.65)), strict=True):
        assert torch.allclose(o, x * g)
    # "remove1": S_1 replaced by its mean in Z for every gate: [1, 20, 3] -> Z = [21, 23] -> sigma(2.2) each
    out = m(*X3, mode="remove1")
    for x, o in zip(X3, out, strict=True):
        assert torch.allclose(o, x * sig(2.2))
    # the uncut forward for contrast: [1, 2, 3] -> Z = [3, 5] -> sigma(0.4) each
    for x, o in zip(X3, m(*X3), strict=True):
        assert torch.allclose(o, x * sig(0.4))


def test_three_way_rebalance_freezes_only_that_gate():
    m = hand_mmtm3().train()
    with torch.no_grad():
        m.gate_mean2.fill_(0.25)
        m.gate_count.fill_(10**6)
    out = m(*X3, mode="rebalance2")
    assert torch.allclose(out[2], X3[2] * 0.25, atol=1e-5)
    sum(o.sum() for o in out).backward()
    assert m.gates[2].weight.grad is None
    assert m.gates[0].weight.grad is not None and m.gates[1].weight.grad is not None


def test_unknown_modes_and_counts_are_refused():
    m = hand_mmtm3()
    with pytest.raises(ValueError, match="rebalance2"):
        m(*X3, mode="rebalance3")
    with pytest.raises(ValueError, match="joins 3 branches"):
        m(*X3[:2])
    with pytest.raises(ValueError, match="two or more"):
        MMTM(4)
