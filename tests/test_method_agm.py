"""AGM (docs/BASELINES.md section 4): the coefficients and responses by hand, its gradient, refusals, state, DDP."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import StepContext, create_method
from greedymm.methods.agm import (
    clip_if_out_of_range,
    coalition_outputs,
    coefficients,
    ratios,
    responses,
    scores,
)
from greedymm.models import build_model
from greedymm.models.network import LATE, MultiModalNet, Output
from greedymm.train import fit

approx = pytest.approx


def tiny(fusion="concat", n=2, seed=0):
    torch.manual_seed(seed)
    names = ("a", "b", "c", "d")[:n]
    return build_model("small-cnn", names, (1,) * n, num_classes=4, width=0.25, fusion=fusion)


def batch(model, b=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.rand(b, 1, 12, 12, generator=g) for m in model.modalities}
    return x, torch.randint(0, 4, (b,), generator=g)


def step(method, model, x, y, step=0, epoch=0):
    """One training step's hooks, as train_step calls them; returns the loss."""
    model.train()
    out = model(x)
    ctx = StepContext(x, y, out, model, model, "regular", step, epoch)
    loss = method.loss(ctx)
    model.zero_grad(set_to_none=True)
    method.backward(loss, ctx)
    method.on_after_backward(ctx)
    return loss


# -- docs/BASELINES.md's sanity values ---------------------------------------------------------------------------
def test_coefficients_two_modalities_by_hand():
    s, sbar = [0.5, 1.5], [0.8, 1.2]
    assert ratios(s) == approx([2.718282, 0.367879], abs=1e-6)  # r_a = e, r_v = 1 / r_a
    assert ratios(sbar) == approx([1.491825, 0.670320], abs=1e-6)  # r*
    assert coefficients(s, sbar, alpha=1.0, cap=10) == approx([0.293330, 1.353157], abs=1e-6)


def test_ratios_three_modalities_and_the_caps():
    assert ratios([0.5, 1.0, 1.5]) == approx([2.117000, 1.0, 0.472367], abs=1e-6)
    # r*_0 - r_0 = e^20 - 1 is capped: c_0 = exp(alpha * cap)
    assert coefficients([0.0, 0.0], [0.0, 20.0], alpha=0.5, cap=10)[0] == approx(math.exp(5.0))
    assert coefficients([0.0, 0.0, 0.0], [0.0, 20.0, 20.0], alpha=1.0, cap=7)[0] == approx(math.exp(7.0))


def test_score_clamps_tiny_probabilities():
    logits = torch.tensor([[0.0, 0.0], [0.0, 100.0]])  # p[y] = 1/2, and ~e^-100 < 1e-8
    s = scores([logits], torch.tensor([0, 0]))
    assert s.tolist() == approx([(math.log(2) - math.log(1e-8)) / 2])


def test_responses_are_the_code_expressions():
    f = {s: torch.randn(3, 4, dtype=torch.float64) for s in range(8)}
    a, v = responses({s: f[s] for s in range(4)}, 2)  # bit 0: audio, bit 1: visual
    assert torch.allclose(a, 0.5 * (f[3] - f[2] + f[1]))  # (f(a,v) - f(0,v) + f(a,0)) / 2
    assert torch.allclose(v, 0.5 * (f[3] - f[1] + f[2]))
    assert torch.allclose(a + v, f[3])  # no -f(0,0) term: they sum to f(a,v)
    # M = 3 (URFunny_net.py), bits (a, v, t) = (1, 2, 4): pad_audio_out = f(v,t) = f[6], ...
    ma, mv, mt = responses(f, 3)
    full, pad_a, pad_v, pad_t, pad_va, pad_vt, pad_at = f[7], f[6], f[5], f[3], f[4], f[1], f[2]
    assert torch.allclose(ma, (full - pad_a + pad_vt) / 3 + (pad_v - pad_at + pad_t - pad_va) / 6)
    assert torch.allclose(mv, (full - pad_v + pad_at) / 3 + (pad_a - pad_vt + pad_t - pad_va) / 6)
    assert torch.allclose(mt, (full - pad_t + pad_va) / 3 + (pad_v - pad_at + pad_a - pad_vt) / 6)
    assert torch.allclose(ma + mv + mt, full)


class Additive(MultiModalNet):
    """f = h_a(a) + h_v(v) + b with h_k linear without bias, so h_k(0) = 0."""

    family, fusion = LATE, "sum"

    def __init__(self):
        super().__init__(("a", "v"))
        self.ha, self.hv = nn.Linear(3, 4, bias=False), nn.Linear(3, 4, bias=False)
        self.b = nn.Parameter(torch.randn(4))

    def forward_modes(self, inputs, modes):
        out = self.ha(inputs["a"]) + self.hv(inputs["v"]) + self.b
        return {m: Output(out, (), ()) for m in modes}


def test_additive_model_response_and_gradient():
    torch.manual_seed(0)
    model = Additive()
    x = {"a": torch.randn(5, 3), "v": torch.randn(5, 3)}
    y = torch.tensor([0, 1, 2, 3, 0])
    ma, mv = responses(coalition_outputs(model, x, model(x).logits), 2)
    assert torch.allclose(ma, model.ha(x["a"]) + model.b / 2, atol=1e-6)  # OGM's "W_a z_a + b/2"
    assert torch.allclose(mv, model.hv(x["v"]) + model.b / 2, atol=1e-6)
    # the hooks: d/dW_a = c_a dL/dout^T a, d/db = (c_a + c_v)/2 sum_i dL/dout_i
    method = create_method("agm", alpha=1.0)
    method.running, method.scale = [0.3, 2.0], [1.0, 1.0]  # r* far from r: c well away from 1
    out = model(x)
    loss = method.loss(StepContext(x, y, out, model, model, "regular", 5, 0))
    loss.backward()
    ca, cv = method.scale
    assert abs(ca - 1) > 0.1 and abs(cv - 1) > 0.1
    logits = out.logits.detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    assert torch.allclose(model.ha.weight.grad, ca * g.T @ x["a"], atol=1e-6)
    assert torch.allclose(model.hv.weight.grad, cv * g.T @ x["v"], atol=1e-6)
    assert torch.allclose(model.b.grad, (ca + cv) / 2 * g.sum(0), atol=1e-6)


# -- the gradient on real networks ---------------------------------------------------------------------------
def _by_hand(model, x, y, c):
    """sum_k c_k (dm_k/dtheta)^T dL/dout with the code's expressions (M = 2), on a copy of the model."""
    model.train()
    full = model(x).logits
    model.eval()
    z = {m: torch.zeros_like(v) for m, v in x.items()}
    pad_v = model({"a": x["a"], "b": z["b"]}).logits  # f(a,0)
    pad_a = model({"a": z["a"], "b": x["b"]}).logits  # f(0,v)
    model.train()
    ma, mv = 0.5 * (full - pad_a + pad_v), 0.5 * (full - pad_v + pad_a)
    out = (ma + mv).detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(out, y), out)
    params = list(model.parameters())
    return torch.autograd.grad([ma, mv], params, grad_outputs=[c[0] * g, c[1] * g])


@pytest.mark.parametrize("fusion", ["concat", "mmtm", "gated"])
def test_gradient_is_the_scaled_responses(fusion):
    model = tiny(fusion)
    ref = copy.deepcopy(model)
    x, y = batch(model)
    method = create_method("agm", alpha=1.0)
    method.running, method.scale = [1.0, 1.8], [1.0, 1.0]  # r* = (e^0.8, e^-0.8): c ~ (3.3, 0.6)
    step(method, model, x, y, step=3)
    c = method.scale
    assert abs(c[0] - c[1]) > 0.5  # modulated
    expected = _by_hand(ref, x, y, c)  # every parameter's gradient mixes both coefficients' responses
    got = [p.grad for p in model.parameters()]
    assert all(g is not None for g in got)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6, rtol=1e-4)


def test_outside_the_window_scales_stay_and_targets_update():
    model = tiny("concat")
    ref = copy.deepcopy(model)
    x, y = batch(model)
    method = create_method("agm", modulation_starts=2, modulation_ends=3)
    step(method, model, x, y, step=0, epoch=0)  # the code's epoch 1: before the window
    assert method.scale == [1.0, 1.0] and method.running != [0.0, 0.0]
    ref.train()
    F.cross_entropy(ref(x).logits, y).backward()  # c = 1: the plain gradient of CE(f(a,v))
    clip_if_out_of_range(ref)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    step(method, model, x, y, step=1, epoch=1)  # epoch 2: inside
    inside = list(method.scale)
    assert inside != [1.0, 1.0] and method.log["modulated"] == 1
    running = list(method.running)
    step(method, model, x, y, step=2, epoch=3)  # epoch 4: after; the code keeps the last scales on the hooks
    assert method.scale == inside and method.running != running


def test_eval_passes_restore_modes_and_leave_statistics():
    model = tiny("concat")
    ref = copy.deepcopy(model)
    x, y = batch(model)
    frozen = model.encoders[1].stages[0][0]  # a BN the user froze stays frozen
    frozen.eval()
    ref.encoders[1].stages[0][0].eval()
    method = create_method("agm")
    out = model(x)
    method.loss(StepContext(x, y, out, model, model, "regular", 0, 0))
    assert model.training and not frozen.training
    assert [m.training for m in model.modules()] == [m.training for m in ref.modules()]
    ref(x)  # one training forward: the padded passes add nothing to BN statistics or feature sums
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_clip_rule():
    model = tiny("sum")
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    assert not clip_if_out_of_range(model)  # entries within [-1, 1]: no clip, even with total norm >> 1
    assert model.head.fcs[0].weight.grad.max() == 0.5
    model.head.fcs[1].weight.grad[0, 0] = -1.5
    assert clip_if_out_of_range(model)
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert float(total) == approx(1.0, rel=1e-4)


def test_three_modalities_clip_at_five_as_the_ur_funny_code():
    # UR-Funny (M = 3): an output-layer gradient entry outside [-5, 5] clips every gradient to norm 5; within it,
    # nothing happens, though [-1, 1] (the two-modality bound) is exceeded
    model = tiny("concat", n=3)
    method = create_method("agm")
    ctx = StepContext({}, None, None, model, model, "regular", 0, 0)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    model.head.fc.weight.grad[0, 0] = 4.0
    method.on_after_backward(ctx)
    assert float(model.head.fc.weight.grad[0, 0]) == 4.0  # inside [-5, 5]: untouched
    model.head.fc.weight.grad[0, 0] = -6.0
    method.on_after_backward(ctx)
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert float(total) == approx(5.0, rel=1e-4)
    # two modalities keep the CREMA-D rule: 4.0 is outside [-1, 1], so every gradient is clipped to norm 1
    model = tiny("concat", n=2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    model.head.fc.weight.grad[0, 0] = 4.0
    method.on_after_backward(StepContext({}, None, None, model, model, "regular", 0, 0))
    assert float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()) == approx(1.0, rel=1e-4)


def test_refusals_and_bad_hparams():
    method = create_method("agm")
    for model in (tiny("concat", n=1), tiny("concat", n=4)):
        with pytest.raises(ValueError, match="2 or 3 modalities"):
            method.check(model)
    method.check(tiny("mmtm", n=3))
    for bad, match in [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": "1"}, "alpha"),
        ({"alpha": 9.0}, r"\[0, 8\]"),
        ({"modulation_starts": 1.5}, "integer"),
        ({"modulation_ends": -1}, "integer"),
        ({"modulation_starts": 5, "modulation_ends": 4}, "modulation_ends"),
    ]:
        with pytest.raises(ValueError, match=match):
            create_method("agm", **bad)


def test_three_modalities_and_state_round_trip():
    model = tiny("concat", n=3)
    x, y = batch(model)
    a = create_method("agm", alpha=2.0)
    step(a, model, x, y, step=0)
    step(a, model, x, y, step=1)
    assert len(a.scale) == 3 and all(math.isfinite(c) for c in a.scale)
    b = create_method("agm", alpha=2.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.state_dict() == a.state_dict() and b.epoch_log() == a.epoch_log()
    assert set(a.epoch_log()) >= {"modulated_steps", "coeff_m2", "score_m0", "target_m1"}
    twin = copy.deepcopy(model)
    step(a, model, x, y, step=2)
    step(b, twin, x, y, step=2)
    assert a.state_dict() == b.state_dict()


# -- DDP: two processes equal one ---------------------------------------------------------------------------------
def _ddp_steps(rank, world, fusion, out):
    """Three steps on rank's share of a batch of 8; with world > 1 the harness has the process group up."""
    from torch.nn.parallel import DistributedDataParallel

    from greedymm.distributed import sync_batchnorm

    torch.set_num_threads(1)
    model = tiny(fusion)
    method = create_method("agm", alpha=1.0)
    method.running, method.scale = [1.0, 1.8], [1.0, 1.0]
    net = model
    if world > 1:
        sync_batchnorm(model, torch.device("cpu"))
        net = DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(3):
        x, y = batch(model, seed=i)
        part = slice(rank * 8 // world, (rank + 1) * 8 // world)
        x, y = {k: v[part] for k, v in x.items()}, y[part]
        ctx = StepContext(x, y, net(x), model, net, "regular", 5 + i, 0)
        loss = method.loss(ctx)
        opt.zero_grad()
        method.backward(loss, ctx)
        method.on_after_backward(ctx)
        opt.step()
    if rank == 0:
        torch.save({"params": {k: p.detach() for k, p in model.named_parameters()}, "method": method.state_dict()}, out)


def test_two_processes_equal_one(tmp_path, ddp):
    _ddp_steps(0, 1, "concat", tmp_path / "one.pt")
    ddp.ranks(_ddp_steps, "concat", tmp_path / "two.pt")
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["method"]["scale"] == approx(two["method"]["scale"], rel=1e-6)
    assert abs(one["method"]["scale"][0] - 1) > 0.5  # the coefficients did act
    for k, p in one["params"].items():
        assert torch.allclose(p, two["params"][k], atol=1e-6), k


# -- the training loop ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fit_trains_and_resume_equals_straight_run(tmp_path):
    data = tiny_colored_data()
    c = TrainConfig(dataset="tiny", method="agm", epochs=2, batch_size=16, optimizer="sgd", lr=0.05, width=0.25,
                    hparams={"alpha": 1.0, "modulation_ends": 1}, device="cpu")  # fmt: skip
    fit(c, tmp_path / "a", progress=False, data=data)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=data)
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["method"] == b["method"]
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    import json

    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    assert recs[0]["method_log"]["modulated_steps"] > 0 and recs[1]["method_log"]["modulated_steps"] == 0
