"""benchmarks/gpu_check.py keeps working without a GPU: its --cpu mode on tiny sizes, and its plan without CUDA."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    if str(SCRIPT.parent) not in sys.path:  # the script imports benchmarks/_common.py, as it does when run
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_runs_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    args = ["--cpu", "--arch", "small-cnn", "--width", "0.25", "--sizes", "16", "--batch", "4", "--steps", "1",
            "--rounds", "1", "--parity-steps", "2", "--parity-batch", "4", "--out", str(out)]  # fmt: skip
    assert _load().main(args) == 0
    report = json.loads(out.read_text())
    assert report["ok"] and report["device"] == "cpu"
    assert report["parity"]["max_loss_rel_diff"] == 0.0  # the CPU against itself: the same numbers
    assert len(report["parity"]["steps"]) == 2
    got = {(r["precision"], r["channels_last"]) for r in report["configs"]}
    assert got == {(p, cl) for p in ("fp32", "bf16", "fp16") for cl in (False, True)}
    for r in report["configs"]:
        assert r["ms_per_step"] > 0 and r["speed_update_ms"] > 0 and r["peak_mem_mib"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plan is printed only where there is no CUDA")
def test_gpu_check_without_cuda_prints_its_plan(capsys):
    assert _load().main([]) == 2
    text = capsys.readouterr().out
    assert "parity" in text and "peak memory" in text and "no CUDA device here" in text
