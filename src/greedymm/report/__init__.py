"""Run folders -> summaries, tables and figures. Everything here reads a run's records and step log (through
``greedymm.rundir``), selects, and renders; nothing trains or evaluates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..rundir import RunDir, best_record


def _util_label(key: str, modalities: list[str]) -> str:
    """u_m1_given_m0 -> u(m1|m0) (the paper's notation for two modalities); u_others_given_m2 -> u(others|flow);
    u_m1 -> u(gray)."""
    body = key[2:].replace("_given_", "|")
    if len(modalities) != 2 or body.startswith("others") or "|" not in body:
        for k in reversed(range(len(modalities))):  # m10 before m1
            body = body.replace(f"m{k}", modalities[k])
    return f"u({body})".replace("|", "\\|")


def table_rows(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, split, key) rows of the side-by-side table for a run's record: the paper's rows for two modalities
    with MMTM; per-head accuracies and per-modality utilization (and their spread) for any other model."""
    from ..metrics.utilization import util_names

    mods = list(record.get("modalities", ["m0", "m1"]))
    test = record["test"]
    rows = [("test accuracy, fused", "test", "acc")]
    rows += [(f"test accuracy, head {k} ({m})", "test", f"acc_head{k}") for k, m in enumerate(mods)]
    rows = [r for r in rows if r[2] in test]
    rows.append(("val accuracy, fused", "val", "acc"))
    u_keys = util_names(len(mods), record.get("family", "intermediate"))
    for split in ("val", "test"):
        rows += [(f"{_util_label(k, mods)}, {split}", split, k) for k in u_keys]
        if "d_util" in test:
            rows.append((f"d_util, {split}", split, "d_util"))
        elif len(mods) > 2:
            rows.append((f"utilization spread (max - min), {split}", split, "util_spread"))
    return rows


def run_summary(run: str | Path | RunDir) -> dict[str, Any]:
    """The best-validation record, the last record, and the run's totals."""
    rd = run if isinstance(run, RunDir) else RunDir(run)
    recs = rd.records()
    steps = rd.steps()
    modes = steps.get("mode", [])
    rebal = sum(m != "regular" for m in modes)
    return {
        "run": str(rd.path),
        "method": recs[-1]["method"],
        "dataset": recs[-1]["dataset"],
        "seed": recs[-1]["seed"],
        "source": recs[-1].get("source", {}),
        "best": best_record(recs),
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

    for label, split, key in table_rows(next(iter(summaries.values()))["last"]):
        row(label + " (best val)", [s["best"][split].get(key, math.nan) for s in summaries.values()])
    row("test accuracy, fused (last epoch)", [s["last"]["test"]["acc"] for s in summaries.values()])
    if all("d_util" in s["last"]["val"] for s in summaries.values()):
        row("d_util, val (last epoch)", [s["last"]["val"]["d_util"] for s in summaries.values()])
    row("least-used modality, val (best val)", [_least_used(s["best"], "val") for s in summaries.values()])
    row("last d_speed", [s["last_d_speed"] for s in summaries.values()])
    row("steps re-balancing", [f"{s['rebalance_steps']} / {s['steps']}" for s in summaries.values()])
    row("best epoch (from 0)", [s["best"]["epoch"] for s in summaries.values()])
    return "\n".join(lines)


def _least_used(record: dict[str, Any], split: str) -> str:
    k = record[split].get("least_used")
    mods = record.get("modalities", [])
    return "-" if k is None else (mods[k] if k < len(mods) else f"m{k}")


def source_line(summary: dict[str, Any]) -> str:
    src = summary["source"]
    kind = "real data" if src.get("real_data") else "STAND-IN data (not the real data set)"
    return f"data: {summary['dataset']} ({kind}; source: {src.get('source', '?')}; {src.get('note', '')})"


def summarize_run(run: Path) -> str:
    s = run_summary(run)
    mods = s["last"].get("modalities", ["m0", "m1"])
    model = f"{s['last'].get('fusion', 'mmtm')} fusion" if len(mods) > 1 else "uni-modal"
    names = ", ".join(f"m{k} = {m}" for k, m in enumerate(mods))
    return "\n".join(
        [
            f"run {run}: {s['method']} seed {s['seed']}, {model}; {names}",
            source_line(s),
            "",
            comparison_table({s["method"]: s}),
        ]
    )


def eval_table(result: dict[str, Any], run: str | Path) -> str:
    """A checkpoint's evaluation (``greedymm.run.evaluate_checkpoint``) as a markdown table, one row per split."""
    cfg = result["config"]
    lines = [f"{run}: {result['checkpoint']} checkpoint (epoch {result['epoch']}), {cfg['method']} on {cfg['dataset']}"]
    keys = [k for k in result["test"] if k.startswith(("acc", "u_")) or k in ("d_util", "util_spread")]
    lines += ["| split | " + " | ".join(k.replace("|", "\\|") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for split in ("val", "test"):
        lines.append(f"| {split} | " + " | ".join(_fmt(result[split].get(k, math.nan)) for k in keys) + " |")
    return "\n".join(lines)
