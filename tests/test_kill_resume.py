"""A run killed with SIGKILL at a random step resumes to the bitwise-identical result of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import same_state
from greedymm.checkpoint import load_checkpoint

pytestmark = pytest.mark.process  # a training subprocess, killed mid-epoch

WORKER = Path(__file__).parent / "kill_worker.py"


def _start(out: Path, method: str, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), method, mode],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(p: subprocess.Popen) -> None:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]


def _rows(out: Path) -> int:
    try:
        return len((out / "steps.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def _same_state(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][pid][k]), (pid, k)
    assert torch.equal(a["speed"]["sums"], b["speed"]["sums"])
    assert same_state(a["method"], b["method"])  # the whole method state, generators included
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])


# guided and random (the paper's); ogm-ge (its noise generator) and pmr (prototypes made at epoch starts)
@pytest.mark.parametrize("method", ["guided", "random", "ogm-ge", "pmr"])
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, method):
    ref = tmp_path / "ref"
    _finish(_start(ref, method, "fresh"))
    total = _rows(ref)  # 36 steps
    rng = random.Random(1234 + len(method))
    for trial in range(2):
        out = tmp_path / f"killed{trial}"
        target = rng.randrange(3, total - 3)
        p = _start(out, method, "fresh")
        deadline = time.time() + 240
        while _rows(out) < target and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL and not (out / "done").exists()
        _finish(_start(out, method, "resume"))
        _same_state(load_checkpoint(ref / "last.pt"), load_checkpoint(out / "last.pt"))
        assert (ref / "steps.csv").read_text() == (out / "steps.csv").read_text()
        assert _records(ref) == _records(out)


def _records(out: Path) -> list[dict]:
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("elapsed_s")  # wall time is the one thing a kill may change
    return recs
