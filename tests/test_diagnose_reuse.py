"""`diagnose --reuse`: finished runs of an earlier sweep with exactly the settings the protocol needs are copied in,
not trained again; runs with other settings, unfinished runs and a user's own arrays are never taken."""

from __future__ import annotations

import json

import pytest
import torch

import greedymm
from greedymm.sweep import job_config, plan_sweep

SETS = (
    "width=1.0", "batch_size=32", "lr=0.003", "val_fraction=0.25", "data.size=400", "data.test_size=100",
    "data.image_size=8", "data.classes=4", "data.signal=[0.3,0.3]", "fusion=concat",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sweep_in_process(out, sets, methods=("vanilla",)):
    """What `greedymm sweep --datasets synthetic --epochs 2 --seeds 0 --set ...` trains, without subprocesses."""
    jobs = plan_sweep(["synthetic"], list(methods), [0], out, sets=sets, epochs=2)
    for job in jobs:
        cfg = job_config(job.dataset, job.method, job.seed, job.sets, job.epochs)
        greedymm.fit(cfg, job.folder, progress=False)
    return jobs


def test_finished_sweep_runs_with_the_same_settings_are_copied_not_trained(tmp_path):
    sweep = tmp_path / "sweep"
    (joint_job,) = sweep_in_process(sweep, SETS)  # the joint run
    for m in ("m0", "m1"):  # each modality alone
        sweep_in_process(sweep, (*SETS, f"modalities={m}"))
    sweep_in_process(sweep, (*SETS, "lr=0.01"))  # other settings: never taken
    before = sorted((p.relative_to(sweep), p.stat().st_mtime_ns) for p in sweep.rglob("*"))
    lines: list[str] = []
    d = greedymm.diagnose(
        "synthetic", out=tmp_path / "diag", seeds=(0,), epochs=2, cures=[], echo=lines.append, reuse=[sweep],
        sets=SETS, device="cpu",
    )  # fmt: skip
    reused = [line for line in lines if "reused the finished run" in line]
    assert len(reused) == 3 and lines[len(reused)] == "diagnose: 3 runs, 3 finished earlier, 0 to train"
    assert not any("lr=0.01" in line or "[1/" in line for line in lines)  # nothing trained
    # the copies are run folders of the diagnosis; the sweep's folders are left exactly as they were
    assert all(str(tmp_path / "diag") in r["folder"] for r in d.records)
    assert sorted((p.relative_to(sweep), p.stat().st_mtime_ns) for p in sweep.rglob("*")) == before
    # the joint record holds the sweep run's numbers: its best validation accuracy over the two epochs
    epochs = [json.loads(line) for line in (joint_job.folder / "results.jsonl").read_text().splitlines()]
    joint = next(r for r in d.records if r["role"] == "joint")
    assert joint["val_acc"] == max(e["val"]["acc"] for e in epochs)
    # the times the copied runs recorded are the budget's estimate: a budget below them starts no new run
    lines = []
    greedymm.diagnose(
        "synthetic", out=tmp_path / "diag", seeds=(0, 1), epochs=2, cures=[], echo=lines.append, sets=SETS,
        device="cpu", max_minutes=1e-6,
    )  # fmt: skip
    assert not any(line.startswith("[1/") for line in lines)
    assert any(line.startswith("diagnose: the budget left out 3 runs: ") for line in lines)


def test_unfinished_or_missing_reuse_folders(tmp_path):
    sweep = tmp_path / "sweep"
    jobs = sweep_in_process(sweep, SETS)
    (jobs[0].folder / "done").unlink()  # no longer finished: a resumable run is not copied
    lines: list[str] = []
    greedymm.diagnose(
        "synthetic", out=tmp_path / "diag", seeds=(0,), epochs=2, cures=[], echo=lines.append, reuse=[sweep],
        sets=SETS, device="cpu",
    )  # fmt: skip
    assert not any("reused" in line for line in lines)
    assert lines[0] == "diagnose: 3 runs, 0 finished earlier, 3 to train"
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        greedymm.diagnose("synthetic", out=tmp_path / "d2", seeds=(0,), reuse=[tmp_path / "nope"], sets=SETS)
    with pytest.raises(ValueError, match="your model's finished runs are reused from out="):
        greedymm.diagnose("synthetic", model=lambda: torch.nn.Linear(2, 2), out=tmp_path / "d3", reuse=[sweep])
