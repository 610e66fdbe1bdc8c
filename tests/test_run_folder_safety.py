"""Nothing in a run folder is trusted, and nothing there is lost: the lock is held before anything is touched, each
file follows one rule (docs/DESIGN.md section 8), and planted or damaged files are refused, naming the path and the
fix, without greedymm ever writing outside the folder."""

import errno
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

from conftest import tiny_colored_data
from greedymm.config import TrainConfig
from greedymm.lock import RunLock
from greedymm.logs import LogError
from greedymm.rundir import RunDir
from greedymm.train import RunError, fit


def cfg(**kw):
    base = dict(
        dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=3e-3, width=0.25,
        warmup_epochs=0.5, hparams={"alpha": 0.0, "Q": 2}, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run trained for 2 epochs (done), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    fit(cfg(), out, progress=False, data=tiny_colored_data())
    return out


def _copy(src: Path, dst: Path) -> RunDir:
    shutil.copytree(src, dst)
    return RunDir(dst)


def _snapshot(folder: Path) -> dict[str, object]:
    """What the folder holds: each entry's kind and bytes (links by their target); the lock file's holder line
    changes with every lock taken and is left out."""
    out: dict[str, object] = {}
    for p in sorted(folder.iterdir()):
        if p.name == ".lock" and p.is_file() and not p.is_symlink():
            continue
        if p.is_symlink():
            out[p.name] = ("link", os.readlink(p))
        elif p.is_dir():
            out[p.name] = ("dir",)
        else:
            out[p.name] = ("file", p.read_bytes())
    return out


def _refused(excinfo, *words: str) -> None:
    text = str(excinfo.value)
    for w in words:
        assert w.lower() in text.lower(), (w, text)
    assert type(excinfo.value).__name__ in ("RunError", "RunFolderError", "RunFolderBusy", "LogError"), excinfo.value


# -- 1. nothing touches a run folder before its lock is held ---------------------------------------------------
def test_a_second_sweep_leaves_a_run_in_its_first_epoch_alone(tmp_path):
    from greedymm.sweep import RESTART, Job, RecordingLauncher, run_sweep

    job = Job("cg-digits", "vanilla", 0, (), 1, tmp_path / "sweep" / "cg-digits_vanilla_s0_abcd1234")
    rd = RunDir(job.folder)
    job.folder.mkdir(parents=True)
    rd.config_file.write_text('{"config": {}}\n')  # the first sweep's run, still in its first epoch
    rd.steps_file.write_text("step,epoch,mode,loss,d_speed\n0,0,regular,1.2,0\n")
    assert job.state() == RESTART
    said = []
    with RunLock(job.folder):  # held by the first sweep's trainer
        before = _snapshot(job.folder)
        run_sweep([job], RecordingLauncher(complete=False), echo=said.append)
    assert _snapshot(job.folder) == before  # nothing deleted
    assert any("being written by another" in s for s in said), said


def test_clean_run_folder_holds_the_lock_and_refuses_what_greedymm_did_not_write(tmp_path):
    from greedymm.sweep import clean_run_folder

    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.config_file.mkdir()  # a directory where greedymm keeps a file
    (rd.config_file / "mine.txt").write_text("the user's")
    with pytest.raises(RuntimeError) as e:
        clean_run_folder(rd.path)
    _refused(e, str(rd.config_file), "is a directory")
    assert (rd.config_file / "mine.txt").read_text() == "the user's"


# -- 2. one rule per log file ------------------------------------------------------------------------------------
@pytest.mark.parametrize("log", ["steps.csv", "results.jsonl"])
def test_a_missing_log_is_refused_before_any_work(finished, tmp_path, log):
    rd = _copy(finished, tmp_path / "r")
    (rd.path / log).unlink()
    before = _snapshot(rd.path)
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.path / log), "missing", "restore")
    assert _snapshot(rd.path) == before  # nothing written: done stays, no log recreated without its header


@pytest.mark.parametrize("log", ["steps.csv", "results.jsonl"])
def test_a_line_the_checkpoint_covers_torn_or_lost_is_refused_naming_it(finished, tmp_path, log):
    """Every line before a checkpoint is on disk before the checkpoint is (fsync): a crash cannot tear it. If it
    is torn anyway (changed outside greedymm), resume cannot redo it from a later checkpoint: it refuses."""
    rd = _copy(finished, tmp_path / "r")
    text = (rd.path / log).read_text()
    last = text.rstrip("\n").rpartition("\n")[2]
    (rd.path / log).write_text(text[: len(text) - len(last) // 2 - 1])  # the last line torn in half
    before = _snapshot(rd.path)
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    what = "step 7" if log == "steps.csv" else "epoch 1"
    _refused(e, str(rd.path / log), what, "restore")
    assert _snapshot(rd.path) == before


def test_logs_reach_the_disk_before_each_checkpoint(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fit(cfg(epochs=2), tmp_path / "r", progress=False, data=tiny_colored_data(), checkpoint_every=2)
    monkeypatch.undo()
    saves = [i for i, ev in enumerate(events) if ev == ("replace", "last.pt")]
    assert len(saves) == 2 + 2  # an end of epoch each, and mid-epoch after step 2 of each 4-step epoch
    prev = 0
    for i in saves:
        synced = {name for kind, name in events[prev:i] if kind == "fsync"}
        assert "steps.csv" in synced, events[prev:i]
        prev = i
    for k in (1, 3):  # the end-of-epoch checkpoints follow the epoch's record
        assert ("fsync", "results.jsonl") in events[saves[k - 1] : saves[k]]


def test_a_record_written_twice_is_refused(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    lines = rd.results_file.read_text().splitlines(keepends=True)
    rd.results_file.write_text(lines[0] + lines[0] + lines[1])
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.results_file), "more than once")


def test_a_record_without_its_accuracies_is_refused_naming_file_line_and_key(finished, tmp_path):
    """A line of another tool (valid JSON with an epoch, no val / test numbers) used to surface as a bare
    "error: val" from the report; it is refused naming the file, the line and what it lacks."""
    from greedymm.report import run_summary

    rd = _copy(finished, tmp_path / "r")
    lines = rd.results_file.read_text().splitlines(keepends=True)
    rd.results_file.write_text('{"epoch": 0, "note": "written by hand"}\n' + "".join(lines[1:]))
    with pytest.raises(LogError) as e:
        rd.records()
    _refused(e, str(rd.results_file), "line 1", "val accuracy")
    with pytest.raises(LogError):
        run_summary(rd.path)


def test_a_step_log_of_another_model_is_refused(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    lines = rd.steps_file.read_text().splitlines(keepends=True)
    rd.steps_file.write_text("step,epoch,mode,loss,mu_m0,mu_m1,d_speed\n" + "".join(lines[1:]))
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.steps_file), "columns")


# -- 11. a crash before the first checkpoint: --resume starts it again (no loop between two refusals) ------------
def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_resume(finished, tmp_path):
    data = tiny_colored_data()
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    shutil.copy(finished / "config.json", rd.config_file)
    rd.steps_file.write_text("".join(RunDir(finished).steps_file.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(RunError) as e:
        fit(cfg(), rd.path, progress=False, data=data)
    _refused(e, "stopped before its first checkpoint", f"--resume {rd.path}")
    fit(cfg(), rd.path, resume=True, progress=False, data=data)
    assert rd.steps_file.read_text() == RunDir(finished).steps_file.read_text()
    strip = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rd.records()]
    assert strip == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in RunDir(finished).records()]


def test_resume_never_starts_again_over_finished_epochs(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    for name in ("last.pt", "done"):
        (rd.path / name).unlink()  # the records stay: their checkpoint is gone
    before = _snapshot(rd.path)
    with pytest.raises(RunError) as e:
        fit(cfg(), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, "nothing to resume", "last.pt", "results.jsonl")
    assert _snapshot(rd.path) == before


def test_a_checkpoint_without_its_config_is_never_advised_away(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    rd.config_file.unlink()
    rd.done_file.unlink()
    before = _snapshot(rd.path)
    for resume in (True, False):
        with pytest.raises(RunError) as e:
            fit(cfg(epochs=3), rd.path, resume=resume, progress=False, data=tiny_colored_data())
        _refused(e, "holds last.pt but no config.json", "restore config.json")
        assert "remove" not in str(e.value)
    assert _snapshot(rd.path) == before


@pytest.mark.parametrize("lost", ["last.pt", "config.json"])
def test_a_sweep_leaves_finished_epochs_or_a_lone_checkpoint_alone(finished, tmp_path, lost):
    """A broken folder holding work (epoch records and best.pt without last.pt; last.pt without its config) is
    not cleaned and started again by a sweep, as `train` refuses it: it is named, and the sweep does not end ok."""
    from greedymm.slurm import FAILED, TrainInJob, run_status
    from greedymm.sweep import BLOCKED, Job, RecordingLauncher, run_sweep

    rd = _copy(finished, tmp_path / "sweep" / "run")
    for name in (lost, "done"):
        (rd.path / name).unlink()
    assert len(rd.records()) == 2 and not rd.disposable()
    job = Job("cg-digits", "vanilla", 0, (), 2, rd.path)
    assert job.state() == BLOCKED
    before = _snapshot(rd.path)
    lines: list[str] = []
    launcher = RecordingLauncher(complete=False)
    result = run_sweep([job], launcher, echo=lines.append)
    assert _snapshot(rd.path) == before and launcher.commands == []
    assert lines[0].startswith("run: left alone: ") and lines[1].endswith("0 to start, 1 left alone (above)")
    fix = "restore config.json" if lost == "config.json" else "restore last.pt, or move those files out"
    assert fix in lines[0] and not result.ok and result.blocked == (job,) and fix in result.failure_text()
    status = run_status(rd.path, {})
    assert status.status == FAILED and "left alone by the sweep" in status.detail and fix in status.detail
    assert TrainInJob(job)() == 2 and fix in job.log.read_text()  # a Slurm job meeting the folder: no training
    with pytest.raises(RuntimeError, match="it is left as it is"):
        rd.clean()  # the one cleaning path every caller goes through
    assert _snapshot(rd.path) == before


def test_a_sweep_leaves_a_broken_folder_with_a_damaged_log_alone(tmp_path):
    """A results.jsonl damaged before its last line cannot say whether it holds finished epochs: the sweep neither
    stops on it nor deletes it."""
    from greedymm.sweep import BLOCKED, Job, RecordingLauncher, run_sweep

    rd = RunDir(tmp_path / "sweep" / "run")
    rd.path.mkdir(parents=True)
    rd.config_file.write_text("{}")
    rd.results_file.write_text('garbage\n{"epoch": 0}\n')
    job = Job("cg-digits", "vanilla", 0, (), 2, rd.path)
    assert job.state() == BLOCKED
    before = _snapshot(rd.path)
    launcher = RecordingLauncher(complete=False)
    result = run_sweep([job], launcher, echo=lambda _: None)
    assert launcher.commands == [] and result.blocked == (job,) and _snapshot(rd.path) == before


def test_a_folder_with_nothing_to_lose_is_disposable_and_cleaned(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.config_file.write_text("{}")
    (rd.path / "steps.csv").write_text("step,loss\n0,1.0\n")  # rows of an unfinished first epoch
    rd.results_file.write_text("")
    assert rd.disposable() and rd.restartable()
    rd.config_file.unlink()
    assert rd.disposable() and not rd.restartable()  # nothing to restart from, nothing to lose either
    rd.clean()
    assert sorted(p.name for p in rd.path.iterdir()) == [".lock"]


# -- 11. eval on a folder it cannot write ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["full", "read-only"])
def test_eval_on_a_full_or_read_only_folder_keeps_its_numbers(finished, tmp_path, monkeypatch, how):
    import tempfile

    from greedymm.run import evaluate_checkpoint

    rd = _copy(finished, tmp_path / "r")
    before = _snapshot(rd.path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def read_only(*args, **kwargs):  # what a read-only folder answers (root may write anyway, so it is simulated)
        raise OSError(errno.EROFS, "Read-only file system", str(rd.path))

    if how == "full":
        monkeypatch.setattr(os, "fsync", no_space)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    reason = "No space left" if how == "full" else "Read-only file system"
    with pytest.warns(UserWarning, match=re.escape(str(rd.eval_file("best"))) + f".*{reason}"):
        result = evaluate_checkpoint(rd.path, "best", data=tiny_colored_data())
    monkeypatch.undo()
    best = max(rd.records(), key=lambda r: (r["val"]["acc"], -r["epoch"]))
    assert result["val"] == best["val"] and result["test"] == best["test"]  # the numbers survive
    assert result["saved_to"] is None
    assert _snapshot(rd.path) == before  # no half file, no temp file


# -- 3. planted or damaged files ---------------------------------------------------------------------------------
def test_a_planted_lock_file_is_refused_and_nothing_outside_is_written(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    for i, plant in enumerate(("dir", "symlink", "hardlink")):
        rd = RunDir(tmp_path / f"r{i}")
        rd.path.mkdir()
        if plant == "dir":
            rd.lock_file.mkdir()
        elif plant == "symlink":
            rd.lock_file.symlink_to(outside)
        else:
            os.link(outside, rd.lock_file)
        with pytest.raises(RuntimeError) as e:
            RunLock(rd.path).acquire()
        _refused(e, str(rd.lock_file), {"dir": "directory", "symlink": "link", "hardlink": "link"}[plant])
        assert outside.read_text() == "keep me\n"


def test_a_log_linked_out_of_the_folder_is_never_written(tmp_path):
    outside = tmp_path / "elsewhere" / "results.jsonl"
    outside.parent.mkdir()
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.results_file.symlink_to(outside)  # dangling: the folder looks new
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=1), rd.path, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.results_file), "link")
    assert not outside.exists() and rd.results_file.is_symlink()


def test_a_linked_log_in_a_resumable_run_is_refused(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    outside = tmp_path / "steps-copy.csv"
    rd.steps_file.rename(outside)
    rd.steps_file.symlink_to(outside)
    kept = outside.read_bytes()
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.steps_file), "link")
    assert outside.read_bytes() == kept and rd.steps_file.is_symlink()


@pytest.mark.parametrize("name", ["steps.csv", "last.pt", ".lock"])
def test_a_read_only_run_file_is_refused_before_it_is_changed(finished, tmp_path, name):
    rd = _copy(finished, tmp_path / "r")
    path = rd.path / name
    before = path.read_bytes()
    path.chmod(0o444)  # kept as it is on purpose (root could still write it: the mode says what is meant)
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(path), "read-only", "chmod u+w")
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.mark.parametrize("name", ["config.json", "last.pt", "done"])
def test_a_directory_where_a_run_file_belongs_is_refused(finished, tmp_path, name):
    rd = _copy(finished, tmp_path / "r")
    (rd.path / name).unlink()
    (rd.path / name).mkdir()
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.path / name), "directory")


def test_an_incomplete_checkpoint_is_refused_naming_the_file(finished, tmp_path):
    from greedymm.run import evaluate_checkpoint

    rd = _copy(finished, tmp_path / "r")
    torch.save({"model": {}, "config": {}}, rd.checkpoint("last"))  # a pickle greedymm can load, but not a run's
    before = _snapshot(rd.path)
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.checkpoint("last")), "optimizer")
    assert _snapshot(rd.path) == before
    torch.save({"model": {}, "config": {}, "epoch": "2"}, rd.checkpoint("best"))
    with pytest.raises(RuntimeError) as e:
        evaluate_checkpoint(rd.path, "best", data=tiny_colored_data())
    _refused(e, str(rd.checkpoint("best")), "not a complete greedymm checkpoint", "'epoch' of the wrong type")


def test_json_errors_name_the_file(finished, tmp_path):
    rd = _copy(finished, tmp_path / "r")
    rd.done_file.write_text("{not json")
    with pytest.raises(RuntimeError) as e:
        rd.done_info()
    _refused(e, str(rd.done_file), "line 1")
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.done_file))
    rd.done_file.write_text('{"epochs": "3"}')
    with pytest.raises(RuntimeError) as e:
        fit(cfg(epochs=3), rd.path, resume=True, progress=False, data=tiny_colored_data())
    _refused(e, str(rd.done_file), "epochs = '3'", "not a whole number")
    rd.config_file.write_text('{"config": [1, 2')
    with pytest.raises(RuntimeError) as e:
        rd.saved_config()
    _refused(e, str(rd.config_file), "not valid JSON")
    rd.config_file.write_text("[1, 2]\n")
    with pytest.raises(RuntimeError) as e:
        rd.saved_config()
    _refused(e, str(rd.config_file), '"config"')
    lines = rd.results_file.read_text().splitlines(keepends=True)
    rd.results_file.write_text("3\n" + "".join(lines[1:]))
    with pytest.raises(LogError, match=re.escape(str(rd.results_file)) + " line 1"):
        rd.records()
