"""One writer per run folder: real processes racing for a folder, stale locks of killed processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greedymm.lock import RunFolderBusy, RunLock

pytestmark = pytest.mark.process  # real processes hold and race for the locks

HOLD = (
    "import sys, time; from greedymm.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(60)"
)


def _holder(folder):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path):
    p = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunFolderBusy, match=rf"pid {p.pid} on .* since .*: .*-c"):
            RunLock(tmp_path / "run").acquire()
    finally:
        p.send_signal(signal.SIGKILL)  # no clean-up runs: the lock file stays behind, unlocked
        p.wait()
    assert (tmp_path / "run" / ".lock").exists()
    with RunLock(tmp_path / "run"):  # a stale lock never blocks
        pass


def test_two_trainers_race_for_one_folder(tmp_path):
    out = tmp_path / "race"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        "-m",
        "greedymm",
        "train",
        "--dataset",
        "cg-digits",
        "--method",
        "vanilla",
        "--width",
        "0.25",
        "--no-progress",
    ]
    # long enough to be still training while the others try, however fast the machine; stopped below
    first = subprocess.Popen([sys.executable, *args, "--epochs", "500", "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "results.jsonl").exists() and time.time() < deadline:  # the first one is training
            time.sleep(0.1)
        for extra in (["--epochs", "500", "--out", str(out)], ["--resume", str(out)]):
            second = subprocess.run([sys.executable, *args, *extra], env=env, capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert f"being written by another greedymm process (pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first trainer was never disturbed
    finally:
        first.kill()
        first.wait()
    lines = (out / "steps.csv").read_text().splitlines()
    steps = [int(x.split(",")[0]) for x in lines[1:] if x.count(",") == lines[0].count(",")]
    assert steps == list(range(len(steps)))  # one writer: no duplicated or interleaved steps
    # the killed trainer's lock is gone with it: the run resumes, here for one more epoch, and finishes
    finished = sum(line.endswith("}") for line in (out / "results.jsonl").read_text().splitlines())
    resumed = subprocess.run([sys.executable, *args, "--resume", str(out), "--epochs", str(finished + 1)], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "done").exists() and "being written by another" not in resumed.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(finished + 1))


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_sweep_stops_its_runs(tmp_path, how):
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "greedymm", "sweep", "--datasets", "cg-digits", "--methods", "vanilla", "--seeds", "0",
           "--epochs", "500", "--set", "width=0.25", "--out", str(out)]  # fmt: skip
    sweep = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("*/steps.csv")) and time.time() < deadline:
        time.sleep(0.1)
    run = next(out.glob("*/steps.csv")).parent
    with pytest.raises(RunFolderBusy):
        RunLock(run).acquire()  # the run is training
    sweep.send_signal(how)
    sweep.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:  # the run ends with its sweep, so its folder is free again
        try:
            RunLock(run).acquire().release()
            break
        except RunFolderBusy:
            time.sleep(0.2)
    else:
        pytest.fail(f"the run in {run} kept training after its sweep was stopped ({how.name})")
    assert not (run / "done").exists()
