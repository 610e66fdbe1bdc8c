"""Every registered method on the same harness: through the CLI on cg-digits and synthetic (2 and 3 modalities
where defined), exact resume after a crash mid-epoch, and 2 processes under torchrun equal to one."""

import json

import pytest
import torch

from conftest import fit_killed, same_state, tiny_colored_data
from greedymm.checkpoint import load_checkpoint
from greedymm.cli import main
from greedymm.config import TrainConfig
from greedymm.methods import list_methods, method_class
from greedymm.train import fit

METHODS = list_methods()
SMALL = ["--width", "0.25", "--epochs", "1", "--no-progress"]
SMALL_SYNTHETIC = ["--set", "data.size=96", "--set", "data.test_size=32", "--set", "data.image_size=12"]
# settings that keep a method's epoch-level work small on tiny data (G-Blending: one epoch per estimate)
QUICK_HPARAMS = {"gblending": {"super_epoch": 1}}
# the fast tier resumes the paper's method and one late-fusion baseline; the full tier every method
FAST = ("guided", "ogm-ge")
ROWS = [pytest.param(m, marks=() if m in FAST else pytest.mark.slow) for m in METHODS]


def fusion_for(name: str) -> str:
    """The method's first fusion; late fusion (concat) for methods defined for every fusion, so both families are
    exercised across the matrix."""
    fusions = method_class(name).fusions
    return fusions[0] if fusions else "concat"


def _refusal(capsys) -> str:
    return capsys.readouterr().err


@pytest.mark.slow  # a CLI epoch on cg-digits each; tests/test_cli.py trains through the CLI in the fast tier
@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_through_the_cli(tmp_path, name, capsys):
    fusion = [
        "--fusion",
        fusion_for(name),
        *(x for k, v in QUICK_HPARAMS.get(name, {}).items() for x in ("--set", f"{k}={v}")),
    ]
    out = tmp_path / "digits"
    assert main(["train", "--dataset", "cg-digits", "--method", name, *fusion, *SMALL, "--out", str(out)]) == 0
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert rec["method"] == name and rec["train"]["loss"] == rec["train"]["loss"]  # finite, not NaN
    for n in (2, 3):
        out = tmp_path / f"synthetic{n}"
        args = ["train", "--dataset", "synthetic", "--set", f"data.modalities={n}", "--method", name, *fusion]
        code = main([*args, *SMALL, *SMALL_SYNTHETIC, "--out", str(out)])
        counts = method_class(name).modality_counts
        if counts is not None and n not in counts:  # a method not defined for n modalities must say so
            assert code == 2 and "modalit" in _refusal(capsys)
            continue
        assert code == 0, _refusal(capsys)
        rec = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
        assert len(rec["modalities"]) == n and "util_spread" in rec["test"]


def _cfg(name: str, epochs: int = 3) -> TrainConfig:
    return TrainConfig(
        dataset="tiny", method=name, fusion=fusion_for(name), epochs=epochs, batch_size=16, optimizer="adam",
        lr=3e-3, width=0.25, warmup_epochs=0.5, device="cpu", hparams=QUICK_HPARAMS.get(name, {}),
    )  # fmt: skip


@pytest.mark.parametrize("name", ROWS)
def test_every_method_resumes_exactly_after_a_crash_mid_epoch(tmp_path, name, monkeypatch):
    data = tiny_colored_data()  # 72 training items, batch 16: 4 steps an epoch
    fit(_cfg(name), tmp_path / "a", progress=False, data=data)
    fit_killed(monkeypatch, _cfg(name), tmp_path / "b", data, 6)  # in epoch 1, after its second step
    assert load_checkpoint(tmp_path / "b" / "last.pt")["batch"] == 2
    fit(_cfg(name), tmp_path / "b", resume=True, progress=False, data=data)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert same_state(a["method"], b["method"])
    assert (tmp_path / "a" / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()
    ra, rb = ((p / "results.jsonl").read_text().splitlines() for p in (tmp_path / "a", tmp_path / "b"))
    assert [json.loads(x)["test"] for x in ra] == [json.loads(x)["test"] for x in rb]


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("guided", "random")])  # those: test_distributed
def test_every_method_on_two_processes_equals_one(tmp_path, ddp, name):
    one = ddp.train(tmp_path / "one", name, processes=1, fusion=fusion_for(name))
    two = ddp.train(tmp_path / "two", name, processes=2, fusion=fusion_for(name))
    for a, b in zip(one, two, strict=True):
        for split in ("val", "test"):
            for key in (k for k in a[split] if k.startswith("acc")):
                assert a[split][key] == b[split][key], (split, key)
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-4)
    wa = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    for k in wa:
        if wa[k].is_floating_point():
            assert torch.allclose(wa[k], wb[k], rtol=1e-3, atol=1e-5), k
