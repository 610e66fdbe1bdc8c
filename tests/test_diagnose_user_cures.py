"""The cures on a model greedymm did not build (greedymm.diagnose.user_cures): uniform, mmpareto and agm run on a
user's own fusion exactly as docs/BASELINES.md defines them (losses and gradients recomputed by hand here), vanilla
trains the output's heads as probes only, every other cure is refused naming what the model lacks, and diagnose on a
greedy case with a user model ranks the cures and gives a verdict."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import greedymm
from greedymm.diagnose import rules
from greedymm.diagnose.protocol import ModelEngine, ModelSettings, RunSpec
from greedymm.diagnose.user_cures import Probe, UserCure, UserNet, probe_model, refusal
from greedymm.report.evidence import CANNOT_JUDGE

MODS = ("a", "b")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OwnFusion(nn.Module):
    """A fusion greedymm does not build: z_a + z_b + z_a * z_b into one head, and a linear head per modality. With
    ``conflict`` head_a starts as the negated fused head (modality a's two losses pull its encoder apart) and head_b
    as the fused head (they agree)."""

    def __init__(self, heads: bool = True, conflict: bool = False, d_in: int = 5, d: int = 4, c: int = 3) -> None:
        super().__init__()
        self.enc_a = nn.Sequential(nn.Linear(d_in, d), nn.Tanh())
        self.enc_b = nn.Sequential(nn.Linear(d_in, d), nn.Tanh())
        self.head = nn.Linear(d, c)
        self.with_heads = heads
        if heads:
            self.head_a, self.head_b = nn.Linear(d, c), nn.Linear(d, c)
            if conflict:
                with torch.no_grad():
                    self.head_a.weight.copy_(-self.head.weight)
                    self.head_b.weight.copy_(self.head.weight)

    def forward(self, x):
        za, zb = self.enc_a(x["a"]), self.enc_b(x["b"])
        logits = self.head(za + zb + za * zb)
        if not self.with_heads:
            return logits
        return {"logits": logits, "heads": [self.head_a(za), self.head_b(zb)]}


def batch(seed=0, n=8, d_in=5, c=3):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d_in, generator=g) for m in MODS}
    return x, torch.randint(0, c, (n,), generator=g)


AT = {"a": "enc_a", "b": "enc_b"}


def user_net(model, features=None):
    x, _ = batch()
    p = probe_model(model, x)
    encoders = {"a": ["enc_a"], "b": ["enc_b"]}
    return UserNet(model, MODS, encoders=encoders, n_heads=p.n_heads, output_layer=p.output_layer, features=features)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- the adapter ---------------------------------------------------------------------------------------------------
def test_the_output_layer_heads_and_features_are_found_from_one_forward():
    x, _ = batch()
    assert probe_model(OwnFusion(), x) == Probe(2, "head", {})
    assert probe_model(OwnFusion(heads=False), x, AT) == Probe(0, "head", {"a": (4,), "b": (4,)})
    assert probe_model(OwnFusion(), x, {"a": "enc_a.0", "b": "enc_b"}).features == {"a": (4,), "b": (4,)}

    class Scaled(OwnFusion):  # the logits come from arithmetic after the layer: no output layer
        def forward(self, x):
            return super().forward(x) / 2.0

    assert probe_model(Scaled(heads=False), x) == Probe(0, None, {})
    # the view: logits, heads, and the at modules' outputs as the features; a uni-modal head from its modality
    torch.manual_seed(0)
    model = OwnFusion()
    net = user_net(model, features=AT)
    out = net(x)
    torch.testing.assert_close(out.features[0], model.enc_a(x["a"]))
    torch.testing.assert_close(out.heads[1], model.head_b(model.enc_b(x["b"])))
    torch.testing.assert_close(net.unimodal_logits(x, 0), model.head_a(model.enc_a(x["a"])))
    assert net.has_unimodal_heads and not user_net(OwnFusion(heads=False)).has_unimodal_heads
    for k, enc in enumerate((model.enc_a, model.enc_b)):  # the named modules' own parameters, no copies
        assert {id(p) for p in net.encoder(k).parameters()} == {id(p) for p in enc.parameters()}


# -- uniform -------------------------------------------------------------------------------------------------------
def test_uniform_on_a_user_model_is_the_fused_loss_plus_every_heads_loss():
    torch.manual_seed(0)
    model = OwnFusion()
    ref = copy.deepcopy(model)
    x, y = batch(1)
    cure = UserCure(user_net(model), "uniform", seed=0)
    loss = cure.step(x, y)
    out = ref(x)
    by_hand = F.cross_entropy(out["logits"], y) + F.cross_entropy(out["heads"][0], y)
    by_hand = by_hand + F.cross_entropy(out["heads"][1], y)
    assert loss == pytest.approx(by_hand.item(), rel=1e-6)
    by_hand.backward()
    got, want = grads(model), grads(ref)
    assert set(got) == set(want) == {n for n, _ in model.named_parameters()}
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-7)


# -- mmpareto ------------------------------------------------------------------------------------------------------
def _pareto_by_hand(model, x, y, gamma=1.5):
    """docs/BASELINES.md section 5 written out: per encoder, cos of g_mm and g_u, l1 (1/2 or the min-norm weight),
    h = 2 (l1 g_mm + (1 - l1) g_u), final = gamma max(|g_sum| / |h|, 1) h per tensor; the rest: the summed gradient."""
    out = model(x)
    l_mm = F.cross_entropy(out["logits"], y)
    l_u = [F.cross_entropy(h, y) for h in out["heads"]]
    params = dict(model.named_parameters())
    names = list(params)
    summed = torch.autograd.grad(l_mm + l_u[0] + l_u[1], list(params.values()), retain_graph=True)
    g_sum = dict(zip(names, summed, strict=True))
    final, cosines = dict(g_sum), []
    for k, enc in enumerate(("enc_a", "enc_b")):
        mine = [n for n in names if n.startswith(enc + ".")]
        ps = [params[n] for n in mine]
        gm = torch.autograd.grad(l_mm, ps, retain_graph=True)
        gu = torch.autograd.grad(l_u[k], ps, retain_graph=True)
        a = torch.cat([g.reshape(-1) for g in gm]).double()
        b = torch.cat([g.reshape(-1) for g in gu]).double()
        cos = float(a @ b / (a.norm() * b.norm()))
        cosines.append(cos)
        if cos > 0:
            l1 = 0.5
        elif float(a @ b) >= float(a @ a):
            l1 = 0.999
        elif float(a @ b) >= float(b @ b):
            l1 = 0.001
        else:
            l1 = float((b @ b - a @ b) / ((a - b) @ (a - b)))
        for n, x_mm, x_u in zip(mine, gm, gu, strict=True):
            h = 2 * (l1 * x_mm + (1 - l1) * x_u)
            r = float(g_sum[n].norm() / h.norm())
            final[n] = gamma * max(r, 1.0) * h
    return final, cosines


def test_mmpareto_on_a_user_model_gives_each_encoder_the_pareto_gradient():
    torch.manual_seed(3)
    model = OwnFusion(conflict=True)
    ref = copy.deepcopy(model)
    x, y = batch(2)
    want, cosines = _pareto_by_hand(ref, x, y)
    assert cosines[0] < 0 < cosines[1]  # both of the rule's cases: a conflict in encoder a, none in encoder b
    cure = UserCure(user_net(model), "mmpareto", seed=0)
    loss = cure.step(x, y)
    out = ref(x)
    summed = sum(F.cross_entropy(o, y) for o in [out["logits"], *out["heads"]])
    assert loss == pytest.approx(summed.item(), rel=1e-6)
    got = grads(model)
    for n in want:
        torch.testing.assert_close(got[n], want[n].float(), rtol=1e-5, atol=1e-7)
    # encoder b (no conflict): exactly 1.5 x the summed gradient; the heads and the fusion: the summed gradient
    ref.zero_grad()
    summed.backward()
    torch.testing.assert_close(got["enc_b.0.weight"], 1.5 * ref.enc_b[0].weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["head.weight"], ref.head.weight.grad, rtol=1e-6, atol=1e-7)
    log = cure.epoch_end(None, None, 8)
    assert log["conflict_share_m0"] == 1.0 and log["conflict_share_m1"] == 0.0


# -- agm -----------------------------------------------------------------------------------------------------------
def test_agm_on_a_user_model_scales_the_zeroed_input_responses():
    """First step: the running targets are 0, so r* = 1 and c_k = exp(alpha min(1 - r_k, 10)) with
    r_a = exp(s_b - s_a); the gradient is sum_k c_k (dm_k/dtheta)^T dL/dout, m_a = (f(a,b) - f(0,b) + f(a,0)) / 2."""
    torch.manual_seed(1)
    model = OwnFusion(heads=False)
    ref = copy.deepcopy(model)
    x, y = batch(4)
    cure = UserCure(user_net(model), "agm", seed=0)
    loss = cure.step(x, y)
    zero = {m: torch.zeros_like(v) for m, v in x.items()}
    f_ab, f_a0, f_0b = ref(x), ref({"a": x["a"], "b": zero["b"]}), ref({"a": zero["a"], "b": x["b"]})
    m = [(f_ab - f_0b + f_a0) / 2, (f_ab - f_a0 + f_0b) / 2]
    s = [-F.log_softmax(mk.detach().double(), 1).gather(1, y.view(-1, 1)).mean().item() for mk in m]
    r = [math.exp(s[1] - s[0]), math.exp(s[0] - s[1])]
    c = [math.exp(1.0 * min(1.0 - rk, 10.0)) for rk in r]
    assert loss == pytest.approx(F.cross_entropy(f_ab, y).item(), rel=1e-6)
    dl_dout = torch.autograd.grad(F.cross_entropy(f_ab, y), f_ab, retain_graph=True)[0]
    surrogate = sum(ck * (mk * dl_dout).sum() for ck, mk in zip(c, m, strict=True))
    surrogate.backward()
    want = grads(ref)
    if ref.head.weight.grad.abs().max() > 1.0:  # the code's clip (M = 2: bound 1)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        want = grads(ref)
    got = grads(model)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
    log = cure.epoch_end(None, None, 8)
    assert log["coeff_m0"] == pytest.approx(c[0]) and log["coeff_m1"] == pytest.approx(c[1])


# -- gblending and pmr (epoch work on the training split) ----------------------------------------------------------
def _data(tmp_path, n=120):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    return load_data(resolve_config(_npz(tmp_path, n=n)))


def test_gblending_on_a_user_model_blends_its_heads_with_weights_from_single_head_copies(tmp_path):
    data = _data(tmp_path)
    torch.manual_seed(0)
    model = OwnFusion()
    start = copy.deepcopy(model)
    hp = {"est_optimizer": "adam", "est_lr": 1e-2, "super_epoch": 1}
    cure = UserCure(user_net(model), "gblending", seed=0, hparams=hp)
    cure.epoch_start(data.train, data.val, 16)
    method = cure.balancer.method
    for k, v in start.state_dict().items():  # the copies trained, not the model
        torch.testing.assert_close(model.state_dict()[k], v)
    w = method.weights
    assert len(w) == 3 and sum(w) == pytest.approx(1.0) and min(w) >= 0
    # head a's copy starts from the model: L^T_N is head a's mean CE over the training part, from modality a alone
    rest, _ = method.split(len(data.train), 0)
    xs, ys = data.train.batch(rest)
    with torch.no_grad():
        by_hand = F.cross_entropy(start.head_a(start.enc_a(xs["a"])), ys).item()
    assert method.last_losses[0][0] == pytest.approx(by_hand, rel=1e-5)
    x, y = batch(6)
    loss = cure.step(x, y)
    out = start(x)
    blended = w[0] * F.cross_entropy(out["heads"][0], y) + w[1] * F.cross_entropy(out["heads"][1], y)
    blended = blended + w[2] * F.cross_entropy(out["logits"], y)
    assert loss == pytest.approx(blended.item(), rel=1e-5)
    blended.backward()
    got = grads(model)
    for n, g in grads(start).items():
        torch.testing.assert_close(got[n], g, rtol=1e-5, atol=1e-7)


def test_pmr_on_a_user_model_uses_the_named_encoder_outputs_as_its_features(tmp_path):
    data = _data(tmp_path)
    torch.manual_seed(0)
    model = OwnFusion(heads=False)
    start = copy.deepcopy(model)
    cure = UserCure(user_net(model, features=AT), "pmr", seed=0, hparams={"proto_fraction": 1.0})
    cure.epoch_start(data.train, data.val, 16)
    # the prototypes: class means of each encoder's output over the (whole) training split, in eval mode
    xs, ys = data.train.batch(torch.arange(len(data.train)))
    with torch.no_grad():
        z = [start.enc_a(xs["a"]), start.enc_b(xs["b"])]
    protos = [torch.stack([zm[ys == c].mean(0) for c in range(3)]) for zm in z]
    for got, want in zip(cure.balancer.method.prototypes, protos, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the step: CE of the prediction + alpha (1) x the prototype CE of the weaker modality (the lower summed score)
    x, y = batch(7)
    loss = cure.step(x, y)
    za, zb = start.enc_a(x["a"]), start.enc_b(x["b"])
    sims = [-torch.cdist(zm, p) for zm, p in zip((za, zb), protos, strict=True)]
    scores = [sim.softmax(1).gather(1, y.view(-1, 1)).sum().item() for sim in sims]
    weaker = 0 if scores[0] < scores[1] else 1
    by_hand = F.cross_entropy(start(x), y) + F.cross_entropy(sims[weaker], y)
    assert loss == pytest.approx(by_hand.item(), rel=1e-5)
    log = cure.epoch_end(data.train, data.val, 16)
    assert log[f"pce_share_m{weaker}"] == 1.0 and log[f"pce_share_m{1 - weaker}"] == 0.0


# -- refusals ------------------------------------------------------------------------------------------------------
def test_cures_a_user_model_cannot_run_are_refused_naming_what_it_lacks():
    def why(method, heads=2, layer="head", features=None, mods=MODS, encoders=True):
        return refusal(method, modalities=mods, probe=Probe(heads, layer, features or {}), encoders_named=encoders)

    for method in ("uniform", "mmpareto", "gblending"):
        text = why(method, heads=0)
        assert text.startswith(f"{method} trains one uni-modal head") and "has no heads" in text
        assert '"heads": [head_a(z_a), head_b(z_b)]' in text and "agm needs no heads" in text
        assert "1 heads for 2 modalities" in why(method, heads=1)
        assert why(method) is None
    assert "groups={" in why("mmpareto", encoders=False)
    assert why("uniform", encoders=False) is None and why("gblending", encoders=False) is None
    assert why("agm", heads=0) is None
    assert "not the output of one module" in why("agm", heads=0, layer=None)
    assert "2 or 3 modalities" in why("agm", heads=0, mods=("a", "b", "c", "d"))
    assert 'at={"a": "<a encoder module>"' in why("pmr", heads=0)
    assert "outputs (batch, 2, 4)" in why("pmr", heads=0, features={"a": (2, 4), "b": (4,)})
    assert why("pmr", heads=0, features={"a": (4,), "b": (4,)}) is None
    for method in ("ogm-ge", "mslr"):
        text = why(method)
        assert "another method" in text and "agm" in text and "fusion='concat'" in text
    for method in ("guided", "random"):
        assert "MMTM" in why(method) and "greedymm.late_fusion" in why(method)


def _npz(tmp_path, n=240, seed=0):
    """a: a weak class signal; b: the class written plainly (a shortcut present in every split)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 5)).astype(np.float32)
    a[np.arange(n), y] += 1.2
    b = rng.normal(scale=0.1, size=(n, 5)).astype(np.float32)
    b[np.arange(n), y] += 3.0
    path = tmp_path / "data.npz"
    np.savez(path, labels=y, a=a, b=b)
    return f"npz:{path}"


def test_the_engine_refuses_by_what_the_model_supplies_and_trains_heads_as_probes(tmp_path):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    data = load_data(resolve_config(_npz(tmp_path)))
    groups = {"a": "enc_a", "b": "enc_b", "fusion": "head"}
    plain = ModelEngine(lambda: OwnFusion(heads=False), data, tmp_path / "p", ModelSettings(groups=groups))
    assert plain.cure_fusion("concat") is None
    assert "has no heads" in plain.refuses(RunSpec("cure", "uniform", None, MODS, 0))
    assert plain.refuses(RunSpec("cure", "agm", None, MODS, 0)) is None
    assert "at={" in plain.refuses(RunSpec("cure", "pmr", None, MODS, 0))
    with_at = ModelEngine(lambda: OwnFusion(heads=False), data, tmp_path / "q", ModelSettings(groups=groups, at=AT))
    assert with_at.refuses(RunSpec("cure", "pmr", None, MODS, 0)) is None
    assert "MMTM" in plain.refuses(RunSpec("cure", "guided", None, MODS, 0))
    eng = ModelEngine(OwnFusion, data, tmp_path / "h", ModelSettings(groups=groups))
    assert eng.probe == Probe(2, "head", {})
    assert eng.refuses(RunSpec("cure", "uniform", None, MODS, 0)) is None
    assert eng.refuses(RunSpec("cure", "mmpareto", None, MODS, 0)) is None
    # vanilla: the prediction's loss on the whole model; each head's loss on its own layer only
    torch.manual_seed(0)
    model = OwnFusion()
    ref = copy.deepcopy(model)
    x, y = batch(5)
    opt = torch.optim.Adam(model.parameters())
    eng._vanilla_step(model, x, y, opt, "test")
    out = ref(x)
    F.cross_entropy(out["logits"], y).backward(retain_graph=True)
    for n, p in ref.named_parameters():
        if not n.startswith("head_"):
            torch.testing.assert_close(dict(model.named_parameters())[n].grad, p.grad)
    ref.zero_grad()
    F.cross_entropy(out["heads"][0], y).backward(retain_graph=True)
    torch.testing.assert_close(model.head_a.weight.grad, ref.head_a.weight.grad)
    ref.zero_grad()
    F.cross_entropy(out["heads"][1], y).backward()
    torch.testing.assert_close(model.head_b.bias.grad, ref.head_b.bias.grad)


# -- diagnose end to end -------------------------------------------------------------------------------------------
def test_diagnose_on_a_user_model_ranks_the_cures_and_gives_a_verdict(tmp_path):
    """b gives the class away, a carries a weaker signal: the joint model leans on b and a is under-used. The cures
    that apply (uniform, mmpareto and gblending with the heads, pmr with the encoder outputs, agm) train on the
    user's model and are ranked; guided and ogm-ge are refused with the reason."""
    lines = []
    d = greedymm.diagnose(
        _npz(tmp_path, n=300), model=OwnFusion, out=tmp_path / "diag", seeds=(0, 1), epochs=3, lr=1e-2, batch_size=16,
        groups={"a": "enc_a", "b": "enc_b", "fusion": ["head"]}, fusion_group="fusion", at=AT,
        cures=["guided", "uniform@concat", "mmpareto@concat", "uniform", "agm", "gblending", "pmr", "ogm-ge"],
        echo=lines.append,
    )  # fmt: skip
    assert d.under_used == ["a"] and d.numbers["balancing_warranted"]
    cures = d.numbers["cures"]
    # the user's fusion: no "@concat", and "uniform@concat" and "uniform" are one cure
    assert sorted(c["label"] for c in cures) == ["agm", "gblending", "mmpareto", "pmr", "uniform"]
    assert [c["rank"] for c in cures] == [1, 2, 3, 4, 5]
    vals = [c["val"]["mean"] for c in cures]
    assert vals == sorted(vals, reverse=True)
    for c in cures:
        assert c["fusion"] is None and len(c["per_seed"]) == 2 and c["vs_vanilla"]["verdict"] == CANNOT_JUDGE  # 2 seeds
    assert {r["cure"] for r in d.numbers["cures_refused"]} == {"guided", "ogm-ge"}
    assert d.verdict in rules.VERDICTS and d.verdict != rules.NOT_GREEDY
    assert not any(r["role"] == "reference" for r in d.records)  # no vanilla@concat beside the user's model
    mmp = next(r for r in d.records if r["role"] == "cure" and r["method"] == "mmpareto")
    assert mmp["settings"] == {"gamma": 1.5}
    run = json.loads((tmp_path / "diag" / "runs" / mmp["folder"].split("/")[-1] / "run.json").read_text())
    assert {"cos_m0", "conflict_share_m1", "weight_mm_m0"} <= set(run["epochs"][-1]["method_log"])
    saved = json.loads(d.json_path.read_text())
    assert saved["verdict"] == d.verdict and len(saved["cures"]) == 5
    gbl = next(r for r in d.records if r["role"] == "cure" and r["method"] == "gblending")
    assert gbl["settings"]["est_optimizer"] == "adam" and gbl["settings"]["est_lr"] == 1e-2  # the run's own
    assert any(line.startswith("diagnose: ogm-ge does not apply here: ogm-ge reads") for line in lines)
    # a cure's hyper-parameter (sets, as for greedymm's network): its own run folder, its value in the settings
    again = greedymm.diagnose(
        _npz(tmp_path, n=300), model=OwnFusion, out=tmp_path / "diag", seeds=(0,), epochs=3, lr=1e-2, batch_size=16,
        groups={"a": "enc_a", "b": "enc_b", "fusion": ["head"]}, fusion_group="fusion", at=AT, cures=["mmpareto"],
        sets=["gamma=2.0"], cure_anyway=True, echo=None,
    )  # fmt: skip
    mmp2 = next(r for r in again.records if r["role"] == "cure")
    assert mmp2["settings"] == {"gamma": 2.0} and mmp2["folder"] != mmp["folder"]
    assert next(r for r in again.records if r["role"] == "joint")["folder"] in {r["folder"] for r in d.records}


def test_settings_on_a_user_model_are_the_cures_hyper_parameters_and_bad_ones_are_refused_by_name(tmp_path):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    kw = dict(model=OwnFusion, out=tmp_path / "diag", seeds=(0,), epochs=1, echo=None)
    data = load_data(resolve_config(_npz(tmp_path)))  # your MultiModalData: every setting is a cure's
    with pytest.raises(ValueError, match="'width=0.5' is not a method's hyper-parameter"):
        greedymm.diagnose(data, sets=["width=0.5"], **kw)
    with pytest.raises(ValueError, match="gamma"):
        greedymm.diagnose(_npz(tmp_path), sets=["gamma=-1"], **kw)  # gamma must be > 0
    with pytest.raises(ValueError, match="configure greedymm's network"):
        greedymm.diagnose(data, width=0.5, **kw)
    assert not any((tmp_path / "diag").rglob("*.pt"))  # refused before any run trained


class NaNLogits(OwnFusion):
    def forward(self, x):
        out = super().forward(x)
        return {"logits": out["logits"] * float("nan"), "heads": out["heads"]}


def test_a_cure_whose_loss_is_not_finite_stops_naming_the_run(tmp_path):
    from greedymm.config import resolve_config
    from greedymm.run import load_data

    data = load_data(resolve_config(_npz(tmp_path, n=60)))
    eng = ModelEngine(NaNLogits, data, tmp_path / "d", ModelSettings(epochs=1, batch_size=16))
    with pytest.raises(FloatingPointError, match="cure uniform on all, seed 0: loss is nan at epoch 0; lower lr"):
        eng.train(RunSpec("cure", "uniform", None, MODS, 0), echo=lambda s: None)
    assert not eng.finished(RunSpec("cure", "uniform", None, MODS, 0))


def test_without_named_cures_a_user_model_gets_the_cures_that_can_run_on_it(tmp_path):
    """No `cures=`: greedymm's default list would all be refused on a model with its own fusion (guided needs
    MMTM; uniform@concat would mean another model), so a user model gets uniform, mmpareto and agm."""
    d = greedymm.diagnose(
        _npz(tmp_path, n=300), model=OwnFusion, out=tmp_path / "diag", seeds=(0, 1), epochs=3, lr=1e-2, batch_size=16,
        groups={"a": "enc_a", "b": "enc_b", "fusion": ["head"]}, fusion_group="fusion", at=AT, echo=None,
    )  # fmt: skip
    assert d.numbers["setup"]["cures"] == list(greedymm.diagnose.USER_DEFAULT_CURES) == ["uniform", "mmpareto", "agm"]
    assert d.under_used == ["a"]  # the case of the test above
    assert sorted(c["label"] for c in d.numbers["cures"]) == ["agm", "mmpareto", "uniform"]
    assert d.numbers["cures_refused"] == []
