"""MSLR (docs/BASELINES.md section 6): the ratio rule by hand, which gradients change, the validation split only,
refusals, state, resume, and the all-reduced accuracy under DDP."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.config import TrainConfig
from greedymm.methods import EpochInfo, StepContext, create_method
from greedymm.methods import mslr as mslr_module
from greedymm.methods.mslr import unimodal_accuracy
from greedymm.models import build_model
from greedymm.train import fit


def tiny(fusion, n=2, seed=0):
    torch.manual_seed(seed)
    return build_model("small-cnn", ("a", "b", "c")[:n], (1,) * n, num_classes=4, width=0.25, fusion=fusion)


def model_for(data, fusion):
    torch.manual_seed(0)
    return build_model("small-cnn", data.modalities, data.in_channels, 4, width=0.25, fusion=fusion)


# -- the ratio rule ----------------------------------------------------------------------------------------------
def test_ratio_rule_by_hand(monkeypatch):
    # audio 0.5 .. 0.9 then 0.35: ratio 0.35 / 0.7 = 0.5; visual 0.2 x 5 then 0.3: ratio 1.5; c0 = (0.9, 1.1)
    accs = iter([[0.5, 0.2], [0.6, 0.2], [0.7, 0.2], [0.8, 0.2], [0.9, 0.2], [0.35, 0.3], [0.6, 0.3]])
    monkeypatch.setattr(mslr_module, "unimodal_accuracy", lambda *a, **k: next(accs))
    m = create_method("mslr", c0=[0.9, 1.1])
    info = EpochInfo(0, tiny("sum"), val=[0])
    seen = []
    for _ in range(7):
        seen.append(m.coefficients(2))
        m.on_epoch_end(info)
    # the first 5 epochs fill the memory (c = c0); the 6th epoch end gives the first ratio
    assert seen[:6] == [pytest.approx([0.9, 1.1])] * 6
    assert m.coefficients(2) == pytest.approx([0.9 * 0.6 / 0.67, 1.1 * 0.3 / 0.22])  # memory rolled once more
    assert m.epoch_log() == pytest.approx(
        {"val_acc_m0": 0.6, "val_acc_m1": 0.3, "c_m0": 0.45, "c_m1": 1.65, "next_c_m0": 0.9 * 0.6 / 0.67,
         "next_c_m1": 1.1 * 0.3 / 0.22}
    )  # fmt: skip
    assert m.memory == [pytest.approx([0.7, 0.8, 0.9, 0.35, 0.6]), pytest.approx([0.2, 0.2, 0.2, 0.3, 0.3])]


def test_zero_mean_memory_keeps_ratio_one(monkeypatch):
    monkeypatch.setattr(mslr_module, "unimodal_accuracy", lambda *a, **k: [0.0, 0.5])
    m = create_method("mslr", memory=1)
    info = EpochInfo(0, tiny("sum"), val=[0])
    m.on_epoch_end(info)
    m.on_epoch_end(info)
    assert m.ratio == [1.0, 1.0]


# -- exactly which gradients change -----------------------------------------------------------------------------
def step(model, method, batch=6, seed=0, epoch=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.rand(batch, 1, 12, 12, generator=g) for m in model.modalities}
    y = torch.randint(0, 4, (batch,), generator=g)
    out = model(x)
    ctx = StepContext(x, y, out, model, model, "regular", 0, epoch)
    loss = method.loss(ctx)
    loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    method.on_after_backward(ctx)
    after = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return before, after, loss, out, y


@pytest.mark.parametrize("fusion", ["sum", "concat", "mmtm"])
def test_scales_encoder_and_head_of_each_modality(fusion):
    model = tiny(fusion)
    method = create_method("mslr", c0=[0.5, 2.0])
    method.check(model)
    before, after, loss, out, y = step(model, method)
    # the loss is the model's own (fused CE for late fusion, sum of the heads' CEs for MMTM)
    assert loss.item() == pytest.approx(model.loss(out, y).item())
    c = {0: 0.5, 1: 2.0}
    for name in before:
        parts = name.split(".")
        if parts[0] in ("encoders", "branches"):  # encoder m (MMTM: branch m with its head), every tensor
            expected = before[name] * c[int(parts[1])]
        elif fusion == "sum" and parts[:2] == ["head", "fcs"]:  # fc_m is modality m's head
            expected = before[name] * c[int(parts[2])]
        elif fusion == "concat" and name == "head.fc.weight":  # the columns that read z_m
            d = before[name].shape[1] // 2
            expected = torch.cat([before[name][:, :d] * 0.5, before[name][:, d:] * 2.0], dim=1)
        else:  # concat bias, MMTM modules
            expected = before[name]
        torch.testing.assert_close(after[name], expected, rtol=1e-6, atol=0, msg=name)
    assert any(n.startswith("fusions") for n in before) == (fusion == "mmtm")
    assert ("head.fc.bias" in before) == (fusion == "concat")


def test_stops_after_modulation_ends_as_the_official_code(monkeypatch):
    # the official window: epochs [modulation_starts, modulation_ends] counted from 1, default 0..20, i.e. our
    # epochs 0..19; epoch 20 (the code's 21st) trains with plain gradients, while the ratios keep updating
    method = create_method("mslr", c0=[0.5, 2.0])
    assert (method.h["modulation_starts"], method.h["modulation_ends"]) == (0, 20)
    before, after, *_ = step(tiny("sum"), method, epoch=19)
    assert not torch.equal(before["encoders.0.stages.0.0.weight"], after["encoders.0.stages.0.0.weight"])
    torch.testing.assert_close(after["head.fcs.1.weight"], before["head.fcs.1.weight"] * 2.0, rtol=1e-6, atol=0)
    before, after, *_ = step(tiny("sum"), method, epoch=20)
    assert all(torch.equal(before[n], after[n]) for n in before)
    # a later start: epoch 0 and 1 (the code's 1 and 2) unscaled with modulation_starts=3, epoch 2 scaled
    late = create_method("mslr", c0=[0.5, 2.0], modulation_starts=3, modulation_ends=4)
    assert [late.in_window(e) for e in range(5)] == [False, False, True, True, False]
    # the epoch log says what was used: 1.0 outside the window, the next epoch's c0 * ratio all the same
    monkeypatch.setattr(mslr_module, "unimodal_accuracy", lambda *a, **k: [0.5, 0.5])
    method.on_epoch_end(EpochInfo(20, tiny("sum"), val=[0]))
    assert method.epoch_log() == pytest.approx(
        {"val_acc_m0": 0.5, "val_acc_m1": 0.5, "c_m0": 1.0, "c_m1": 1.0, "next_c_m0": 0.5, "next_c_m1": 2.0}
    )
    with pytest.raises(ValueError, match="modulation_ends"):
        create_method("mslr", modulation_starts=5, modulation_ends=4)


def test_all_ones_leaves_gradients_alone():
    before, after, *_ = step(tiny("concat"), create_method("mslr"))
    assert all(torch.equal(before[n], after[n]) for n in before)


# -- the accuracy it measures, on the validation split only ------------------------------------------------------
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_unimodal_accuracy_by_hand(fusion):
    data = tiny_colored_data()
    model = model_for(data, fusion)
    acc = unimodal_accuracy(model, data.val, batch_size=7, device=torch.device("cpu"))
    assert model.training  # restored
    x, y = data.val.batch(torch.arange(len(data.val)))
    model.eval()
    with torch.no_grad():
        zs = model(x).features
        if fusion == "sum":
            logits = [F.linear(z, fc.weight, fc.bias) for z, fc in zip(zs, model.head.fcs, strict=True)]
        else:
            w, b, d = model.head.fc.weight, model.head.fc.bias, zs[0].shape[1]
            logits = [zs[0] @ w[:, :d].T + b / 2, zs[1] @ w[:, d:].T + b / 2]
    assert acc == pytest.approx([(o.argmax(1) == y).double().mean().item() for o in logits], abs=1e-12)


def test_reads_the_validation_split(monkeypatch):
    seen = []
    monkeypatch.setattr(mslr_module, "unimodal_accuracy", lambda model, split, *a: seen.append(split) or [0.5, 0.5])
    data = tiny_colored_data()
    m = create_method("mslr")
    m.on_epoch_end(EpochInfo(0, tiny("sum"), train=data.train, val=data.val))
    assert seen == [data.val]
    with pytest.raises(ValueError, match="validation split"):
        m.on_epoch_start(EpochInfo(0, tiny("sum"), train=data.train, val=None))


# -- refusals, hyper-parameters, state -------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_refuses_film_and_gated(fusion):
    with pytest.raises(ValueError, match="use --fusion concat, sum or mmtm"):
        create_method("mslr").check(tiny(fusion))


def test_refuses_wrong_c0_length_and_one_modality():
    with pytest.raises(ValueError, match="c0 has 2 values for 3 modalities"):
        create_method("mslr", c0=[0.9, 1.1]).check(tiny("sum", n=3))
    create_method("mslr", c0=[0.9, 1.4, 0.7]).check(tiny("sum", n=3))
    with pytest.raises(ValueError, match="two or more modalities"):
        create_method("mslr").check(tiny("concat", n=1))


@pytest.mark.parametrize(
    "hp, match",
    [
        ({"c0": 0.9}, "c0 must be a list"),
        ({"c0": [0.9, -1.0]}, "c0 must be a list"),
        ({"c0": [0.9, float("nan")]}, "c0 must be a list"),
        ({"c0": [True, 1.0]}, "c0 must be a list"),
        ({"memory": 0}, "memory must be an integer >= 1"),
        ({"memory": 2.5}, "memory must be an integer >= 1"),
    ],
)
def test_bad_hparams(hp, match):
    with pytest.raises(ValueError, match=match):
        create_method("mslr", **hp)


def test_state_dict_round_trip(monkeypatch):
    monkeypatch.setattr(mslr_module, "unimodal_accuracy", lambda *a, **k: [0.4, 0.8])
    m = create_method("mslr", memory=1, c0=[1, 2])
    info = EpochInfo(0, tiny("sum"), val=[0])
    m.on_epoch_end(info)
    m.on_epoch_end(info)
    state = m.state_dict()
    m2 = create_method("mslr", memory=1, c0=[1, 2])
    m2.load_state_dict(copy.deepcopy(state))
    assert m2.state_dict() == state and m2.coefficients(2) == m.coefficients(2) == [1.0, 2.0]
    assert m2.epoch_log() == m.epoch_log()


# -- end to end: trains, logs, resumes exactly ------------------------------------------------------------------
def test_fit_trains_and_resume_equals_straight_run(tmp_path):
    data = tiny_colored_data()
    c = TrainConfig(dataset="tiny", method="mslr", fusion="mmtm", epochs=2, batch_size=16, optimizer="adam", lr=3e-3,
                    width=0.25, hparams={"c0": [0.9, 1.1], "memory": 1}, device="cpu")  # fmt: skip
    fit(c, tmp_path / "a", progress=False, data=data)
    fit(c.replace(epochs=1), tmp_path / "b", progress=False, data=data)
    fit(c, tmp_path / "b", resume=True, progress=False, data=data)
    recs = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train"]["loss"]) for r in recs)
    for r in recs:  # MMTM: modality m's accuracy is branch head m's on the validation split
        assert [r["method_log"][f"val_acc_m{k}"] for k in (0, 1)] == [r["val"][f"acc_head{k}"] for k in (0, 1)]
    assert [recs[0]["method_log"][f"c_m{k}"] for k in (0, 1)] == [0.9, 1.1]
    assert recs[1]["method_log"]["c_m0"] == pytest.approx(recs[0]["method_log"]["next_c_m0"])
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["method"] == b["method"]
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


# -- DDP: every rank gets the accuracy of all items ---------------------------------------------------------------
def _ddp_worker(rank, world, path):
    import torch.distributed as dist

    data = tiny_colored_data()
    acc = torch.tensor(unimodal_accuracy(model_for(data, "concat"), data.val, 5, torch.device("cpu")))
    both = [torch.empty_like(acc) for _ in range(world)]
    dist.all_gather(both, acc)
    if rank == 0:
        torch.save(both, path)


def test_two_ddp_ranks_agree_with_one_process(tmp_path, ddp):
    path = tmp_path / "acc.pt"
    ddp.ranks(_ddp_worker, str(path))
    rank0, rank1 = torch.load(path)
    data = tiny_colored_data()
    one = unimodal_accuracy(model_for(data, "concat"), data.val, 5, torch.device("cpu"))
    assert rank0.tolist() == rank1.tolist() == one
