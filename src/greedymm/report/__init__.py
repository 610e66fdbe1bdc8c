"""Run folders -> summaries, tables and figures. Everything here reads the jsonl/csv records only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

# (label, split, key) rows of the side-by-side table
TABLE_ROWS = [
    ("test accuracy, fused", "test", "acc"),
    ("test accuracy, head 0 (m0)", "test", "acc_head0"),
    ("test accuracy, head 1 (m1)", "test", "acc_head1"),
    ("val accuracy, fused", "val", "acc"),
    ("u(m1\\|m0), val", "val", "u_m1_given_m0"),
    ("u(m0\\|m1), val", "val", "u_m0_given_m1"),
    ("d_util, val", "val", "d_util"),
    ("u(m1\\|m0), test", "test", "u_m1_given_m0"),
    ("u(m0\\|m1), test", "test", "u_m0_given_m1"),
    ("d_util, test", "test", "d_util"),
]


def load_records(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no results.jsonl in {run}: is it a run folder (made by `greedymm train`)?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_steps(run: Path) -> dict[str, list]:
    """steps.csv as columns: step (int), mode (str), d_speed etc. (float)."""
    cols: dict[str, list] = {}
    with open(Path(run) / "steps.csv", newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                cols.setdefault(k, []).append(v if k == "mode" else (int(v) if k in ("step", "epoch") else float(v)))
    return cols


def run_summary(run: Path) -> dict[str, Any]:
    """The best-validation epoch, the last epoch, and the run's totals."""
    recs = load_records(run)
    best = max(recs, key=lambda r: (r["val"]["acc"], -r["epoch"]))  # the first epoch reaching the best
    steps = load_steps(run)
    modes = steps.get("mode", [])
    rebal = sum(m != "regular" for m in modes)
    return {
        "run": str(run),
        "method": recs[-1]["method"],
        "dataset": recs[-1]["dataset"],
        "seed": recs[-1]["seed"],
        "source": recs[-1].get("source", {}),
        "best": best,
        "last": recs[-1],
        "last_d_speed": steps["d_speed"][-1] if steps.get("d_speed") else math.nan,
        "rebalance_steps": rebal,
        "steps": len(modes),
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown table, one column per run: metrics at the best-validation checkpoint and at the last epoch."""
    names = list(summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, values: list[Any]) -> None:
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")

    for label, split, key in TABLE_ROWS:
        row(label + " (best val)", [s["best"][split].get(key, math.nan) for s in summaries.values()])
    row("test accuracy, fused (last epoch)", [s["last"]["test"]["acc"] for s in summaries.values()])
    row("d_util, val (last epoch)", [s["last"]["val"]["d_util"] for s in summaries.values()])
    row("last d_speed", [s["last_d_speed"] for s in summaries.values()])
    row("steps re-balancing", [f"{s['rebalance_steps']} / {s['steps']}" for s in summaries.values()])
    row("best epoch", [s["best"]["epoch"] for s in summaries.values()])
    return "\n".join(lines)


def source_line(summary: dict[str, Any]) -> str:
    src = summary["source"]
    kind = "real data" if src.get("real_data") else "STAND-IN data (not the real data set)"
    return f"data: {summary['dataset']} ({kind}; source: {src.get('source', '?')}; {src.get('note', '')})"


def summarize_run(run: Path) -> str:
    s = run_summary(run)
    m0, m1 = s["last"].get("modalities", ["m0", "m1"])
    return "\n".join(
        [
            f"run {run}: {s['method']} seed {s['seed']}; m0 = {m0}, m1 = {m1}",
            source_line(s),
            "",
            comparison_table({s["method"]: s}),
        ]
    )


def evaluate_run(run: Path, checkpoint: str = "best", squeeze_means: str = "saved") -> str:
    """Recompute every metric from a checkpoint of the run (regular mode, utilization included)."""
    from ..checkpoint import load_checkpoint, write_json
    from ..config import TrainConfig
    from ..evaluate import evaluate, record_train_squeeze_means
    from ..train import build_run

    state = load_checkpoint(Path(run) / f"{checkpoint}.pt")
    cfg = TrainConfig.from_dict(state["config"])
    r = build_run(cfg)
    r.model.load_state_dict(state["model"])
    if squeeze_means == "exact":
        record_train_squeeze_means(r.model, r.data.train, subset=cfg.exact_subset, seed=cfg.data_seed, device=r.device)
    out = {
        "checkpoint": checkpoint,
        "epoch": state["epoch"] - 1,
        "squeeze_means": squeeze_means,
        "val": evaluate(r.model, r.data.val, device=r.device),
        "test": evaluate(r.model, r.data.test, device=r.device),
    }
    write_json(Path(run) / f"eval_{checkpoint}.json", out)
    lines = [
        f"{run}: {checkpoint} checkpoint (epoch {out['epoch']}), {cfg.method} on {cfg.dataset}",
        "| split | acc | head 0 | head 1 | head 0 cut | head 1 cut | u(m1\\|m0) | u(m0\\|m1) | d_util |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        m = out[split]
        keys = [
            "acc",
            "acc_head0",
            "acc_head1",
            "acc_head0_cut",
            "acc_head1_cut",
            "u_m1_given_m0",
            "u_m0_given_m1",
            "d_util",
        ]
        lines.append(f"| {split} | " + " | ".join(_fmt(m[k]) for k in keys) + " |")
    return "\n".join(lines)
