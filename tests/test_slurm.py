"""Sweeps on Slurm (greedymm.slurm): the options, the status, and real jobs on a real cluster.

The tests marked ``process`` submit jobs to the Slurm cluster of this machine (`make slurm-up` brings up a one-node
one; `.ci/run` does it before the tests). Where Slurm or submitit is missing they skip, saying which and how to
get it. They use tiny synthetic runs (6 epochs of 540 items, 8x8 pixels) with one torch thread, on both launchers.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from greedymm.rundir import RunDir
from greedymm.slurm import (
    FAILED,
    FINISHED,
    NOT_STARTED,
    SlurmLauncher,
    SlurmOptions,
    format_status,
    job_record_file,
    parse_sbatch_args,
    parse_time,
    read_job_record,
    run_status,
    sweep_status,
)
from greedymm.sweep import LocalLauncher, plan_sweep, run_sweep

SETS = ("data.size=600", "data.test_size=100", "data.image_size=8")
EPOCHS = 6


# -- options and status, no cluster needed --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,minutes",
    [("90", 90), (5, 5), ("1:30:00", 90), ("0:00:30", 1), ("2-00:00:00", 2880), ("1-12", 2160), ("1-0:1", 1441)],
)
def test_time_limits_in_sbatch_forms_become_whole_minutes(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "0:00:00", "1:30", "-5", "1-2-3"])
def test_a_time_limit_sbatch_would_not_take_is_refused_naming_the_forms(text):
    with pytest.raises(ValueError, match="--time"):
        parse_time(text)


def test_sbatch_args_become_sbatch_options():
    assert parse_sbatch_args(["qos=high", "--account=lab", "exclusive", "mail_type=END"]) == {
        "qos": "high",
        "account": "lab",
        "exclusive": True,
        "mail-type": "END",
    }
    for bad in ["=x", "qos=", "two words"]:
        with pytest.raises(ValueError, match="--sbatch-arg"):
            parse_sbatch_args([bad])


def test_options_reach_the_sbatch_script():
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    opts = SlurmOptions(partition="gpu", time=parse_time("2:00:00"), gpus=2, cpus=8, mem="32G", max_parallel=3)
    opts = SlurmOptions(**{**opts.__dict__, "sbatch": parse_sbatch_args(["qos=high"])})
    text = _make_sbatch_string(command="x", folder="/tmp/f", map_count=5, **opts.executor_parameters())
    for line in [
        "--partition=gpu",
        "--time=120",
        "--gpus-per-node=2",
        "--cpus-per-task=8",
        "--mem=32G",
        "--array=0-4%3",
        "--qos=high",
        "--signal=USR2@120",
    ]:
        assert f"#SBATCH {line}" in text, (line, text)


@pytest.mark.parametrize(
    "kw,word",
    [({"time": 0}, "--time"), ({"cpus": 0}, "--cpus-per-run"), ({"max_parallel": 0}, "--max-parallel"),
     ({"mem": "lots"}, "--mem-per-run"), ({"checkpoint_every": -1}, "--checkpoint-every")],
)  # fmt: skip
def test_bad_slurm_options_are_refused_naming_the_option(kw, word):
    with pytest.raises(ValueError, match=word):
        SlurmOptions(**kw)


def test_slurm_options_without_the_slurm_launcher_are_refused(tmp_path, capsys):
    from greedymm.cli import main

    code = main(["sweep", "--datasets", "synthetic", "--methods", "vanilla", "--seeds", "0", "--out", str(tmp_path),
                 "--partition", "gpu", "--dry-run"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--partition" in err and "--launcher slurm" in err


def test_workers_with_the_slurm_launcher_is_refused_naming_max_parallel(tmp_path, capsys):
    from greedymm.cli import main

    code = main(["sweep", "--datasets", "synthetic", "--methods", "vanilla", "--seeds", "0", "--out", str(tmp_path),
                 "--launcher", "slurm", "--workers", "4", "--dry-run"])  # fmt: skip
    assert code == 2 and "--max-parallel" in capsys.readouterr().err


def test_without_slurm_or_submitit_the_error_says_how_to_get_them(monkeypatch):
    import sys

    from greedymm import slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="sbatch, squeue, scontrol is not on PATH.*make slurm-up"):
        slurm.require_slurm()
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    with pytest.raises(ImportError, match=r"pip install 'greedymm\[slurm\]'"):
        slurm.require_submitit()


def test_a_job_with_several_gpus_trains_under_torchrun_with_its_cores_split(tmp_path):
    from greedymm.slurm import TrainInJob

    (job,) = plan_sweep(["synthetic"], ["vanilla"], [0], tmp_path, (), 1)
    cmd = TrainInJob(job, gpus=4, cpus=16).command("new")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:8] == ["-m", "greedymm", "train"] and cmd[-3:] == ["--epochs", "1", "--no-progress"]
    assert TrainInJob(job, gpus=4, cpus=16).env()["OMP_NUM_THREADS"] == "4"
    assert TrainInJob(job, gpus=0, cpus=3).command("new")[1:4] == ["-m", "greedymm", "train"]
    assert TrainInJob(job, gpus=0, cpus=3).env()["OMP_NUM_THREADS"] == "3"
    every = TrainInJob(job, checkpoint_every=50).command("new")
    assert every[-2:] == ["--checkpoint-every", "50"] and every[:-2] == TrainInJob(job).command("new")


def test_status_tells_finished_failed_and_not_started_runs_from_their_folders(tmp_path):
    done = RunDir(tmp_path / "a_vanilla_s0_00000001")
    done.path.mkdir()
    done.done_file.write_text('{"epochs": 1}\n')
    failed = RunDir(tmp_path / "a_guided_s0_00000002")
    failed.path.mkdir()
    failed.config_file.write_text("{}\n")
    failed.steps_file.write_text("step,epoch\n")
    failed.sweep_log.write_text("# start\n" + "".join(f"line {i}\n" for i in range(10)) + "ValueError: boom\n")
    rows = sweep_status(tmp_path)
    assert [(r.name, r.status) for r in rows] == [(failed.path.name, FAILED), (done.path.name, FINISHED)]
    assert rows[0].tail == ("line 6", "line 7", "line 8", "line 9", "ValueError: boom")  # the last 5 lines
    assert "restarts" in rows[0].detail
    text = format_status(rows)
    assert "    | ValueError: boom" in text and text.endswith("1 finished, 1 failed (of 2)")
    # a submitted run whose job ended before it started the training: the wrapper's log
    ended = tmp_path / "a_random_s0_00000003"
    ended.mkdir()
    (tmp_path / "wrapper.out").write_text("Traceback\nModuleNotFoundError: No module named 'greedymm'\n")
    job_record_file(ended).write_text(json.dumps({"job_id": "7_2", "submitit_log": str(tmp_path / "wrapper.out")}))
    assert read_job_record(ended)["job_id"] == "7_2"
    row = run_status(ended, {})
    assert (row.status, row.tail[-1]) == (FAILED, "ModuleNotFoundError: No module named 'greedymm'")
    assert run_status(tmp_path / "a_never_s0_00000004", {}).status == NOT_STARTED
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        sweep_status(tmp_path / "missing")


def test_status_reads_running_and_queued_jobs_from_the_queue_by_id_and_name(tmp_path):
    from greedymm.slurm import QUEUED, RUNNING, QueueEntry

    folder = tmp_path / "a_guided_s0_00000001"
    folder.mkdir()
    job_record_file(folder).write_text(json.dumps({"job_id": "12_3", "job_name": "greedymm-s1"}))
    running = {"12_3": QueueEntry("12_3", "RUNNING", "None", "node7", "greedymm-s1")}
    assert (run_status(folder, running).status, run_status(folder, running).detail) == (RUNNING, "job 12_3 on node7")
    # once training has written its config and finished epochs, the status says how far it is
    rd = RunDir(folder)
    rd.config_file.write_text(json.dumps({"config": {"epochs": 20}}) + "\n")
    rd.results_file.write_text(
        "".join(json.dumps({"epoch": e, "val": {"acc": 0.5}, "test": {"acc": 0.5}}) + "\n" for e in range(3))
        + '{"epoch": 3'
    )  # torn
    assert run_status(folder, running).detail == "job 12_3 on node7; 3 of 20 epochs done"
    pending = {"12_3": QueueEntry("12_3", "PENDING", "Priority", "", "greedymm-s1")}
    assert (run_status(folder, pending).status, run_status(folder, pending).detail) == (
        QUEUED,
        "job 12_3, pending: Priority",
    )
    other = {"12_3": QueueEntry("12_3", "RUNNING", "None", "node7", "someone-else")}  # job ids started again
    assert run_status(folder, other).status == FAILED


def test_status_names_a_folder_it_cannot_read_and_goes_on(tmp_path, monkeypatch):
    from greedymm.rundir import RunFolderError

    for name in ("a_s0_1", "b_s0_2"):
        RunDir(tmp_path / name).path.mkdir()
        RunDir(tmp_path / name).done_file.write_text("{}\n")

    def state(self):  # noqa: ANN001
        if self.path.name == "a_s0_1":
            raise RunFolderError(f"{self.path}/done is a link; remove it")
        return "done"

    monkeypatch.setattr(RunDir, "state", state)
    rows = sweep_status(tmp_path)
    assert [(r.name, r.status) for r in rows] == [("a_s0_1", FAILED), ("b_s0_2", FINISHED)]
    assert "cannot be read" in rows[0].detail and "is a link" in rows[0].detail


# -- real jobs on a real cluster --------------------------------------------------------------------------------
def _slurm_or_skip() -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'greedymm[slurm]')")
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        pytest.skip("Slurm is not installed here; `make slurm-up` (as root, on Debian) brings up a one-node cluster")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("Slurm's controller does not answer (sinfo timed out); `make slurm-up` starts it")
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc", "completing")) for s in states):
        pytest.skip(f"Slurm has no node taking jobs ({(out.stderr or out.stdout).strip()!r}); `make slurm-up` fixes it")


def _plan(out: Path, methods=("vanilla", "guided")):
    return plan_sweep(["synthetic"], list(methods), [0], out, SETS, EPOCHS)


def _records(folder: Path) -> list[dict]:
    drop = ("elapsed_s", "versions")
    return [{k: v for k, v in r.items() if k not in drop} for r in RunDir(folder).records()]


def _wait_until_out_of_queue(launcher: SlurmLauncher, jobs, deadline_s: float) -> None:
    end = time.time() + deadline_s
    while launcher.in_flight(jobs) and time.time() < end:
        time.sleep(2)
    assert not launcher.in_flight(jobs), "the Slurm jobs did not end in time"


def _trainer_pid(rd: RunDir, deadline_s: float) -> int:
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            return int(json.loads(rd.lock_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    raise AssertionError(f"no training process took the lock of {rd} in {deadline_s} s")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The reference: the same runs through the local launcher, one torch thread each."""
    _slurm_or_skip()
    out = tmp_path_factory.mktemp("local")
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the Slurm jobs get one thread each (--cpus-per-run 1)
    try:
        result = run_sweep(_plan(out), LocalLauncher(), workers=2, echo=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    assert result.ok, result.failure_text()
    return out


@pytest.mark.process
def test_a_slurm_sweep_gives_the_local_results_and_is_submitted_once(local_sweep, tmp_path):
    out = tmp_path / "slurm"
    said = []
    launcher = SlurmLauncher(SlurmOptions(time=10), wait=False, echo=said.append)
    first = run_sweep(_plan(out), launcher, echo=said.append)
    assert len(first.launched) == 2 and len(launcher.submitted) == 2
    ids = {job.name: read_job_record(job.folder)["job_id"] for job in first.launched}  # each job id in its folder
    assert sorted(ids.values()) == sorted(launcher.submitted.values())

    again = SlurmLauncher(SlurmOptions(time=10), wait=False, echo=said.append)
    second = run_sweep(_plan(out), again, echo=said.append)  # still queued or running: left alone
    assert second.launched == () and again.submitted == {} and set(second.in_flight) == set(first.launched)
    assert sum("left alone" in s for s in said) == 2, said

    _wait_until_out_of_queue(again, first.launched, 300)
    rows = sweep_status(out)
    assert [(r.status, r.detail) for r in rows] == [(FINISHED, f"job {ids[r.name]}") for r in rows]
    for job in first.launched:
        ref = local_sweep / job.name  # the same folder name: the same config
        assert job.folder.joinpath("steps.csv").read_bytes() == ref.joinpath("steps.csv").read_bytes()
        assert _records(job.folder) == _records(ref)

    third = run_sweep(_plan(out), SlurmLauncher(SlurmOptions(time=10), echo=said.append), echo=said.append)
    assert third.launched == () and len(third.skipped) == 2


@pytest.mark.process
def test_a_run_past_its_time_limit_is_requeued_and_ends_as_an_uninterrupted_run(local_sweep, tmp_path):
    """A 2-minute limit, warned 60 s before it (Slurm warns up to 60 s early: 30-60 s after the start). The test
    suspends the training process once its first epoch is saved (it lets it run in 50 ms slices until then), so
    the run cannot finish before the warning on any machine; at the warning the job stops it and requeues itself,
    and the requeued job resumes from that epoch."""
    out = tmp_path / "requeue"
    (job,) = _plan(out, methods=("guided",))
    launcher = SlurmLauncher(SlurmOptions(time=2, signal_delay_s=60), wait=False, echo=lambda s: None)
    run_sweep([job], launcher, echo=lambda s: None)
    rd = RunDir(job.folder)
    pid = _trainer_pid(rd, deadline_s=240)  # the job's training process: its pid is in the folder's lock
    os.kill(pid, signal.SIGSTOP)
    while not rd.checkpoint("last").exists():  # let it run in 50 ms slices until its first epoch is saved
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)
    _wait_until_out_of_queue(launcher, [job], 420)

    log = job.log.read_text()
    assert "(restart 0)" in log and "(restart 1)" in log, log[-3000:]
    assert "--resume" in log.split("(restart 1)")[1].splitlines()[0]  # the requeued job resumed the run
    assert rd.state() == "done"
    ref = local_sweep / job.name
    assert rd.steps_file.read_bytes() == ref.joinpath("steps.csv").read_bytes()
    assert _records(job.folder) == _records(ref)
