"""Speed of training steps per method and the cost of evaluating with utilization.

Measures, on CG-MNIST-sized inputs (batch 64, 28x28, the paper-size small CNN per branch):
  - training steps/s of vanilla, guided and random (the real ``train_step``: forward, backward, speeds, method
    hook, optimizer step); rounds interleave the methods so machine noise hits them alike;
  - the conditional-learning-speed computation alone: our fused group norms vs one ``.item()`` per parameter
    tensor (how the authors' code does it);
  - one evaluation with utilization (regular + cut passes, stem shared) vs a plain evaluation, on the same items,
    and the optional exact train-split squeeze pass; the same with three modalities (synthetic data, MMTM with its
    optional pairwise passes, and concat late fusion with one drop pass per modality).

    python benchmarks/bench_speed.py [--steps 40] [--rounds 5] [--eval-items 2048] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from greedymm.config import preset
from greedymm.data.colored import make_colored_data
from greedymm.evaluate import evaluate, record_train_squeeze_means
from greedymm.run import build_run
from greedymm.train import train_step


def synthetic_cg(n_train: int, n_test: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n_train + n_test, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=g)
    src = {"real_data": False, "source": "benchmark noise", "note": "random pixels, MNIST-sized"}
    return make_colored_data(
        "bench", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], src, val_fraction=0.1
    )


def per_item_speeds(groups) -> list[float]:
    """The authors' way: one host sync per parameter tensor."""
    out = []
    for g in groups:
        num = sum(p.grad.norm().item() ** 2 for p in g if p.grad is not None)
        den = sum(p.norm().item() ** 2 for p in g)
        out.append(num / den)
    return out


def step_seconds(runs: dict, data, steps: int, rounds: int) -> dict:
    """Median seconds per real ``train_step`` of each run; rounds interleave the runs, round 0 warms up."""
    batches = [data.train.batch(torch.arange(i * 64, (i + 1) * 64)) for i in range(8)]
    times: dict = {k: [] for k in runs}
    for r in range(rounds + 1):
        for key, run in runs.items():
            t = time.perf_counter()
            for i in range(steps):
                x, y = batches[i % len(batches)]
                train_step(run, x, y)
            if r:
                times[key].append((time.perf_counter() - t) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_training(data, steps: int, rounds: int) -> dict[str, float]:
    runs = {}
    for method in ("vanilla", "guided", "random"):
        cfg = preset("cg-mnist", method=method, device="cpu", warmup_epochs=0.0)
        runs[method] = build_run(cfg, data)
        runs[method].epoch_stats = torch.zeros(4, dtype=torch.float64)
    return {m: 1 / sec for m, sec in step_seconds(runs, data, steps, rounds).items()}  # steps/s


def bench_speed_computation(data, reps: int = 50) -> dict[str, float]:
    run = build_run(preset("cg-mnist", device="cpu"), data)
    x, y = data.train.batch(torch.arange(64))
    run.model.loss(run.model(x), y).backward()
    groups = run.model.speed_groups()
    out = {}
    for name, fn in (
        ("fused_ms", lambda: (run.speed.update(groups), run.speed.speeds())),
        ("per_tensor_item_ms", lambda: per_item_speeds(groups)),
    ):
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = 1000 * (time.perf_counter() - t) / reps
    out["parameter_tensors"] = sum(len(g) for g in groups)
    return out


def bench_eval(data, reps: int, cfg=None) -> dict[str, float]:
    """Plain evaluation vs evaluation with utilization (and, for MMTM, the optional pairwise passes)."""
    run = build_run(cfg or preset("cg-mnist", device="cpu"), data)
    run.model.train()
    run.model(data.train.batch(torch.arange(256))[0])  # non-trivial squeeze means
    run.model.commit_squeeze_means()
    res: dict[str, list[float]] = {"plain_s": [], "with_utilization_s": [], "exact_squeeze_pass_s": []}
    passes = [
        ("plain_s", lambda: evaluate(run.model, data.test, utilization=False)),
        ("with_utilization_s", lambda: evaluate(run.model, data.test, utilization=True)),
        ("exact_squeeze_pass_s", lambda: record_train_squeeze_means(run.model, data.train, subset=len(data.test))),
    ]
    if run.model.family == "intermediate" and run.model.n_modalities > 2:
        res["with_pairwise_s"] = []
        passes.append(("with_pairwise_s", lambda: evaluate(run.model, data.test, utilization=True, pairwise=True)))
    for r in range(reps + 1):
        for key, fn in passes:
            t = time.perf_counter()
            fn()
            if r:
                res[key].append(time.perf_counter() - t)
    out = {k: statistics.median(v) for k, v in res.items()}
    out["utilization_over_plain"] = out["with_utilization_s"] / out["plain_s"]
    out["exact_over_plain"] = (out["with_utilization_s"] + out["exact_squeeze_pass_s"]) / out["plain_s"]
    if "with_pairwise_s" in out:
        out["pairwise_over_plain"] = out["with_pairwise_s"] / out["plain_s"]
    return out


def bench_eval_three(items: int, reps: int) -> dict[str, dict[str, float]]:
    """The evaluation cost with three modalities (synthetic data, 28 px), MMTM and late fusion."""
    from greedymm.data import load_dataset

    data = load_dataset("synthetic", modalities=3, image_size=28, size=4096, test_size=items)
    return {
        fusion: bench_eval(data, reps, preset("synthetic", method="vanilla", fusion=fusion, device="cpu"))
        for fusion in ("mmtm", "concat")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (median reported)")
    p.add_argument("--eval-items", type=int, default=2048, help="test items per evaluation")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = synthetic_cg(n_train=4096, n_test=args.eval_items)
    train = bench_training(data, args.steps, args.rounds)
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": 64,
        "steps_per_s": train,
        "guided_over_vanilla": train["guided"] / train["vanilla"],
        "random_over_vanilla": train["random"] / train["vanilla"],
        "speed_computation": bench_speed_computation(data),
        "evaluation": bench_eval(data, reps=3),
        "evaluation_three_modalities": bench_eval_three(args.eval_items, reps=3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
