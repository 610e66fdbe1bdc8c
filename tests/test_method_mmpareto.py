"""MMPareto (docs/BASELINES.md section 5): the 2-D examples by hand, the per-encoder rule on real networks, refusals,
state, DDP, and a run through the training loop."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import StepContext, create_method
from greedymm.methods.mmpareto import combine, encoder_parameters, min_norm_weight, pareto_weights
from greedymm.models import build_model
from greedymm.train import fit

approx = pytest.approx
D = torch.float64


def tiny(fusion="concat", n=2, heads=True, seed=0):
    torch.manual_seed(seed)
    names = ("a", "b", "c")[:n]
    return build_model("small-cnn", names, (1,) * n, num_classes=4, width=0.25, fusion=fusion, unimodal_heads=heads)


def batch(model, b=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.rand(b, 1, 12, 12, generator=g) for m in model.modalities}
    return x, torch.randint(0, 4, (b,), generator=g)


def step(method, model, x, y, net=None):
    model.train()
    net = net or model
    out = net(x)
    ctx = StepContext(x, y, out, model, net, "regular", 0, 0)
    loss = method.loss(ctx)
    model.zero_grad(set_to_none=True)
    method.backward(loss, ctx)
    method.on_after_backward(ctx)
    return loss


def rule_2d(g_mm, g_u, g_sum, gamma=1.5):
    g_mm, g_u, g_sum = (torch.tensor(v, dtype=D) for v in (g_mm, g_u, g_sum))
    l1, cos = pareto_weights(g_mm @ g_mm, g_mm @ g_u, g_u @ g_u)
    return combine(g_mm, g_u, g_sum, l1, gamma), float(l1), float(cos)


# -- docs/BASELINES.md's sanity values ---------------------------------------------------------------------------
def test_conflicting_example_by_hand():
    final, l1, cos = rule_2d([1.0, 0.0], [-0.5, 1.0], [0.5, 1.0])
    assert cos == approx(-0.4472, abs=1e-4) and l1 == approx(0.538462, abs=1e-6)
    # h = (0.615385, 0.923077), |h| = 1.109400, |g_sum| = 1.118034, r = 1.007782 > 1
    assert final.tolist() == approx([0.930261, 1.395391], abs=1e-6)
    assert float(final.norm()) == approx(1.677051, abs=1e-6) == 1.5 * math.sqrt(1.25)


def test_agreeing_example_by_hand():
    final, l1, _ = rule_2d([1.0, 0.0], [0.5, 1.0], [1.5, 1.0])
    assert l1 == 0.5 and final.tolist() == approx([2.25, 1.5])  # 1.5 x the summed gradient


def test_min_norm_weight_clipping_rules():
    t = lambda *v: [torch.tensor(x, dtype=D) for x in v]  # noqa: E731
    assert float(min_norm_weight(*t(1.0, 2.0, 5.0))) == 0.999  # g_mm.g_u >= |g_mm|^2
    assert float(min_norm_weight(*t(5.0, 2.0, 1.0))) == 0.001  # g_mm.g_u >= |g_u|^2
    assert float(min_norm_weight(*t(1.0, 1.0, 1.0))) == 0.999  # both hold: the first rule wins (the code's order)
    assert float(min_norm_weight(*t(1.0, -0.5, 1.25))) == approx(1.75 / 3.25)


def test_zero_common_direction_gives_zero_not_nan():
    final, l1, cos = rule_2d([1.0, 0.0], [-1.0, 0.0], [0.0, 0.0])  # h = 2 (g_mm + g_u) / 2 = 0
    assert cos == -1 and l1 == 0.5 and final.tolist() == [0.0, 0.0]
    final, _, _ = rule_2d([1.0, 0.0], [-1.0, 0.0], [3.0, 0.0])  # |g_sum| / |h| would be inf
    assert final.tolist() == [0.0, 0.0]
    final, _, cos = rule_2d([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])  # no gradient at all
    assert cos == 0 and final.tolist() == [0.0, 0.0]


# -- the rule on real networks ---------------------------------------------------------------------------
def _by_hand(model, x, y, gamma=1.5):
    """The code's procedure: backward each loss, clone, zero; then the summed backward and the per-tensor rule."""
    model.train()
    out = model(x)
    losses = [F.cross_entropy(out.logits, y)] + [F.cross_entropy(h, y) for h in out.heads]
    n = model.n_modalities
    enc = [encoder_parameters(model, k) for k in range(n)]
    grads = []
    for loss in losses:
        model.zero_grad()
        loss.backward(retain_graph=True)
        grads.append({id(p): p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()})
    model.zero_grad()
    sum(losses).backward()
    final = {id(p): p.grad.clone() for p in model.parameters()}
    for k in range(n):
        g_mm = torch.cat([grads[0][id(p)].flatten() for p in enc[k]]).double()
        g_u = torch.cat([grads[1 + k][id(p)].flatten() for p in enc[k]]).double()
        cos = float(g_mm @ g_u / (g_mm.norm() * g_u.norm()))
        if cos > 0:
            l1 = 0.5
        else:
            v11, v12, v22 = float(g_mm @ g_mm), float(g_mm @ g_u), float(g_u @ g_u)
            l1 = 0.999 if v12 >= v11 else 0.001 if v12 >= v22 else (v22 - v12) / (v11 + v22 - 2 * v12)
        for p in enc[k]:
            h = 2 * (l1 * grads[0][id(p)] + (1 - l1) * grads[1 + k][id(p)])
            r = final[id(p)].norm() / h.norm()
            final[id(p)] = gamma * r * h if r > 1 else gamma * h
    return final


@pytest.mark.parametrize("fusion, n", [("concat", 2), ("mmtm", 2), ("sum", 3)])
def test_encoders_follow_the_rule_and_the_rest_keep_the_sum(fusion, n):
    model = tiny(fusion, n)
    ref = copy.deepcopy(model)
    x, y = batch(model)
    method = create_method("mmpareto")
    loss = step(method, model, x, y)
    out = ref(x)
    plain = F.cross_entropy(out.logits, y) + sum(F.cross_entropy(h, y) for h in out.heads)
    assert float(loss.detach()) == approx(float(plain.detach()))  # the logged loss is the summed loss
    expected = _by_hand(ref, x, y)
    encoder_ids = {id(p) for k in range(n) for p in encoder_parameters(ref, k)}
    changed = 0
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, expected[id(q)], atol=1e-7, rtol=1e-5), name
        if id(q) not in encoder_ids:  # heads, fusion head, MMTM modules: the summed gradient
            assert torch.equal(expected[id(q)], q.grad), name
        changed += not torch.allclose(expected[id(q)], q.grad)
    assert changed >= len(encoder_ids) // 2  # the encoders' gradients did change
    if fusion == "mmtm":  # encoder k = branch k without its head
        assert {id(p) for p in encoder_parameters(ref, 0)} == {id(p) for p in ref.branches[0].stages.parameters()}
    if fusion != "mmtm":  # these seeds exercise both branches: cos > 0 (1/2, 1/2) and cos <= 0 (MGDA)
        assert 0.0 in method.log["conflict"] and 1.0 in method.log["conflict"]
    log = method.epoch_log()
    assert {f"cos_m{k}" for k in range(n)} <= log.keys() and all(math.isfinite(v) for v in log.values())


def test_refusals_and_bad_hparams():
    method = create_method("mmpareto")
    with pytest.raises(ValueError, match="two or more modalities"):
        method.check(tiny("concat", n=1))
    with pytest.raises(ValueError, match="unimodal_heads=True"):
        method.check(tiny("concat", heads=False))
    method.check(tiny("mmtm", heads=False))  # MMTM branches have their own heads
    assert type(method).needs_unimodal_heads
    for bad in (0.0, -1.5, "1.5", True):
        with pytest.raises(ValueError, match="gamma"):
            create_method("mmpareto", gamma=bad)


def test_state_round_trip_and_epoch_log():
    model = tiny("concat")
    a = create_method("mmpareto", gamma=2.0)
    for seed in (1, 2):
        step(a, model, *batch(model, seed=seed))
    b = create_method("mmpareto", gamma=2.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.state_dict() == a.state_dict() and b.epoch_log() == a.epoch_log()
    assert a.log["steps"] == 2 and set(a.epoch_log()) == {
        f"{k}_m{i}" for k in ("cos", "conflict_share", "weight_mm") for i in (0, 1)
    }
    a.on_epoch_start(None)
    assert a.log["steps"] == 0


# -- DDP: two processes equal one ---------------------------------------------------------------------------------
def _ddp_steps(rank, world, fusion, out):
    """Three steps on rank's share of a batch of 8; with world > 1 the harness has the process group up."""
    from torch.nn.parallel import DistributedDataParallel

    from greedymm.distributed import sync_batchnorm

    torch.set_num_threads(1)
    model = tiny(fusion)
    method = create_method("mmpareto")
    net = model
    if world > 1:
        sync_batchnorm(model, torch.device("cpu"))
        net = DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(3):
        x, y = batch(model, seed=i)
        part = slice(rank * 8 // world, (rank + 1) * 8 // world)
        x, y = {k: v[part] for k, v in x.items()}, y[part]
        opt.zero_grad()
        step(method, model, x, y, net=net)
        opt.step()
    if rank == 0:
        params = {k: p.detach() for k, p in model.named_parameters()}
        torch.save({"params": params, "method": method.state_dict()}, out)


@pytest.mark.parametrize("fusion", ["concat", "mmtm"])
def test_two_processes_equal_one(tmp_path, ddp, fusion):
    _ddp_steps(0, 1, fusion, tmp_path / "one.pt")
    ddp.ranks(_ddp_steps, fusion, tmp_path / "two.pt")
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    log1, log2 = one["method"]["log"], two["method"]["log"]
    assert log1["conflict"] == log2["conflict"] and log1["cos"] == approx(log2["cos"], rel=1e-5)
    for k, p in one["params"].items():
        assert torch.allclose(p, two["params"][k], atol=1e-6), k


# -- the training loop ---------------------------------------------------------------------------------------
def test_fit_trains_and_resume_equals_straight_run(tmp_path):
    data = tiny_colored_data()
    c = TrainConfig(dataset="tiny", method="mmpareto", fusion="concat", epochs=2, batch_size=16, optimizer="sgd",
                    lr=0.02, width=0.25, device="cpu")  # fmt: skip
    fit(c, tmp_path / "a", progress=False, data=data)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=data)
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert any(k.startswith("unimodal_heads.") for k in a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["method"] == b["method"]
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs) and "cos_m0" in recs[-1]["method_log"]
