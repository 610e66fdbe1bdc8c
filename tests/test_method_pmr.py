"""PMR (docs/BASELINES.md section 3): the sanity check by hand, prototypes, the M > 2 rule, what it touches, refusals,
state, and a short run that resumes exactly."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import fit_killed, same_state, tiny_colored_data, tiny_three_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import EpochInfo, StepContext, create_method
from greedymm.methods.pmr import dominant_mask, prototype_similarity, rho, weaker_mask
from greedymm.models import Output, build_model
from greedymm.train import fit


def _ctx(model, x, y, out, epoch=0):
    return StepContext(x, y, out, model, model, "regular", 0, epoch)


def test_sanity_check_by_hand():
    # docs/BASELINES.md: z_a = (0,0), prototypes (0,0), (3,4): p_a = 1/(1+e^-5); z_v = (1,0), prototypes (0,0), (2,0):
    # p_v = 0.5; rho = 1.986614 > 1, so L = CE + alpha * 0.693147 on the visual branch, nothing for audio
    za, zv, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    pa, pv = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    sa, sv = prototype_similarity(za, pa), prototype_similarity(zv, pv)
    assert sa.softmax(1)[0, 0].item() == pytest.approx(1 / (1 + math.exp(-5)), abs=1e-6)
    assert sa.softmax(1)[0, 0].item() == pytest.approx(0.993307, abs=1e-6)
    assert sv.softmax(1)[0, 0].item() == pytest.approx(0.5)
    scores = torch.tensor([sa.softmax(1)[0, 0].item(), sv.softmax(1)[0, 0].item()], dtype=torch.float64)
    assert rho(scores)[0].item() == pytest.approx(1.986614, abs=1e-6)
    assert weaker_mask(scores).tolist() == [False, True] and dominant_mask(scores).tolist() == [True, False]
    assert F.cross_entropy(sv, y).item() == pytest.approx(0.693147, abs=1e-6)
    # through the method: the base loss is the fused CE (logits 0 over 2 classes: log 2)
    model = build_model("small-cnn", ("a", "v"), (1, 1), 2, width=0.25, fusion="concat")
    for alpha in (1.0, 2.5):
        m = create_method("pmr", alpha=alpha)
        m.prototypes = [pa, pv]
        out = Output(torch.zeros(1, 2), (), (za, zv))
        loss = m.loss(_ctx(model, {}, y, out))
        assert loss.item() == pytest.approx(math.log(2) + alpha * 0.693147, abs=1e-6)
        log = m.epoch_log()
        assert log["score_m0"] == pytest.approx(0.993307, abs=1e-6) and log["score_m1"] == pytest.approx(0.5)
        assert (log["pce_share_m0"], log["pce_share_m1"], log["steps"]) == (0.0, 1.0, 1)
    # rho = 1 adds nothing; outside the window nothing either
    m = create_method("pmr", modulation_starts=1, modulation_ends=2)
    m.prototypes = [pv, pv]
    out = Output(torch.zeros(1, 2), (), (zv, zv))
    assert m.loss(_ctx(model, {}, y, out, epoch=1)).item() == pytest.approx(math.log(2))
    m.prototypes = [pa, pv]
    assert m.loss(_ctx(model, {}, y, Output(torch.zeros(1, 2), (), (za, zv)), epoch=3)).item() == pytest.approx(
        math.log(2)
    )


def test_more_than_two_modalities_rule():
    # [proposal] rho_m = s_m / mean_{k != m} s_k; PCE_m is added for rho_m < 1 only
    s = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert rho(s).tolist() == pytest.approx([1 / 2.5, 2 / 2.0, 3 / 1.5])
    assert weaker_mask(s).tolist() == [True, False, False]  # rho_1 = 1 exactly: nothing
    assert dominant_mask(s).tolist() == [False, False, True]
    # M = 2: the official rule (the weaker of the two), ties add nothing
    assert weaker_mask(torch.tensor([0.3, 0.7])).tolist() == [True, False]
    assert weaker_mask(torch.tensor([0.5, 0.5])).tolist() == [False, False]


def test_distance_zero_has_a_finite_gradient():
    z = torch.zeros(3, 2, requires_grad=True)
    sim = prototype_similarity(z, torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    (g,) = torch.autograd.grad(F.cross_entropy(sim, torch.tensor([0, 1, 0])), z)
    assert torch.isfinite(g).all()
    (g0,) = torch.autograd.grad(prototype_similarity(z, torch.zeros(1, 2)).sum(), z)
    assert torch.equal(g0, torch.zeros(3, 2))  # the subgradient 0 at the prototype


class _Features(nn.Module):
    """A stand-in network whose pooled features are its inputs (so prototypes are class means of the data)."""

    n_modalities = 2

    def forward(self, x, mode="regular"):
        return Output(torch.zeros(len(x["a"]), 3), (), (x["a"], x["b"]))


class _Split:
    def __init__(self, a, b, y):
        self.a, self.b, self.y = a, b, y

    def __len__(self):
        return len(self.y)

    def batch(self, idx, train=False):
        return {"a": self.a[idx], "b": self.b[idx]}, self.y[idx]


def _split(n=30, labels=None):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3 if labels is None else labels
    return _Split(torch.randn(n, 4, generator=g), torch.randn(n, 2, generator=g), y)


def _class_means(feat, y, c=3):
    return torch.stack([feat[y == k].double().mean(0) for k in range(c)]).float()


def test_prototypes_class_means_momentum_and_subset():
    split, model = _split(), _Features()
    m = create_method("pmr", proto_fraction=1.0)
    m.update_prototypes(EpochInfo(0, model, split, batch_size=7))
    assert torch.allclose(m.prototypes[0], _class_means(split.a, split.y), atol=1e-6)
    assert torch.allclose(m.prototypes[1], _class_means(split.b, split.y), atol=1e-6)
    # momentum 0.2: P = 0.8 new + 0.2 old from epoch 2 on
    m = create_method("pmr", proto_fraction=1.0, mu=0.2)
    old = [torch.ones(3, 4), torch.full((3, 2), -1.0)]
    m.prototypes = [p.clone() for p in old]
    m.update_prototypes(EpochInfo(2, model, split, batch_size=7))
    assert torch.allclose(m.prototypes[0], 0.8 * _class_means(split.a, split.y) + 0.2 * old[0], atol=1e-6)
    assert torch.allclose(m.prototypes[1], 0.8 * _class_means(split.b, split.y) + 0.2 * old[1], atol=1e-6)
    # the subset: a fixed share, drawn from (seed, epoch): same epoch same prototypes, another epoch others
    a, b, c = (create_method("pmr", proto_fraction=0.5) for _ in range(3))
    a.update_prototypes(EpochInfo(3, model, split, seed=1))
    b.update_prototypes(EpochInfo(3, model, split, seed=1))
    c.update_prototypes(EpochInfo(4, model, split, seed=1))
    assert torch.equal(a.prototypes[0], b.prototypes[0]) and not torch.equal(a.prototypes[0], c.prototypes[0])
    assert not torch.allclose(a.prototypes[0], _class_means(split.a, split.y))


def test_no_momentum_on_the_prototypes_after_the_first_epoch():
    # the official code computes prototypes before epoch 0 and after it with epoch = 0, and skips the momentum
    # then: the prototypes of epoch 1 (ours: computed at its start) are the fresh class means whatever mu is
    split, model = _split(), _Features()
    m = create_method("pmr", proto_fraction=1.0, mu=0.5)
    old = [torch.ones(3, 4), torch.full((3, 2), -1.0)]
    m.prototypes = [p.clone() for p in old]
    m.update_prototypes(EpochInfo(1, model, split, batch_size=7))
    assert torch.allclose(m.prototypes[0], _class_means(split.a, split.y), atol=1e-6)
    assert torch.allclose(m.prototypes[1], _class_means(split.b, split.y), atol=1e-6)
    # epoch 2: half the fresh means, half epoch 1's
    fresh_b = _class_means(split.b, split.y)
    m.prototypes = [m.prototypes[0], torch.zeros(3, 2)]
    m.update_prototypes(EpochInfo(2, model, split, batch_size=7))
    assert torch.allclose(m.prototypes[0], _class_means(split.a, split.y), atol=1e-6)  # 0.5 x + 0.5 x
    assert torch.allclose(m.prototypes[1], 0.5 * fresh_b, atol=1e-6)


def test_absent_class_gives_no_nan():
    # class 2 appears once in 30 items: a 1-item subset misses it (or the other classes)
    labels = torch.tensor([2] + [0, 1] * 14 + [0])
    split, model = _split(labels=labels), _Features()
    m = create_method("pmr", proto_fraction=0.04)  # 1 item
    m.update_prototypes(EpochInfo(0, model, split))
    # first computation: the missing classes are read from the rest of the split
    for p, feat in zip(m.prototypes, (split.a, split.b), strict=True):
        assert torch.isfinite(p).all()
        seen = [k for k in range(3) if torch.allclose(p[k], _class_means(feat, labels)[k], atol=1e-6)]
        assert len(seen) >= 2  # every class but the subset's one is its full-split mean
    # later: a class absent from the subset keeps its previous prototype
    old = [torch.full((3, 4), 7.0), torch.full((3, 2), 7.0)]
    m.prototypes = [p.clone() for p in old]
    m.update_prototypes(EpochInfo(1, model, split))
    kept = [(m.prototypes[0][k] == 7.0).all().item() for k in range(3)]
    assert sum(kept) == 2 and all(torch.isfinite(p).all() for p in m.prototypes)
    # a class with no training item at all: a zero prototype, never NaN
    m = create_method("pmr", proto_fraction=0.5)
    m.update_prototypes(EpochInfo(0, model, _split(labels=torch.arange(30) % 2)))
    assert torch.equal(m.prototypes[0][2], torch.zeros(4)) and torch.isfinite(m.prototypes[1]).all()


def test_prototype_pass_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_model("small-cnn", ("colored", "gray"), (3, 1), 4, width=0.25, fusion="mmtm")
    data = tiny_colored_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    m = create_method("pmr")
    m.on_epoch_start(EpochInfo(0, model, data.train, batch_size=16))
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no BN or gate-mean update
    assert [tuple(p.shape) for p in m.prototypes] == [(4, model.branches[0].out_features)] * 2


@pytest.mark.parametrize("fusion", ["concat", "mmtm"])
def test_adds_the_weaker_modalitys_term_only(fusion):
    torch.manual_seed(0)
    model = build_model("small-cnn", ("a", "b"), (1, 1), num_classes=4, width=0.25, fusion=fusion)
    x = {"a": torch.rand(8, 1, 12, 12), "b": torch.rand(8, 1, 12, 12)}
    y = torch.arange(8) % 4
    m = create_method("pmr", alpha=2.0)
    dims = [model.encoder(k).out_features for k in range(2)]
    m.prototypes = [torch.randn(4, d) * 0.1 for d in dims]
    params = dict(model.named_parameters())
    out = model(x)
    loss = m.loss(_ctx(model, x, y, out))
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True), strict=True))
    out2 = model(x)  # the same batch in train mode: the same outputs
    base = model.loss(out2, y)
    sims = [prototype_similarity(z, p) for z, p in zip(out2.features, m.prototypes, strict=True)]
    s = torch.stack([sim.softmax(1)[torch.arange(8), y].sum() for sim in sims])
    w = int(s.argmin())  # the weaker modality
    assert loss.item() == pytest.approx((base + 2.0 * F.cross_entropy(sims[w], y)).item(), rel=1e-6)
    base_grads = dict(zip(params, torch.autograd.grad(base, list(params.values()), allow_unused=True), strict=True))
    if fusion == "concat":
        heads = {f"head.{n}" for n, _ in model.head.named_parameters()}
    else:
        heads = {f"branches.{k}.head.{n}" for k in range(2) for n, _ in model.branches[k].head.named_parameters()}
    strong = {f"{'encoders' if fusion == 'concat' else 'branches'}.{1 - w}.{n}" for n, _ in
              model.encoder(1 - w).named_parameters()}  # fmt: skip
    weak = {f"{'encoders' if fusion == 'concat' else 'branches'}.{w}.{n}" for n, _ in
            model.encoder(w).named_parameters()}  # fmt: skip
    for name in heads:  # the heads read z_m; the prototype term does not reach them
        assert torch.allclose(grads[name], base_grads[name], atol=1e-7), name
    if fusion == "concat":  # late fusion: the stronger encoder gets the fused CE's gradient only
        for name in strong:
            assert torch.allclose(grads[name], base_grads[name], atol=1e-7), name
    changed = [n for n in weak - heads if grads[n] is not None and not torch.allclose(grads[n], base_grads[n])]
    assert changed  # the weaker encoder gets the prototype term


def test_refusals_and_hparams():
    uni = build_model("small-cnn", ("a",), (1,), 4, width=0.25)
    with pytest.raises(ValueError, match="--method vanilla"):
        create_method("pmr").check(uni)
    for fusion in ("mmtm", "concat", "sum", "film", "gated"):
        create_method("pmr").check(build_model("small-cnn", ("a", "b"), (1, 1), 4, width=0.25, fusion=fusion))
    create_method("pmr").check(build_model("small-cnn", ("a", "b", "c"), (1, 1, 1), 4, width=0.25))
    bad = [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": math.inf}, "alpha"),
        ({"modulation_starts": 5, "modulation_ends": 2}, "modulation_ends"),
        ({"modulation_ends": 1.5}, "modulation_ends"),
        ({"mu": 1.0}, "mu"),
        ({"mu": -0.1}, "mu"),
        ({"proto_fraction": 0.0}, "proto_fraction"),
        ({"proto_fraction": 1.5}, "proto_fraction"),
        ({"per_mu": 0.1}, "per_epochs"),
        ({"per_epochs": -1}, "per_epochs"),
        ({"alpha": True}, "alpha"),
    ]
    for hp, match in bad:
        with pytest.raises(ValueError, match=match):
            create_method("pmr", **hp)
    m = create_method("pmr")
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        m.loss(_ctx(uni, {}, torch.tensor([0]), Output(torch.zeros(1, 2), (), (torch.zeros(1, 2),) * 2)))


def test_entropy_regulariser_on_the_dominant_modality():
    za, zv, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    pa, pv = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    model = build_model("small-cnn", ("a", "v"), (1, 1), 2, width=0.25, fusion="concat")
    m = create_method("pmr", alpha=0.0, per_mu=0.5, per_epochs=2)
    m.prototypes = [pa, pv]
    out = Output(torch.zeros(1, 2), (), (za, zv))
    p = torch.tensor([1 / (1 + math.exp(-5)), math.exp(-5) / (1 + math.exp(-5))])
    neg_entropy = float((p * p.log()).sum())  # audio dominates
    assert m.loss(_ctx(model, {}, y, out, epoch=1)).item() == pytest.approx(math.log(2) + 0.5 * neg_entropy, abs=1e-6)
    assert m.loss(_ctx(model, {}, y, out, epoch=2)).item() == pytest.approx(math.log(2), abs=1e-6)


def test_state_dict_round_trip():
    m = create_method("pmr")
    m.update_prototypes(EpochInfo(0, _Features(), _split()))
    late = build_model("small-cnn", ("a", "b"), (1, 1), 3, width=0.25, fusion="concat")
    m.loss(_ctx(late, {}, torch.tensor([0, 1]), Output(torch.zeros(2, 3), (), (torch.rand(2, 4), torch.rand(2, 2)))))
    state = m.state_dict()
    n = create_method("pmr")
    n.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(m.prototypes, n.prototypes, strict=True))
    assert m.epoch_log() == n.epoch_log() and n.state_dict().keys() == state.keys()
    empty = create_method("pmr")
    empty.load_state_dict(create_method("pmr").state_dict())
    assert empty.prototypes is None and empty.epoch_log() == {}


def _cfg(**kw):
    base = dict(dataset="tiny", method="pmr", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25,
                warmup_epochs=0.5, hparams={"alpha": 2.0, "mu": 0.2}, device="cpu", fusion="concat")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("fusion, data", [("concat", tiny_colored_data),
                                          pytest.param("mmtm", tiny_three_data, marks=pytest.mark.slow)],
                         ids=["concat", "mmtm-3"])  # fmt: skip
def test_trains_and_resume_equals_straight_run(tmp_path, monkeypatch, fusion, data):
    import json

    d = data()
    c = _cfg(fusion=fusion)
    fit(c, tmp_path / "a", progress=False, data=d)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=d)  # stopped at the epoch boundary
    fit(c, tmp_path / "b", resume=True, progress=False, data=d)
    fit_killed(monkeypatch, c, tmp_path / "c", d, steps=6)  # killed in epoch 1 (4 steps an epoch)
    fit(c, tmp_path / "c", resume=True, progress=False, data=d)
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    assert sum(r["method_log"][f"pce_share_m{k}"] for r in recs for k in range(len(d.modalities))) > 0
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    for run in ("b", "c"):
        b = load_checkpoint(tmp_path / run / "last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert same_state(a["method"], b["method"])  # prototypes and the epoch's log
        assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / run / "steps.csv").read_text()
        recs_b = [json.loads(line) for line in (tmp_path / run / "results.jsonl").read_text().splitlines()]
        assert [r["method_log"] for r in recs] == [r["method_log"] for r in recs_b]


def test_two_processes_match_one(tmp_path, ddp):
    """torchrun, 2 CPU processes (gloo), MMTM: the same prototype terms as one process (all-reduced sums)."""
    import json

    one, two = tmp_path / "one", tmp_path / "two"
    for a, b in zip(ddp.train(one, "pmr", processes=1), ddp.train(two, "pmr", processes=2), strict=True):
        assert a["method_log"]["steps"] == b["method_log"]["steps"]
        for k in range(2):
            assert a["method_log"][f"pce_share_m{k}"] == b["method_log"][f"pce_share_m{k}"]
            assert a["method_log"][f"score_m{k}"] == pytest.approx(b["method_log"][f"score_m{k}"], rel=1e-4)
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-4)
        assert a["val"]["acc"] == b["val"]["acc"]
    assert json.loads((two / "modes_rank0.json").read_text()) == json.loads((two / "modes_rank1.json").read_text())
