"""Training-step time per precision and memory layout, vanilla and guided, side by side in one interleaved run.

The ModelNet40 network (two ResNet-18 branches with MMTM after layer2-4, 40 classes), batch 8, square images of
``--size`` pixels. Each configuration (fp32, fp32 + channels-last, bf16, bf16 + channels-last, and fp16 where
asked) runs the real ``train_step`` (forward, loss, backward, speeds, method hook, optimizer step) for ``--steps``
steps a round; rounds interleave the configurations so machine noise hits them alike; the median is reported with
the speed-up over fp32 and guided's cost over vanilla in the same configuration.

Channels-last leaves ResNet-18's last stage contiguous (``stays_contiguous``, greedymm.precision);
``--every-stage`` adds the channels-last rows with every stage channels-last (the layout before), for comparison.

    python benchmarks/bench_precision.py [--size 112] [--steps 3] [--rounds 3] [--fp16] [--every-stage]
                                         [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import NoiseViews  # benchmarks/_common.py (the scripts run from this folder)

from greedymm.config import TrainConfig
from greedymm.data.base import MultiModalData
from greedymm.precision import stays_contiguous, to_channels_last
from greedymm.run import build_run
from greedymm.train import train_step


def every_stage_channels_last(model: torch.nn.Module) -> None:
    """The layout before the last stage stayed contiguous: no module opts out, every 4-D weight channels-last."""
    for m in model.modules():
        if stays_contiguous(m):
            m.stays_contiguous = False
    to_channels_last(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fp16", action="store_true", help="also fp16 (slow on most CPUs)")
    p.add_argument("--every-stage", action="store_true", help="also channels-last in every stage (the old layout)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = NoiseViews(32, args.size)
    src = {"real_data": False, "source": "benchmark noise", "note": "random pixels"}
    data = MultiModalData("bench", ("view0", "view6"), (3, 3), 40, "resnet18", split, split, split, src)
    # (precision, channels-last: False, True, or "every stage")
    configs: list[tuple[str, bool | str]] = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    configs += [("fp16", False), ("fp16", True)] if args.fp16 else []
    configs += [("fp32", "every stage"), ("bf16", "every stage")] if args.every_stage else []
    runs = {}
    for precision, cl in configs:
        for method in ("vanilla", "guided"):
            cfg = TrainConfig(dataset="bench", method=method, batch_size=8, optimizer="sgd", lr=0.1, momentum=0.0,
                              warmup_epochs=0.0, precision=precision, channels_last=bool(cl), device="cpu")  # fmt: skip
            run = build_run(cfg, data)
            if cl == "every stage":
                every_stage_channels_last(run.model)
            run.epoch_stats = torch.zeros(4, dtype=torch.float64)
            runs[(precision, cl, method)] = run
    batch = split.batch(torch.arange(8))
    times: dict[tuple, list[float]] = {k: [] for k in runs}
    for r in range(args.rounds + 1):
        for key, run in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                train_step(run, *batch)
            if r:  # round 0 warms up
                times[key].append((time.perf_counter() - t) / args.steps)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    rows = []
    for (precision, cl, method), t in ms.items():
        rows.append(
            {
                "precision": precision,
                "channels_last": cl,
                "method": method,
                "ms_per_step": round(t, 1),
                "speedup_over_fp32": round(ms[("fp32", False, method)] / t, 3),
                "guided_over_vanilla": round(ms[(precision, cl, "guided")] / ms[(precision, cl, "vanilla")], 3),
            }
        )
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size,
                      "batch": 8, "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
