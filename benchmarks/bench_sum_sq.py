"""Precision and cost of the conditional-learning-speed sums: float32 ``_foreach_norm`` vs row-wise float32 norms
combined in float64 (what ``greedymm.metrics.sum_sq`` does), on the ModelNet40-size model.

Two ResNet-18 branches with MMTM after layer2-4 (the paper's ModelNet40 network), one forward/backward of a batch
of 8 two-view images; then, interleaved over rounds, the time of mu(P) for the four groups theta_0, theta_1,
psi_0, psi_1 each way, and each way's relative error against an all-float64 reference. Also the same step's
forward+backward time, so the sums' share of a training step is visible.

    python benchmarks/bench_sum_sq.py [--size 112] [--rounds 20] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from greedymm.metrics import sum_sq
from greedymm.models import build_model


def foreach_norm_sq(tensors) -> torch.Tensor:
    """The earlier implementation: fused float32 norms, squared and summed in float32."""
    return torch.stack(torch._foreach_norm(list(tensors))).float().square().sum()


def reference_sq(tensors) -> float:
    return sum(float(t.detach().double().square().sum()) for t in tensors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=112, help="image size in pixels (ModelNet40 renders: 224)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet18", ("view0", "view6"), (3, 3), 40)
    x = {m: torch.randn(8, 3, args.size, args.size) for m in model.modalities}
    y = torch.randint(0, 40, (8,))
    t = time.perf_counter()
    model.loss(model(x), y).backward()
    step_s = time.perf_counter() - t
    groups = model.speed_groups()
    tensors = [[q.grad for q in g] for g in groups] + [[q.detach() for q in g] for g in groups]
    errors = {"foreach_norm_float32": [], "sum_sq_float64": []}
    for ts in tensors:
        ref = reference_sq(ts)
        errors["foreach_norm_float32"].append(abs(float(foreach_norm_sq(ts)) - ref) / ref)
        errors["sum_sq_float64"].append(abs(float(sum_sq(ts)) - ref) / ref)
    times: dict[str, list[float]] = {k: [] for k in errors}
    for r in range(args.rounds + 1):
        for name, fn in (("foreach_norm_float32", foreach_norm_sq), ("sum_sq_float64", sum_sq)):
            t = time.perf_counter()
            vals = [fn(ts) for ts in tensors]
            float(torch.stack([v.double() for v in vals]).sum())  # one host sync, as the loop does
            if r:
                times[name].append(time.perf_counter() - t)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}  # interleaved rounds: same machine noise
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "size": args.size,
                "parameters": sum(q.numel() for q in model.parameters()),
                "forward_backward_ms": round(1000 * step_s, 1),
                "speed_sums_ms_median": {k: round(v, 2) for k, v in ms.items()},
                "float64_over_float32_time": round(ms["sum_sq_float64"] / ms["foreach_norm_float32"], 3),
                "max_relative_error": {k: max(v) for k, v in errors.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
