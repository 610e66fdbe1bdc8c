"""One writer per run folder: real processes racing for a folder, stale locks of killed processes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from greedymm.lock import RunFolderBusy, RunLock

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
    first = subprocess.Popen([sys.executable, *args, "--epochs", "6", "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "steps.csv").exists() and time.time() < deadline:  # the first one is training
            time.sleep(0.1)
        for extra in (["--epochs", "6", "--out", str(out)], ["--resume", str(out)]):
            second = subprocess.run([sys.executable, *args, *extra], env=env, capture_output=True, text=True)
            assert second.returncode == 2, second.stderr
            assert f"being written by another greedymm process (pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
    lines = (out / "steps.csv").read_text().splitlines()
    assert [int(x.split(",")[0]) for x in lines[1:]] == list(range(len(lines) - 1))  # no duplicated steps
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
