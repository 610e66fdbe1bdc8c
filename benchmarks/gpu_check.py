"""A GPU check of training precision, layout and cost, in one script that fits in about 10 minutes of one GPU.

What it measures on a CUDA device (the ModelNet40 network by default: two ResNet-18 branches, MMTM, 40 classes):
  1. parity: ``--parity-steps`` vanilla fp32 steps on the CPU and on the GPU from the same weights and batches
     (TF32 off for this part); per step the loss and the conditional learning speeds must agree within float
     tolerance (``--rtol`` on the loss and the final weights, ``--atol-speed`` on s_k, which are log10 ratios);
  2. step time per precision and layout: fp32, fp32 + channels-last, bf16, bf16 + channels-last, fp16 (with its
     GradScaler), fp16 + channels-last, each at every ``--sizes`` size, rounds interleaved, median ms and the
     speed-up over fp32; every step's loss must be finite (fp16: the scaler may skip an overflowing step);
  3. the speed update alone (``SpeedTracker.update`` after a step) per configuration, in ms and as a share of
     the step;
  4. peak memory per configuration (``torch.cuda.max_memory_allocated``).
With ``--cpu`` the same code runs on the CPU (parity then compares the CPU with itself, and peak memory is not
measured), so CI can keep the script working: ``python benchmarks/gpu_check.py --cpu --arch small-cnn --width 0.25
--sizes 16 --batch 4 --steps 1 --rounds 1 --parity-steps 2``. Without ``--cpu`` and without CUDA it prints
this plan and exits with status 2.

    python benchmarks/gpu_check.py [--sizes 112 224] [--batch 32] [--steps 10] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
from _common import NoiseViews  # benchmarks/_common.py (the scripts run from this folder)

from greedymm.config import TrainConfig
from greedymm.data.base import MultiModalData
from greedymm.metrics.speed import SpeedTracker
from greedymm.run import build_run
from greedymm.train import train_step

CONFIGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True), ("fp16", False), ("fp16", True)]


def _run(
    arch: str,
    size: int,
    batch: int,
    device: str,
    precision: str = "fp32",
    channels_last: bool = False,
    width: float = 1.0,
):
    split = NoiseViews(batch, size)
    src = {"real_data": False, "source": "gpu check noise", "note": "random pixels"}
    data = MultiModalData("check", ("view0", "view6"), (3, 3), 40, arch, split, split, split, src)
    cfg = TrainConfig(dataset="check", method="vanilla", batch_size=batch, optimizer="sgd", lr=0.01, momentum=0.0,
                      warmup_epochs=0.0, precision=precision, channels_last=channels_last, device=device,
                      width=width)  # fmt: skip
    run = build_run(cfg, data)
    run.epoch_stats = torch.zeros(4, dtype=torch.float64, device=run.device)  # what the epoch loop sets up
    return run, split.batch(torch.arange(batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_parity(arch: str, size: int, batch: int, steps: int, device: str, rtol: float, atol_speed: float,
                 width: float = 1.0) -> dict:  # fmt: skip
    """fp32 on ``device`` against fp32 on the CPU: the same weights, batches and steps."""
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        ref, (x, y) = _run(arch, size, batch, "cpu", width=width)
        dev, _ = _run(arch, size, batch, device, width=width)
        dev.model.load_state_dict(ref.model.state_dict())
        loss_err, speed_err = 0.0, 0.0
        rows = []
        for _ in range(steps):
            a, b = train_step(ref, x, y), train_step(dev, x, y)
            loss_err = max(loss_err, abs(a.loss - b.loss) / max(abs(a.loss), 1e-12))
            s_err = max((abs(u - v) for u, v in zip(a.values()[1:], b.values()[1:], strict=True)), default=0.0)
            speed_err = max(speed_err, s_err)
            rows.append({"loss_cpu": a.loss, "loss_device": b.loss, "max_speed_diff": s_err})
        w_err = max(
            ((p.detach().cpu() - q.detach()).abs().max() / q.detach().abs().max().clamp_min(1e-12)).item()
            for p, q in zip(dev.model.parameters(), ref.model.parameters(), strict=True)
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    ok = loss_err <= rtol and speed_err <= atol_speed and w_err <= rtol
    return {"ok": ok, "max_loss_rel_diff": loss_err, "max_speed_abs_diff": speed_err, "max_weight_rel_diff": w_err,
            "rtol": rtol, "atol_speed": atol_speed, "size": size, "batch": batch, "steps": rows}  # fmt: skip


def check_speed(arch: str, sizes, batch: int, steps: int, rounds: int, device: str, width: float = 1.0) -> list[dict]:
    """Step time, speed-update time and peak memory per precision and layout, rounds interleaved."""
    dev = torch.device(device)
    runs = {(s, p, cl): _run(arch, s, batch, device, p, cl, width) for s in sizes for p, cl in CONFIGS}
    step_t: dict = {k: [] for k in runs}
    upd_t: dict = {k: [] for k in runs}
    peak: dict = {k: 0 for k in runs}
    finite: dict = {k: True for k in runs}
    skipped: dict = {k: 0 for k in runs}
    for r in range(rounds + 1):  # round 0 warms up (cuDNN autotuning, allocator)
        for key, (run, (x, y)) in runs.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            _sync(dev)
            t = time.perf_counter()
            for _ in range(steps):
                log = train_step(run, x, y)
                if not log.finite:
                    skipped[key] += 1
                    finite[key] = finite[key] and run.scaler is not None  # fp16 may skip an overflowing step
            _sync(dev)
            elapsed = (time.perf_counter() - t) / steps
            tracker = SpeedTracker(len(run.balancer.groups)).to(dev)
            t = time.perf_counter()
            tracker.update(run.balancer.groups)  # the gradients of the last step
            _sync(dev)
            upd = time.perf_counter() - t
            if dev.type == "cuda":
                peak[key] = max(peak[key], torch.cuda.max_memory_allocated(dev))
            if r:
                step_t[key].append(elapsed)
                upd_t[key].append(upd)
    rows = []
    for (size, precision, cl), times in step_t.items():
        ms = 1000 * statistics.median(times)
        upd = 1000 * statistics.median(upd_t[(size, precision, cl)])
        fp32 = 1000 * statistics.median(step_t[(size, "fp32", False)])
        rows.append(
            {
                "size": size,
                "precision": precision,
                "channels_last": cl,
                "ms_per_step": round(ms, 2),
                "x_fp32": round(fp32 / ms, 3),
                "speed_update_ms": round(upd, 3),
                "speed_share": round(upd / ms, 4),
                "peak_mem_mib": round(peak[(size, precision, cl)] / 2**20, 1) if dev.type == "cuda" else None,
                "finite": finite[(size, precision, cl)],
                "skipped_steps": skipped[(size, precision, cl)],
            }
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="run on the CPU (CI): parity compares the CPU with itself")
    p.add_argument("--arch", default="resnet18", help="branch architecture (default: the ModelNet40 network's)")
    p.add_argument("--width", type=float, default=1.0, help="branch width multiplier (1.0: the full network)")
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--parity-steps", type=int, default=5)
    p.add_argument("--parity-batch", type=int, default=8)
    p.add_argument("--rtol", type=float, default=1e-3, help="loss and weight tolerance of the fp32 parity check")
    p.add_argument("--atol-speed", type=float, default=1e-3, help="s_k (log10) tolerance of the parity check")
    p.add_argument("--out", help="also write the JSON report here")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(__doc__)
        print("no CUDA device here: nothing measured. Run on a GPU machine, or pass --cpu to exercise the script.")
        return 2
    device = "cpu" if args.cpu else "cuda"
    t0 = time.perf_counter()
    parity = check_parity(args.arch, min(args.sizes), args.parity_batch, args.parity_steps, device, args.rtol,
                          args.atol_speed, args.width)  # fmt: skip
    speed = check_speed(args.arch, args.sizes, args.batch, args.steps, args.rounds, device, args.width)
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "arch": args.arch,
        "width": args.width,
        "batch": args.batch,
        "parity": parity,
        "configs": speed,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    ok = parity["ok"] and all(r["finite"] for r in speed) and all(math.isfinite(r["ms_per_step"]) for r in speed)
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
