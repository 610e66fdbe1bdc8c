"""Cost of every training method relative to joint training (vanilla) on the same model, side by side.

CG-MNIST-sized inputs (batch 64, 28x28 colored + gray, the paper-size small CNN per branch). For each fusion
(mmtm, concat) and each registered method defined for it: the time of a real ``train_step`` (forward, the
method's loss, backward and gradient changes, speeds, optimizer step), rounds interleaving the methods so machine
noise hits them alike, and the method's declared extra passes; then, once, the time of its epoch hooks
(prototypes, weight estimates, validation passes) on a 4,096-item training split, and that time as a share of
the epoch's training steps.

    python benchmarks/bench_methods.py [--steps 20] [--rounds 5] [--threads N] [--methods a b ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_speed import step_seconds, synthetic_cg  # the script next to this one

from greedymm.config import preset
from greedymm.methods import EpochInfo, list_methods, method_class
from greedymm.run import build_run

FUSIONS = ("mmtm", "concat")


def _runs(data, methods):
    runs = {}
    for fusion in FUSIONS:
        for name in methods:
            supported = method_class(name).fusions
            if supported is not None and fusion not in supported:
                continue
            cfg = preset("cg-mnist", method=name, fusion=fusion, device="cpu", warmup_epochs=0.0)
            run = build_run(cfg, data)
            run.epoch_stats = torch.zeros(4, dtype=torch.float64)
            runs[(name, fusion)] = run
    return runs


def bench_epoch_hooks(runs) -> dict[tuple[str, str], float]:
    out = {}
    for key, run in runs.items():
        info = EpochInfo(0, run.model, run.data.train, run.data.val, run.device, run.cfg.batch_size, run.cfg.seed)
        t = time.perf_counter()
        run.method.on_epoch_start(info)
        run.method.on_epoch_end(info)
        out[key] = time.perf_counter() - t
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--methods", nargs="+", default=None, help="methods to measure (default: every registered one)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods or list_methods()
    if "vanilla" not in methods:
        methods = ["vanilla", *methods]
    data = synthetic_cg(n_train=4096, n_test=256)
    runs = _runs(data, methods)
    hooks = bench_epoch_hooks(runs)  # first, as in training: some methods set up their state there
    ms = {k: 1000 * sec for k, sec in step_seconds(runs, data, args.steps, args.rounds).items()}
    steps_per_epoch = len(data.train) // 64
    rows = []
    for (name, fusion), t in ms.items():
        base = ms[("vanilla", fusion)]
        cls = method_class(name)
        rows.append(
            {
                "method": name,
                "fusion": fusion,
                "ms_per_step": round(t, 2),
                "relative_to_vanilla": round(t / base, 3),
                "declared_extra_passes": cls.extra_cost,
                "epoch_hooks_s": round(hooks[(name, fusion)], 3),
                "epoch_hooks_share_of_epoch": round(hooks[(name, fusion)] / (steps_per_epoch * t / 1000), 3),
            }
        )
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
