"""Gradient-Blending (docs/BASELINES.md section 2): the weight function by hand (the sanity check and its guards), the
blended loss, the estimate (single-head copies, determinism, the model left alone), refusals, state, and a short
run that resumes exactly."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import fit_killed, tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.distributed import DistBatchNorm, sync_batchnorm
from greedymm.methods import EpochInfo, StepContext, create_method
from greedymm.methods.gblending import _local_batchnorm, blend_weights, head_logits
from greedymm.models import build_model
from greedymm.train import fit


def test_sanity_check_weights():
    # docs/BASELINES.md: (L^T_N, L^V_N, L^T_{N+n}, L^V_{N+n}) for a, v, av -> raw 5, 3.333, 2.5 -> (6/13, 4/13, 3/13)
    w = blend_weights([(1.0, 1.2, 0.6, 1.0), (1.0, 1.3, 0.4, 1.0), (0.9, 1.1, 0.6, 1.0)])
    assert w == pytest.approx([6 / 13, 4 / 13, 3 / 13])
    assert w == pytest.approx([0.4615, 0.3077, 0.2308], abs=1e-4)


def test_weight_guards():
    # a head whose held-out loss rose gets weight 0 (BB's abs() would give it 0.2 / 0.2^2 = 5 -> the largest)
    w = blend_weights([(1.0, 1.2, 0.6, 1.0), (1.0, 1.0, 0.8, 1.2), (0.9, 1.1, 0.6, 1.0)])
    assert w == pytest.approx([5 / 7.5, 0.0, 2.5 / 7.5])
    # no overfitting change: dO^2 floored at 1e-8, so that head takes (almost) all the weight
    w = blend_weights([(1.0, 1.2, 0.8, 1.0), (1.0, 1.2, 0.6, 1.0)])
    assert w == pytest.approx([0.2 / 1e-8 / (0.2 / 1e-8 + 5.0), 5.0 / (0.2 / 1e-8 + 5.0)])
    assert blend_weights([(1.0, 1.0, 0.5, 1.2), (1.0, 1.0, 0.5, 1.0)]) is None  # no head generalized better
    assert len(blend_weights([(1.0, 1.2, 0.6, 1.0)] * 4)) == 4  # M = 3: M + 1 weights, normalized over all


def _tiny(fusion, unimodal_heads=True, n=2):
    torch.manual_seed(0)
    names = ("colored", "gray", "c")[:n]
    return build_model("small-cnn", names, (3, 1, 1)[:n], 4, width=0.25, fusion=fusion, unimodal_heads=unimodal_heads)


def _inputs(b=8, n=2):
    g = torch.Generator().manual_seed(1)
    x = {"colored": torch.rand(b, 3, 12, 12, generator=g), "gray": torch.rand(b, 1, 12, 12, generator=g)}
    if n == 3:
        x["c"] = torch.rand(b, 1, 12, 12, generator=g)
    return x, torch.arange(b) % 4


def _loaded(weights):
    m = create_method("gblending")
    m.load_state_dict({**m.state_dict(), "weights": weights})
    return m


@pytest.mark.parametrize("fusion", ["concat", "mmtm"])
def test_loss_weights_each_head(fusion):
    model, (x, y) = _tiny(fusion), _inputs()
    w = [0.5, 0.3, 0.2]
    m = _loaded(w)
    out = model(x)
    loss = m.loss(StepContext(x, y, out, model, model, "regular", 0, 0))
    ces = [F.cross_entropy(h, y) for h in (*out.heads, out.logits)]
    assert loss.item() == pytest.approx(sum(wk * c.item() for wk, c in zip(w, ces, strict=True)), rel=1e-6)
    if fusion == "concat":  # separate heads: each gets exactly its weight times its own CE's gradient
        checks = [(model.unimodal_heads[0].weight, 0), (model.unimodal_heads[1].weight, 1), (model.head.fc.weight, 2)]
        for p, k in checks:
            (g,) = torch.autograd.grad(loss, p, retain_graph=True)
            (g_k,) = torch.autograd.grad(ces[k], p, retain_graph=True)
            assert torch.allclose(g, w[k] * g_k, atol=1e-7)
        # the encoders get their uni-modal term and the fused term, nothing else
        p = next(model.encoders[1].parameters())
        (g,) = torch.autograd.grad(loss, p, retain_graph=True)
        expected = torch.autograd.grad(0.3 * ces[1] + 0.2 * ces[2], p, retain_graph=True)[0]
        assert torch.allclose(g, expected, atol=1e-7)


def test_head_logits_reads_one_modality():
    x, _ = _inputs()
    x2 = {**x, "gray": torch.rand_like(x["gray"])}
    for fusion in ("concat", "mmtm"):
        model = _tiny(fusion).eval()
        assert torch.equal(head_logits(model, x, 0), head_logits(model, x2, 0))  # head 0 does not see gray
        assert not torch.equal(head_logits(model, x, 1), head_logits(model, x2, 1))
        assert torch.equal(head_logits(model, x, 2), model(x).logits)
    late = _tiny("concat").eval()
    assert torch.equal(head_logits(late, x, 1), late(x).heads[1])  # the separate uni-modal head


def test_estimate_is_deterministic_and_leaves_the_run_alone():
    data = tiny_colored_data(n_train=48)  # 36 training items: 32 for the copies, 4 held out
    model = _tiny("concat")
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # a leftover gradient must not leak into the copies or be touched
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    info = EpochInfo(0, model, data.train, batch_size=16, seed=3)
    a = create_method("gblending", super_epoch=1, est_lr=3e-3, est_optimizer="adam")
    a.on_epoch_start(info)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert len(a.weights) == 3 and sum(a.weights) == pytest.approx(1.0) and min(a.weights) >= 0
    assert a.estimated_at == 0 and all(math.isfinite(v) for r in a.last_losses for v in r)
    b = create_method("gblending", super_epoch=1, est_lr=3e-3, est_optimizer="adam")
    b.on_epoch_start(info)
    assert a.weights == b.weights and a.last_losses == b.last_losses
    w = blend_weights(a.last_losses)  # the blend of the measured losses, or uniform weights when it has none
    assert a.weights == (w if w is not None else [1 / 3] * 3)
    # super-epochs of 2: estimates at epochs 0, 2, 4 only
    c = create_method("gblending", super_epoch=2)
    c.load_state_dict({**c.state_dict(), "weights": [0.2, 0.3, 0.5], "estimated_at": 0})
    c.on_epoch_start(EpochInfo(1, model, data.train, batch_size=16))
    assert c.weights == [0.2, 0.3, 0.5] and c.estimated_at == 0
    # the held-out part: a fixed share of the training split, disjoint from the copies' training part
    rest, hold = a.split(72, 3)  # 10 % of 72
    assert len(hold) == 7 and len(rest) == 65 and not set(rest.tolist()) & set(hold.tolist())
    assert torch.equal(a.split(72, 3)[1], hold) and not torch.equal(a.split(72, 4)[1], hold)


def test_copies_use_local_batchnorm():
    model = sync_batchnorm(_tiny("concat"), torch.device("cpu"))
    assert any(isinstance(mod, DistBatchNorm) for mod in model.modules())
    x, _ = _inputs()
    local = _local_batchnorm(model)
    assert not any(isinstance(mod, DistBatchNorm) for mod in local.modules())
    assert torch.equal(local(x).logits, _tiny("concat")(x).logits)


def test_refusals_and_hparams():
    with pytest.raises(ValueError, match="--method vanilla"):
        create_method("gblending").check(build_model("small-cnn", ("a",), (1,), 4, width=0.25))
    with pytest.raises(ValueError, match="unimodal_heads=True"):
        create_method("gblending").check(_tiny("concat", unimodal_heads=False))
    for fusion in ("mmtm", "concat", "sum", "film", "gated"):
        create_method("gblending").check(_tiny(fusion))
    create_method("gblending").check(_tiny("sum", n=3))
    bad = [
        ({"super_epoch": 0}, "super_epoch"),
        ({"super_epoch": 2.0}, "super_epoch"),
        ({"holdout": 0.0}, "holdout"),
        ({"holdout": 1.0}, "holdout"),
        ({"est_lr": 0.0}, "est_lr"),
        ({"est_lr": math.nan}, "est_lr"),
        ({"est_optimizer": "rmsprop"}, "est_optimizer"),
    ]
    for hp, match in bad:
        with pytest.raises(ValueError, match=match):
            create_method("gblending", **hp)
    with pytest.raises(ValueError, match="lower holdout"):
        create_method("gblending", holdout=0.5).split(3, 0)
    model, (x, y) = _tiny("concat"), _inputs()
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        create_method("gblending").loss(StepContext(x, y, model(x), model, model, "regular", 0, 0))


def test_state_dict_round_trip():
    m = create_method("gblending")
    m.load_state_dict({**m.state_dict(), "weights": [0.1, 0.2, 0.7], "estimated_at": 5, "last_losses": [[1.0] * 4]})
    n = create_method("gblending")
    n.load_state_dict(m.state_dict())
    assert n.state_dict() == m.state_dict() and n.epoch_log() == m.epoch_log()
    assert m.epoch_log() == {"w_m0": 0.1, "w_m1": 0.2, "w_fused": 0.7, "estimated_at": 5}
    assert create_method("gblending").epoch_log() == {}


def _cfg(**kw):
    base = dict(dataset="tiny", method="gblending", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25,
                warmup_epochs=0.5, hparams={"super_epoch": 1, "est_lr": 3e-3, "est_optimizer": "adam"},
                device="cpu", fusion="concat")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_trains_and_resume_equals_straight_run(tmp_path, monkeypatch):
    d = tiny_colored_data(n_train=48)  # 36 training items: 2 steps an epoch, 32 + 4 for the estimate
    c = _cfg()
    fit(c, tmp_path / "a", progress=False, data=d)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=d)  # resumes at a super-epoch start
    fit(c, tmp_path / "b", resume=True, progress=False, data=d)
    fit_killed(monkeypatch, c, tmp_path / "c", d, steps=3)  # killed in epoch 1, after its estimate
    fit(c, tmp_path / "c", resume=True, progress=False, data=d)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    assert a["method"]["estimated_at"] == 1  # re-estimated at epoch 1
    for run in ("b", "c"):
        b = load_checkpoint(tmp_path / run / "last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert a["method"] == b["method"]
        assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / run / "steps.csv").read_text()
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    assert [r["method_log"]["estimated_at"] for r in recs] == [0, 1]
    assert all(sum(v for k, v in r["method_log"].items() if k.startswith("w_")) == pytest.approx(1) for r in recs)


def test_two_processes_match_one(tmp_path, ddp):
    """torchrun, 2 CPU processes (gloo), MMTM: every rank estimates alike, and as one process does."""
    one, two = tmp_path / "one", tmp_path / "two"
    a = ddp.train(one, "gblending", processes=1, epochs=1)
    b = ddp.train(two, "gblending", processes=2, epochs=1)
    # each rank trains the copies on the whole data with local BatchNorm: the single-process losses, bit for bit
    sa, sb = (load_checkpoint(d / "last.pt")["method"] for d in (one, two))
    assert sa["last_losses"] == sb["last_losses"] and sa["weights"] == sb["weights"]
    assert a[0]["method_log"] == b[0]["method_log"]
    assert a[0]["train"]["loss"] == pytest.approx(b[0]["train"]["loss"], rel=1e-4)
