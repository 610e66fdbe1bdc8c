"""The conditional-learning-speed update per memory layout and precision, and a training step broken into phases.

On the ModelNet40 network (two ResNet-18 branches with MMTM after layer2-4, 40 classes), batch 8, random images:

  1. the speed update alone (``SpeedTracker.update`` over the model's speed groups, real gradients of one step),
     contiguous vs channels-last, fp32 vs bf16 autocast, computed two ways: ``before`` flattens each tensor in
     logical order with ``reshape(-1)`` (a copy of every channels-last weight and gradient; the code as it was,
     kept here for comparison), ``after`` reduces in memory order (``greedymm.metrics.speed.sum_sq``, no copy).
     Under autocast the parameters and gradients stay float32, so the bf16 rows time the same tensors' update
     after a bf16 step. Here every ResNet stage is channels-last (the last one stays contiguous in training,
     ``stays_contiguous``), so that every 4-D weight and gradient takes the layout that used to copy;
  2. one vanilla training step per phase: forward (with the loss), backward, speed update, method (its
     after-backward hook and ``end_step``), optimizer, for fp32 and bf16 + channels-last (and bf16 +
     channels-last with the ``before`` speed sums) at each ``--sizes`` size.

All variants run in one process; rounds interleave them so machine noise hits them alike; round 0 warms up and
medians over the other rounds are reported (part 1 also
the fastest call, the least disturbed on a busy machine, and the least CPU time of a call, all threads).

  3. with ``--ops K``, only this: the K operators taking most of a vanilla step's CPU time (``torch.profiler``),
     fp32 vs bf16 + channels-last, so the next bottleneck is visible.

    python benchmarks/bench_speed_update.py [--sizes 112 224] [--steps 2] [--rounds 3] [--reps 5] [--update-only]
                                            [--ops K] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch
from _common import NoiseViews  # benchmarks/_common.py (the scripts run from this folder)
from bench_precision import every_stage_channels_last
from torch import Tensor

import greedymm.metrics.speed as speed_mod
from greedymm.config import TrainConfig
from greedymm.data.base import MultiModalData
from greedymm.precision import autocast, inputs_channels_last
from greedymm.run import build_run

NEW_SUM_SQ = speed_mod.sum_sq


def reshape_sum_sq(tensors: Sequence[Tensor]) -> Tensor:
    """The speed sums as computed before memory-order reduction: ``reshape(-1)`` of each tensor (the logical
    order), which copies every tensor that is not contiguous (all 4-D weights and gradients in channels-last)."""
    return NEW_SUM_SQ(tensors, flatten=lambda t: t.reshape(-1))


def make_run(size: int, precision: str, channels_last: bool):
    split = NoiseViews(8, size)
    src = {"real_data": False, "source": "benchmark noise", "note": "random pixels"}
    data = MultiModalData("bench", ("view0", "view6"), (3, 3), 40, "resnet18", split, split, split, src)
    cfg = TrainConfig(dataset="bench", method="vanilla", batch_size=8, optimizer="sgd", lr=0.01, momentum=0.0,
                      warmup_epochs=0.0, precision=precision, channels_last=channels_last, device="cpu")  # fmt: skip
    run = build_run(cfg, data)
    run.epoch_stats = torch.zeros(4, dtype=torch.float64)
    return run, split.batch(torch.arange(8))


class _Phases:
    """One step of ``train_step``'s calls with a clock around each phase (vanilla: every step is regular)."""

    def __init__(self, run) -> None:
        self.run, self.t = run, {}
        bal = run.balancer
        update, hook = bal.speed.update, bal.method.on_after_backward

        def timed_update(groups):
            t = time.perf_counter()
            update(groups)
            self.t["speed update"] = time.perf_counter() - t

        def timed_hook(ctx):
            t = time.perf_counter()
            hook(ctx)
            self.t["method"] = time.perf_counter() - t

        bal.speed.update, bal.method.on_after_backward = timed_update, timed_hook

    def step(self, x, y) -> dict[str, float]:
        run, bal, opt = self.run, self.run.balancer, self.run.optimizer
        if run.cfg.channels_last:
            x = inputs_channels_last(x)
        t0 = time.perf_counter()
        with autocast(run.cfg.precision, run.device):
            out = bal.forward(x)
            loss = bal.loss(out, y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        bal.backward(loss, opt)
        t2 = time.perf_counter()
        bal.end_step(loss)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        s, m = self.t["speed update"], self.t["method"]
        return {"forward": t1 - t0, "backward": t2 - t1 - s - m, "speed update": s, "method": m + t3 - t2,
                "optimizer": t4 - t3, "step": t4 - t0}  # fmt: skip


def bench_update(rounds: int, reps: int, size: int) -> list[dict]:
    """Part 1: the speed update alone, before vs after, per layout and precision."""
    cases = {}
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            run, (x, y) = make_run(size, precision, cl)
            if cl:
                every_stage_channels_last(run.model)  # every 4-D tensor channels-last: the worst case
                x = inputs_channels_last(x)
            with autocast(precision, run.device):
                loss = run.model.loss(run.model(x), y)
            loss.backward()
            cases[(precision, cl)] = (run.model.speed_groups(), speed_mod.SpeedTracker(len(run.model.speed_groups())))
    times: dict[tuple, list[float]] = {(*k, way): [] for k in cases for way in ("before", "after")}
    cpu: dict[tuple, list[float]] = {k: [] for k in times}  # CPU seconds of this process (all its threads)
    for r in range(rounds + 1):
        for (precision, cl), (groups, tracker) in cases.items():
            for way, fn in (("before", reshape_sum_sq), ("after", NEW_SUM_SQ)):
                speed_mod.sum_sq = fn
                try:
                    for _ in range(reps):
                        t, c = time.perf_counter(), time.process_time()
                        tracker.update(groups)
                        tracker.sums.tolist()
                        if r:
                            times[(precision, cl, way)].append(time.perf_counter() - t)
                            cpu[(precision, cl, way)].append(time.process_time() - c)
                finally:
                    speed_mod.sum_sq = NEW_SUM_SQ
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    best = {k: 1000 * min(v) for k, v in times.items()}  # the least-disturbed call: robust on a busy machine
    work = {k: 1000 * min(v) for k, v in cpu.items()}  # CPU time: what the call costs, whoever else runs
    return [
        {
            "precision": p,
            "layout": "channels-last" if cl else "contiguous",
            "before_ms": round(ms[(p, cl, "before")], 1),
            "after_ms": round(ms[(p, cl, "after")], 1),
            "after_vs_contiguous_after": round(ms[(p, cl, "after")] / ms[(p, False, "after")], 3),
            "before_min_ms": round(best[(p, cl, "before")], 1),
            "after_min_ms": round(best[(p, cl, "after")], 1),
            "before_min_cpu_ms": round(work[(p, cl, "before")], 1),
            "after_min_cpu_ms": round(work[(p, cl, "after")], 1),
        }
        for (p, cl) in cases
    ]


def bench_steps(sizes: Sequence[int], steps: int, rounds: int) -> list[dict]:
    """Part 2: a vanilla step per phase, fp32 vs bf16 + channels-last (and the latter with the old speed sums)."""
    configs = [("fp32", False, "after"), ("bf16", True, "after"), ("bf16", True, "before")]
    runs = {}
    for size in sizes:
        for precision, cl, way in configs:
            run, batch = make_run(size, precision, cl)
            runs[(size, precision, cl, way)] = (_Phases(run), batch)
    times: dict[tuple, list[dict]] = {k: [] for k in runs}
    for r in range(rounds + 1):
        for key, (phases, batch) in runs.items():
            speed_mod.sum_sq = reshape_sum_sq if key[3] == "before" else NEW_SUM_SQ
            try:
                got = [phases.step(*batch) for _ in range(steps)]
            finally:
                speed_mod.sum_sq = NEW_SUM_SQ
            if r:
                times[key].extend(got)
    rows = []
    for (size, precision, cl, way), got in times.items():
        med = {name: 1000 * statistics.median(g[name] for g in got) for name in got[0]}
        fp32 = 1000 * statistics.median(g["step"] for g in times[(size, "fp32", False, "after")])
        rows.append(
            {
                "size": size,
                "config": precision + (" + channels-last" if cl else ""),
                "speed_sums": way,
                **{f"{k}_ms": round(v, 1) for k, v in med.items()},
                "speed_share": round(med["speed update"] / med["step"], 3),
                "x_fp32_step": round(fp32 / med["step"], 2),
            }
        )
    return rows


def bench_ops(sizes: Sequence[int], steps: int, top: int) -> list[dict]:
    """Part 3: where a step's time goes, per operator (``torch.profiler``: time inside each operator, not counting
    the operators it calls, over ``steps`` vanilla
    steps after two warm-up steps), fp32 vs bf16 + channels-last: the ``top`` operators and their share of the
    step. Shares are ratios inside one profile, so a busy machine distorts them less than wall times."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    for size in sizes:
        for precision, cl in (("fp32", False), ("bf16", True)):
            run, batch = make_run(size, precision, cl)
            phases = _Phases(run)
            for _ in range(2):
                phases.step(*batch)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    phases.step(*batch)
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            rows.append(
                {
                    "size": size,
                    "config": precision + (" + channels-last" if cl else ""),
                    "op_ms_per_step": round(total / 1000 / steps, 1),
                    "top": [
                        {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count // steps}
                        for e in events[:top]
                    ],
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--steps", type=int, default=2, help="steps per configuration per round (part 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--reps", type=int, default=5, help="speed updates per variant per round (part 1)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--update-only", action="store_true", help="part 1 only (the speed update alone)")
    p.add_argument(
        "--ops",
        type=int,
        default=0,
        metavar="K",
        help="part 3 only: the K operators taking most of a step's CPU time, per configuration",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    if args.ops:
        ops = bench_ops(args.sizes, args.steps, args.ops)
        print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": 8, "ops": ops,
                          "wall_s": round(time.perf_counter() - t)}, indent=2))  # fmt: skip
        return
    update = bench_update(args.rounds, args.reps, min(args.sizes))
    steps = [] if args.update_only else bench_steps(args.sizes, args.steps, args.rounds)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": 8,
                      "speed_update": update, "steps": steps, "wall_s": round(time.perf_counter() - t)},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
