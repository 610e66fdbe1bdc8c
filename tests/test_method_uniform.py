"""The uniform baseline (docs/BASELINES.md section 6): loss by hand, which parameters it trains, refusals, resume."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_colored_data, tiny_three_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import StepContext, create_method, method_class
from greedymm.models import build_model
from greedymm.train import fit


def tiny(fusion, n=2, heads=True):
    torch.manual_seed(0)
    mods = ("a", "b", "c")[:n]
    return build_model("small-cnn", mods, (1,) * n, num_classes=4, width=0.25, fusion=fusion, unimodal_heads=heads)


def batch(model, b=6):
    g = torch.Generator().manual_seed(0)
    x = {m: torch.rand(b, 1, 12, 12, generator=g) for m in model.modalities}
    return x, torch.randint(0, 4, (b,), generator=g)


def grads(model, method):
    x, y = batch(model)
    out = model(x)
    loss = method.loss(StepContext(x, y, out, model, model, "regular", 0, 0))
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss, out, y, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("fusion, n", [("concat", 2), ("sum", 2), ("film", 2), ("gated", 2), ("sum", 3)])
def test_late_fusion_loss_by_hand_and_every_head_trained(fusion, n):
    model = tiny(fusion, n)
    uniform = create_method("uniform")
    uniform.check(model)
    loss, out, y, g = grads(model, uniform)
    with torch.no_grad():  # o_m = a separate Linear head on z_m
        heads = [z @ h.weight.T + h.bias for z, h in zip(out.features, model.unimodal_heads, strict=True)]
        expected = F.cross_entropy(out.logits, y) + sum(F.cross_entropy(o, y) for o in heads)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(v is not None for v in g.values())  # every parameter trains, the uni-modal heads included
    # the uni-modal terms do not reach the fusion head: its gradient is vanilla's
    _, _, _, g_vanilla = grads(model, create_method("vanilla"))
    for name in g:
        if name.startswith("head."):
            torch.testing.assert_close(g[name], g_vanilla[name], rtol=1e-6, atol=1e-9)
        elif name.startswith("unimodal_heads."):
            assert g_vanilla[name] is None
        elif name.startswith("encoders.") and name.endswith("weight"):
            assert not torch.allclose(g[name], g_vanilla[name])  # the encoders also get the uni-modal terms


def test_mmtm_loss_adds_the_fused_term():
    model = tiny("mmtm")
    loss, out, y, g = grads(model, create_method("uniform"))
    with torch.no_grad():  # [our reading]: CE(mean of the heads' logits) + sum_m CE(head m)
        mean = (out.heads[0] + out.heads[1]) / 2
        expected = F.cross_entropy(mean, y) + F.cross_entropy(out.heads[0], y) + F.cross_entropy(out.heads[1], y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() > model.loss(out, y).item()  # the family's default (sum of heads) plus the fused term
    assert all(v is not None for v in g.values())


def test_declarations_refusal_and_state():
    cls = method_class("uniform")
    assert cls.needs_unimodal_heads and cls.fusions is None and cls.extra_cost == {"forward": 0, "backward": 0}
    with pytest.raises(ValueError, match="unimodal_heads=True"):
        create_method("uniform").check(tiny("concat", heads=False))
    with pytest.raises(ValueError, match="no hyper-parameter"):
        create_method("uniform", alpha=0.1)
    m = create_method("uniform")
    m2 = create_method("uniform")
    m2.load_state_dict(m.state_dict())
    assert m2.state_dict() == m.state_dict() == {"mode": "regular"}


@pytest.mark.parametrize(
    "fusion, data", [("film", tiny_colored_data), ("sum", tiny_three_data)], ids=["film-2", "sum-3"]
)
def test_fit_trains_and_resume_equals_straight_run(tmp_path, fusion, data):
    d = data()
    c = TrainConfig(dataset="tiny", method="uniform", fusion=fusion, epochs=2, batch_size=16, optimizer="adam",
                    lr=3e-3, width=0.25, device="cpu")  # fmt: skip
    fit(c, tmp_path / "a", progress=False, data=d)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=d)
    fit(c, tmp_path / "b", resume=True, progress=False, data=d)
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    n = len(d.modalities)
    assert {f"acc_head{k}" for k in range(n)} <= recs[-1]["val"].keys()  # the uni-modal heads are evaluated
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert any(k.startswith("unimodal_heads.") for k in a["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
