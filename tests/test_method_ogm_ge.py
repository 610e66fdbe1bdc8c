"""OGM-GE / OGM (docs/BASELINES.md section 1): the sanity values, which gradients change, refusals, state, DDP."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import same_state, tiny_colored_data, tiny_three_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import StepContext, create_method
from greedymm.methods.ogm_ge import encoder_weights, modulate_, ogm_coefficients
from greedymm.models import LateFusionNet, build_model
from greedymm.models.branch import Branch
from greedymm.train import fit


def k_of(scores, alpha):
    return ogm_coefficients(torch.tensor(scores, dtype=torch.float64), alpha).tolist()


# -- docs/BASELINES.md sanity values ----------------------------------------------------------------------------------
def test_sanity_values():
    # s_a = 40, s_v = 20: rho_a = 2, so k_a = 1 - tanh(2 alpha), k_v = 1
    assert k_of([40.0, 20.0], 0.1) == pytest.approx([0.802625, 1.0], abs=1e-6)
    assert k_of([40.0, 20.0], 0.8) == pytest.approx([0.078331, 1.0], abs=1e-6)
    # the other way round: visual dominant, rho_v = 2
    assert k_of([20.0, 40.0], 0.1) == pytest.approx([1.0, 0.802625], abs=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.8])
def test_tie_suppresses_the_first_modality_as_the_code_does(alpha):
    assert k_of([25.0, 25.0], alpha) == pytest.approx([1 - math.tanh(alpha), 1.0], abs=1e-12)
    # the jump at rho = 1: alpha 0.1 gives 0.9003
    assert k_of([25.0, 25.0], 0.1)[0] == pytest.approx(0.900332, abs=1e-6)


def test_pairwise_average_for_three_and_reduction_to_the_paper_for_two():
    # s = (30, 20, 10): rho_0 = (1.5 + 3) / 2 = 2.25, rho_1 = (2/3 + 2) / 2 = 4/3, rho_2 = (1/3 + 1/2) / 2 = 5/12
    got = k_of([30.0, 20.0, 10.0], 0.1)
    assert got == pytest.approx([1 - math.tanh(0.225), 1 - math.tanh(0.4 / 3), 1.0], abs=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # M = 2: the pairwise average is the paper's rule (away from a tie)
        s = (torch.rand(2, generator=g, dtype=torch.float64) * 50 + 1).tolist()
        rho = [s[0] / s[1], s[1] / s[0]]
        expected = [1 - math.tanh(0.3 * r) if r > 1 else 1.0 for r in rho]
        assert k_of(s, 0.3) == pytest.approx(expected, abs=1e-12)


def test_ge_noise_statistics():
    # GE: E[g_new] = k g and std(g_new - k g) = std(g_old) (+1e-8); OGM: exactly k g
    g = torch.randn(400, 500, generator=torch.Generator().manual_seed(1)) * 0.3
    old = g.clone()
    k = torch.tensor(0.8, dtype=torch.float64)
    modulate_([g], k, ge=True, generator=torch.Generator().manual_seed(2))
    noise = g - 0.8 * old
    assert noise.mean().item() == pytest.approx(0.0, abs=3e-3)
    assert noise.std().item() == pytest.approx(old.std().item(), rel=1e-2)
    assert abs(torch.corrcoef(torch.stack([noise.flatten(), old.flatten()]))[0, 1].item()) < 0.01
    h = old.clone()
    modulate_([h], k, ge=False)
    assert torch.equal(h, old * torch.tensor(0.8))


# -- exactly which gradients change ----------------------------------------------------------------------------
def tiny(fusion, n=2, seed=0):
    torch.manual_seed(seed)
    mods = ("a", "b", "c")[:n]
    return build_model("small-cnn", mods, (1,) * n, num_classes=4, width=0.25, fusion=fusion)


def step(model, method, epoch=0, batch=6, seed=0):
    """One forward/backward with the method's hooks; returns (grads before, grads after, scores by hand)."""
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.rand(batch, 1, 12, 12, generator=g) for m in model.modalities}
    y = torch.randint(0, 4, (batch,), generator=g)
    out = model(x)
    ctx = StepContext(x, y, out, model, model, "regular", 0, epoch)
    method.loss(ctx).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    method.on_after_backward(ctx)
    after = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return before, after, hand_scores(model, out, y)


def hand_scores(model, out, y):
    """s_m from the fusion head, written out by hand for each fusion."""
    with torch.no_grad():
        zs = out.features
        if model.fusion == "mmtm":
            logits = list(out.heads)
        elif model.fusion == "sum":
            logits = [z @ fc.weight.T + fc.bias for z, fc in zip(zs, model.head.fcs, strict=True)]
        else:  # concat: W = [W_0 | W_1 | ...], each o_m gets b / M
            w, b, d = model.head.fc.weight, model.head.fc.bias, zs[0].shape[1]
            logits = [z @ w[:, i * d : (i + 1) * d].T + b / len(zs) for i, z in enumerate(zs)]
        return [F.softmax(o, 1)[torch.arange(len(y)), y].sum().item() for o in logits]


def modulated_names(model):
    ids = {id(p): k for k in range(model.n_modalities) for p in encoder_weights(model, k)}
    return {n: ids[id(p)] for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("fusion, n", [("concat", 2), ("sum", 2), ("mmtm", 2), ("concat", 3)])
def test_ogm_scales_exactly_the_encoders_conv_and_linear_weights(fusion, n):
    model = tiny(fusion, n)
    method = create_method("ogm-ge", alpha=0.5, ge=False)
    method.check(model)
    before, after, scores = step(model, method)
    k = k_of(scores, 0.5)
    assert min(k) < 1.0  # something is modulated
    mod = modulated_names(model)
    # every Conv weight of every encoder (4 per small CNN), nothing else: no BN, bias, head, MMTM, branch head
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.startswith(("encoders", "branches"))}
    assert set(mod) == {f"{c}.weight" for c in convs} and len(mod) == 4 * n
    for name in before:
        if name in mod:
            torch.testing.assert_close(after[name], before[name] * k[mod[name]], rtol=1e-6, atol=0)
        else:
            assert torch.equal(after[name], before[name]), name
    unchanged = [n for n in before if n not in mod]
    assert any(".head." in n or n.startswith("head.") for n in unchanged)
    assert any("fusions" in n for n in unchanged) == (fusion == "mmtm")


def test_linear_layers_inside_an_encoder_are_modulated():
    # an encoder ending in a Linear layer (the maintainer: FC layers inside an encoder are modulated too)
    def encoder():
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))  # (B, 6)
        return Branch([nn.Conv2d(1, 4, 3, padding=1), head], channels=[4, 6], num_classes=None)

    torch.manual_seed(0)
    model = LateFusionNet([encoder(), encoder()], ("a", "b"), num_classes=4, fusion="sum")
    method = create_method("ogm-ge", alpha=2.0, ge=False)
    before, after, scores = step(model, method)
    k = k_of(scores, 2.0)
    for m in (0, 1):
        for name in (f"encoders.{m}.stages.0.weight", f"encoders.{m}.stages.1.2.weight"):
            torch.testing.assert_close(after[name], before[name] * k[m], rtol=1e-6, atol=0)
        for name in (f"encoders.{m}.stages.0.bias", f"encoders.{m}.stages.1.2.bias", f"head.fcs.{m}.weight"):
            assert torch.equal(after[name], before[name])


def test_ge_adds_noise_to_every_encoder_and_only_there():
    model = tiny("concat")
    method = create_method("ogm-ge", alpha=0.5)
    before, after, scores = step(model, method)
    k = k_of(scores, 0.5)
    mod = modulated_names(model)
    for name in before:
        if name in mod:  # noise on both encoders, the one with k = 1 too
            assert not torch.allclose(after[name], before[name] * k[mod[name]]), name
        else:
            assert torch.equal(after[name], before[name]), name


def test_outside_the_window_nothing_changes():
    model = tiny("sum")
    method = create_method("ogm-ge", alpha=0.5, modulation_starts=1, modulation_ends=2)
    for epoch, changes in [(0, False), (1, True), (2, True), (3, False)]:
        model.zero_grad()
        before, after, _ = step(model, method, epoch=epoch)
        assert any(not torch.equal(after[n], before[n]) for n in before) == changes, epoch


def test_same_seed_same_noise_as_every_rank_needs():
    a, b = tiny("concat"), tiny("concat")
    ga = step(a, create_method("ogm-ge", seed=3))[1]
    gb = step(b, create_method("ogm-ge", seed=3))[1]
    gc = step(tiny("concat"), create_method("ogm-ge", seed=4))[1]
    assert all(torch.equal(ga[n], gb[n]) for n in ga)
    assert any(not torch.equal(ga[n], gc[n]) for n in ga)


# -- refusals, hyper-parameters, state -------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_refuses_film_and_gated(fusion):
    with pytest.raises(ValueError, match="use --fusion concat, sum or mmtm"):
        create_method("ogm-ge").check(tiny(fusion))


def test_refuses_one_modality_and_an_encoder_without_weights():
    with pytest.raises(ValueError, match="two or more modalities"):
        create_method("ogm-ge").check(tiny("concat", n=1))
    model = tiny("concat")
    model.encoders[1].stages = nn.ModuleList([nn.Identity()])
    with pytest.raises(ValueError, match="encoder 1 .* has none"):
        create_method("ogm-ge").check(model)


@pytest.mark.parametrize(
    "hp, match",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "finite"),
        ({"alpha": True}, "alpha"),
        ({"ge": "yes"}, "ge must be"),
        ({"modulation_starts": -1}, "modulation_starts"),
        ({"modulation_ends": 1.5}, "modulation_ends"),
        ({"modulation_starts": 5, "modulation_ends": 4}, "must be >= modulation_starts"),
        ({"beta": 1}, "no hyper-parameter"),
    ],
)
def test_bad_hparams(hp, match):
    with pytest.raises(ValueError, match=match):
        create_method("ogm-ge", **hp)


def test_state_dict_round_trip():
    model = tiny("concat")
    m = create_method("ogm-ge", seed=1)
    step(model, m)
    state = m.state_dict()
    assert state["steps"] == 1 and len(state["k_sum"]) == 2
    m2 = create_method("ogm-ge", seed=1)
    m2.load_state_dict(copy.deepcopy(state))
    assert same_state(m2.state_dict(), state) and m2.epoch_log() == m.epoch_log()
    # the noise continues exactly: the next step of both gives the same gradients
    a, b = tiny("concat"), tiny("concat")
    assert all(torch.equal(u, v) for u, v in zip(step(a, m)[1].values(), step(b, m2)[1].values(), strict=True))


# -- end to end: trains, logs, resumes exactly ------------------------------------------------------------------
def cfg(**kw):
    base = dict(dataset="tiny", method="ogm-ge", fusion="concat", epochs=2, batch_size=16, optimizer="adam", lr=3e-3,
                width=0.25, hparams={"alpha": 0.5}, device="cpu")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_fit_trains_and_resume_equals_straight_run(tmp_path):
    # a straight run against one stopped after epoch 0 (the noise generator is in the checkpoint) and resumed
    d = tiny_colored_data()
    c = cfg()
    fit(c, tmp_path / "a", progress=False, data=d)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=d)
    fit(c, tmp_path / "b", resume=True, progress=False, data=d)
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    log = recs[-1]["method_log"]
    assert set(log) == {"k_m0", "k_m1", "modulated_steps"} and log["modulated_steps"] == 4
    assert 0 < min(log["k_m0"], log["k_m1"]) < 1 and max(log["k_m0"], log["k_m1"]) <= 1
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert same_state(a["method"], b["method"])
    assert (tmp_path / "a" / "results.jsonl").read_text().count("k_m0") == 2
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


def test_fit_three_modalities_mmtm(tmp_path):
    fit(cfg(fusion="mmtm", epochs=1, hparams={"ge": False}), tmp_path / "r", progress=False, data=tiny_three_data())
    rec = json.loads((tmp_path / "r" / "results.jsonl").read_text())
    assert math.isfinite(rec["train"]["loss"]) and set(rec["method_log"]) == {"k_m0", "k_m1", "k_m2", "modulated_steps"}


# -- DDP: two processes keep identical weights and match one process -------------------------------------------
def _train_steps(model, net, method, x, y, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(steps):
        out = net(x)
        ctx = StepContext(x, y, out, model, net, "regular", i, 0)
        opt.zero_grad()
        method.loss(ctx).backward()
        method.on_after_backward(ctx)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _global_batch():
    g = torch.Generator().manual_seed(5)
    return {m: torch.rand(8, 1, 12, 12, generator=g) for m in ("a", "b")}, torch.randint(0, 4, (8,), generator=g)


def _ddp_worker(rank, world, path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from greedymm.distributed import sync_batchnorm

    model = sync_batchnorm(tiny("concat"), torch.device("cpu"))
    net = DistributedDataParallel(model, broadcast_buffers=False)
    x, y = _global_batch()
    half = slice(4 * rank, 4 * rank + 4)
    params = _train_steps(model, net, create_method("ogm-ge", alpha=0.5), {m: v[half] for m, v in x.items()}, y[half])
    both = [torch.empty_like(params) for _ in range(world)]
    dist.all_gather(both, params)
    if rank == 0:
        torch.save(both, path)


def test_two_ddp_ranks_stay_equal_and_match_one_process(tmp_path, ddp):
    path = tmp_path / "params.pt"
    ddp.ranks(_ddp_worker, str(path))
    rank0, rank1 = torch.load(path)
    assert torch.equal(rank0, rank1)  # the same noise on both ranks: weights stay identical
    model = tiny("concat")
    x, y = _global_batch()
    one = _train_steps(model, model, create_method("ogm-ge", alpha=0.5), x, y)
    torch.testing.assert_close(rank0, one, rtol=1e-4, atol=1e-5)
