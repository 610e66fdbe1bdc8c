"""The command line on tiny runs."""

import json

import pytest

from greedymm.cli import main


@pytest.fixture
def tiny_registered(monkeypatch):
    """Register the tiny fixture as a data set named 'tiny' for the CLI."""
    from conftest import tiny_colored_data
    from greedymm.data import base

    monkeypatch.setitem(base._DATASETS, "tiny", (lambda **_: tiny_colored_data(), "tiny test fixture"))


def test_train_writes_results_checkpoints_and_done(tmp_path, tiny_registered, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "tiny",
        "--method",
        "guided",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--width",
        "0.25",
        "--set",
        "Q=3",
        "--set",
        "warmup_epochs=0.5",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (out / "done").exists() and (out / "best.pt").exists() and (out / "last.pt").exists()
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["hparams"]["Q"] == 3 and recs[0]["config"]["warmup_epochs"] == 0.5
    printed = capsys.readouterr().out
    assert "d_util, val" in printed and "STAND-IN" in printed  # the fixture says it is not real data
    # one line per epoch, counted from 1, with the numbers of that epoch's record (a sweep's run log shows them)
    lines = [ln for ln in printed.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    for ln, r in zip(lines, recs, strict=True):
        assert f"val acc {r['val']['acc']:.4f}" in ln and f"test acc {r['test']['acc']:.4f}" in ln
        assert f"d_util val {r['val']['d_util']:+.3f}" in ln
    # resume with more epochs: only --epochs may change
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert main(["train", "--resume", str(out), "--epochs", "4", "--lr", "0.5", "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err
    # eval recomputes the metrics of the best checkpoint
    assert main(["eval", str(out)]) == 0
    saved = json.loads((out / "eval_best.json").read_text())
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]  # all three epochs
    best = recs[json.loads((out / "done").read_text())["best_epoch"]]
    assert best["val"]["acc"] == max(r["val"]["acc"] for r in recs)  # the epoch selected on validation
    assert saved["epoch"] == best["epoch"] and set(saved["test"]) >= set(best["test"])
    for split in ("val", "test"):  # the same numbers as logged at that epoch, from the checkpoint alone
        assert saved[split]["acc"] == pytest.approx(best[split]["acc"]) and saved[split]["loss"] == pytest.approx(
            best[split]["loss"]
        )


def test_clear_errors(tmp_path, capsys):
    assert main(["train", "--dataset", "cg-mnst", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "Did you mean 'cg-mnist'" in capsys.readouterr().err
    assert main(["train", "--method", "guided", "--set", "alpah=0.1", "--out", str(tmp_path / "x")]) == 2
    assert "Did you mean 'alpha'" in capsys.readouterr().err
    assert main(["train", "--set", "Q=0.5", "--out", str(tmp_path / "x")]) == 2
    assert "Q" in capsys.readouterr().err
    empty = tmp_path / "nodata"
    assert main(["train", "--dataset", "cg-fashion", "--data-dir", str(empty), "--out", str(tmp_path / "y")]) == 2
    assert "greedymm data fetch cg-fashion" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cg-mnist" in out and "guided" in out and "alpha" in out
    # the cg-mnist defaults are the converged schedule, and the listing says how they were chosen
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["cg-mnist"])
    assert "'epochs': 20" in lines[at + 1] and "'schedule': 'cosine'" in lines[at + 1]
    assert "converged schedule: chosen on validation only" in lines[at + 2]
    # the methods that scale gradients name the optimizer their official code uses; no other method does
    advised = {lines[i - 1].split()[0] for i, line in enumerate(lines) if "optimizer: sgd as its official" in line}
    assert advised == {"agm", "mslr", "ogm-ge"}


def test_data_make_modelnet_standin_then_train(tmp_path, capsys):
    args = ["data", "make", "modelnet-standin", "--classes", "2", "--per-class", "4", "--size", "32"]
    assert main([*args, "--data-dir", str(tmp_path), "--no-progress"]) == 0
    root = tmp_path / "modelnet40-standin"
    assert (root / "STANDIN.json").exists() and "STAND-IN" in capsys.readouterr().out
    out = tmp_path / "run"
    train = ["train", "--dataset", "modelnet40-standin", "--data-dir", str(tmp_path), "--method", "guided"]
    train += ["--epochs", "1", "--batch-size", "2", "--width", "0.125", "--out", str(out), "--no-progress"]
    assert main([*train, "--set", "data.arch=resnet18-small"]) == 0
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert rec["modalities"] == ["view0", "view6"] and rec["source"]["real_data"] is False
    assert rec["config"]["data_options"] == {"arch": "resnet18-small"}


def test_unknown_data_option_is_refused(tmp_path, capsys):
    assert main(["train", "--dataset", "cg-digits", "--set", "data.colour=1", "--out", str(tmp_path / "x")]) == 2
    assert "colour" in capsys.readouterr().err


def test_report_with_claims_on_checked_in_records(tmp_path, capsys):
    from pathlib import Path

    sweep = Path(__file__).parent / "data" / "report" / "sweep"
    assert main(["report", str(sweep), "--out", str(tmp_path / "report.md"), "--claims"]) == 0
    out = capsys.readouterr().out
    assert "claim 1:" in out and "claim 3b:" in out and (tmp_path / "report.md").exists()


SMALL_SYNTHETIC = ["--set", "data.size=96", "--set", "data.test_size=32", "--set", "data.image_size=12"]


def test_train_synthetic_three_modalities_reports_each(tmp_path, capsys):
    out = tmp_path / "three"
    args = ["train", "--dataset", "synthetic", "--set", "data.modalities=3", "--method", "guided", "--epochs", "1"]
    assert main([*args, *SMALL_SYNTHETIC, "--width", "0.25", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "m0 = m0, m1 = m1, m2 = m2" in text and "STAND-IN" in text
    for k in range(3):
        assert f"u(others|m{k}), val" in text and f"test accuracy, head {k} (m{k})" in text
    assert "utilization spread (max - min), test" in text and "least-used modality" in text


def test_uni_modal_and_late_fusion_from_the_command_line(tmp_path, capsys):
    base = ["train", "--dataset", "synthetic", "--method", "vanilla", "--epochs", "1", "--width", "0.25"]
    uni = tmp_path / "uni"
    assert main([*base, *SMALL_SYNTHETIC, "--modalities", "m1", "--out", str(uni), "--no-progress"]) == 0
    rec = json.loads((uni / "results.jsonl").read_text().splitlines()[-1])
    assert rec["modalities"] == ["m1"] and rec["fusion"] == "none" and rec["family"] == "late"
    assert not any(k.startswith("u_") or k == "d_util" for k in rec["val"])  # utilization needs two modalities
    assert "uni-modal" in capsys.readouterr().out
    film = tmp_path / "film"
    args = [*base, *SMALL_SYNTHETIC, "--fusion", "film", "--modalities", "m1,m0", "--out", str(film), "--no-progress"]
    assert main(args) == 0
    rec = json.loads((film / "results.jsonl").read_text().splitlines()[-1])
    assert rec["modalities"] == ["m1", "m0"] and rec["fusion"] == "film" and "d_util" in rec["val"]
    assert "film fusion; m0 = m1, m1 = m0" in capsys.readouterr().out


def test_guided_with_late_fusion_is_refused_with_the_fix(tmp_path, capsys):
    args = ["train", "--dataset", "synthetic", "--method", "guided", "--fusion", "concat", "--epochs", "1"]
    assert main([*args, *SMALL_SYNTHETIC, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "--fusion mmtm" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--modalities", "m7", "--out", str(tmp_path / "s")]) == 2
    assert "has modalities m0,m1" in capsys.readouterr().err


def test_version_names_greedymm_and_what_it_runs_on(capsys):
    import platform

    import torch

    import greedymm

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"greedymm {greedymm.__version__} (torch {torch.__version__}, numpy ")
    assert printed.endswith(f"python {platform.python_version()})")
