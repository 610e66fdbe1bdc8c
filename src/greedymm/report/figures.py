"""Figures of runs (PNG, matplotlib Agg): d_speed over steps; d_util and per-head accuracy over epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..rundir import RunDir  # noqa: E402


def plot_d_speed(runs: dict[str, Path], path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, run in runs.items():
        s = RunDir(run).steps()
        (line,) = ax.plot(s["step"], s["d_speed"], label=label, lw=1.2)
        rebal = [st for st, m in zip(s["step"], s["mode"], strict=True) if m != "regular"]
        if rebal:  # a rug of re-balancing steps on the zero line, in the run's colour
            ax.plot(
                rebal,
                [0.0] * len(rebal),
                "|",
                ms=6,
                alpha=0.3,
                color=line.get_color(),
                label=f"{label}: re-balancing steps",
            )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("d_speed = s(m1|m0) - s(m0|m1)")
    ax.set_title(title or "conditional learning speed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_epochs(runs: dict[str, Path], path: Path, title: str = "") -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (label, run) in enumerate(runs.items()):
        recs = RunDir(run).records()
        ep = [r["epoch"] + 1 for r in recs]
        color = f"C{i}"
        a1.plot(ep, [r["val"]["d_util"] for r in recs], color=color, label=f"{label}, val")
        a1.plot(ep, [r["test"]["d_util"] for r in recs], color=color, ls=":", label=f"{label}, test")
        a2.plot(ep, [r["val"]["acc_head0"] for r in recs], color=color, label=f"{label}, head 0 (m0)")
        a2.plot(ep, [r["val"]["acc_head1"] for r in recs], color=color, ls="--", label=f"{label}, head 1 (m1)")
        a2.plot(ep, [r["test"]["acc"] for r in recs], color=color, ls=":", lw=2, label=f"{label}, test fused")
    a1.axhline(0, color="k", lw=0.6)
    a1.set_xlabel("epoch")
    a1.set_ylabel("d_util = u(m1|m0) - u(m0|m1)")
    a1.set_title("conditional utilization imbalance")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_title("per-head validation accuracy, fused test accuracy")
    for a in (a1, a2):
        a.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
