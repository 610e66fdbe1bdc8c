"""The two-branch network: parameter groups, the cut path and re-balancing (docs/PAPER.md sections 1, 3, 5)."""

import torch
import torch.nn.functional as F

from conftest import tiny_inputs


def _ids(params):
    return {id(p) for p in params}


def test_groups_partition_the_parameters(tiny_model):
    m = tiny_model
    theta0, theta1 = _ids(m.theta(0)), _ids(m.theta(1))
    gates = [
        _ids(f.squeeze.parameters()) | _ids(f.gates[0].parameters()) | _ids(f.gates[1].parameters()) for f in m.fusions
    ]
    gate_ids = set().union(*gates)
    everything = _ids(m.parameters())
    assert theta0 | theta1 | gate_ids == everything
    assert not theta0 & theta1 and not (theta0 | theta1) & gate_ids
    assert _ids(m.branches[0].head.parameters()) <= theta0  # the head is in theta_k


def test_psi_holds_the_squeeze_layer_in_both_groups(tiny_model):
    m = tiny_model
    psi0, psi1 = _ids(m.psi(0)), _ids(m.psi(1))
    for f in m.fusions:
        assert _ids(f.squeeze.parameters()) <= psi0 & psi1
        assert _ids(f.gates[0].parameters()) <= psi0 - psi1
        assert _ids(f.gates[1].parameters()) <= psi1 - psi0
    assert len(m.fusions) == 3


def _prime(m):
    """A training forward so running means and squeeze means are non-trivial."""
    m.train()
    m(tiny_inputs(8, seed=1))
    m.commit_squeeze_means()


def test_cut_head0_ignores_m1_and_head1_ignores_m0(tiny_model):
    m = tiny_model
    _prime(m)
    m.eval()
    x = tiny_inputs(4, seed=2)
    x_new_m1 = {**x, "gray": torch.rand_like(x["gray"])}
    x_new_m0 = {**x, "colored": torch.rand_like(x["colored"])}
    y0, y1 = m(x, mode="cut").heads
    assert torch.allclose(m(x_new_m1, mode="cut").heads[0], y0)
    assert torch.allclose(m(x_new_m0, mode="cut").heads[1], y1)
    # and in regular mode the other modality does matter, so the test above can fail
    assert not torch.allclose(m(x_new_m1).heads[0], m(x).heads[0])


def test_forward_modes_shares_the_stem_and_matches_separate_passes(tiny_model):
    m = tiny_model
    _prime(m)
    m.eval()
    x = tiny_inputs(4, seed=3)
    both = m.forward_modes(x, ["regular", "cut"])
    for mode in ("regular", "cut"):
        assert all(torch.allclose(a, b) for a, b in zip(both[mode].heads, m(x, mode=mode).heads, strict=True))


def test_rebalance0_head0_ignores_m1_and_gate0_gets_no_gradient(tiny_model):
    m = tiny_model
    _prime(m)
    x = tiny_inputs(4, seed=4)
    m.train()
    y0 = m(x, mode="rebalance0").heads[0]
    y0_new = m({**x, "gray": torch.rand_like(x["gray"])}, mode="rebalance0").heads[0]
    # BatchNorm in train mode mixes a batch, but only within its own branch: head 0 stays m0-only
    assert torch.allclose(y0, y0_new, atol=1e-6)
    m.zero_grad(set_to_none=True)
    y = torch.tensor([0, 1, 2, 3])
    l0, l1 = m(x, mode="rebalance0").heads
    (F.cross_entropy(l0, y) + F.cross_entropy(l1, y)).backward()
    for f in m.fusions:
        assert f.gates[0].weight.grad is None
        assert f.gates[1].weight.grad is not None and f.squeeze.weight.grad is not None


def test_every_parameter_gets_a_gradient_in_regular_mode(tiny_model):
    m = tiny_model.train()
    l0, l1 = m(tiny_inputs(4)).heads
    y = torch.tensor([0, 1, 2, 3])
    (F.cross_entropy(l0, y) + F.cross_entropy(l1, y)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_buffers_are_in_state_dict(tiny_model):
    keys = tiny_model.state_dict().keys()
    assert "fusions.0.gate_mean0" in keys and "fusions.2.gate_mean1" in keys and "fusions.1.sq_mean1" in keys
