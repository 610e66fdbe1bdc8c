"""Figures of a sweep (PNG, matplotlib Agg), one set per data set, each method as its mean over seeds:

- test accuracy at the best-validation epoch per row (bars: mean, whiskers: min-max, a dot per seed);
- validation and test accuracy over epochs, side by side (validation selects; the test panel shows what it could
  not see, e.g. a test split whose shortcut is broken);
- d_speed over training steps, with the min-max band over seeds (docs/PAPER.md section 4);
- validation d_util over epochs (section 3), with the min-max band;
- per-head validation accuracy over epochs (head 0 solid, head 1 dashed);
- share of steps re-balancing per method (bars: mean, error bars: min-max over seeds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .aggregate import METHOD_ORDER, Row, modality_names, shared_modalities  # noqa: E402


def _ordinal(row: Row, rows: Sequence[Row]) -> int:
    # vanilla 0, guided 1, random 2 on a method's first row; a method's further rows (other settings) and the
    # other methods take the next numbers in order
    firsts = [r for r in rows if r.method in METHOD_ORDER and next(x for x in rows if x.method == r.method) is r]
    if row in firsts:
        return METHOD_ORDER.index(row.method)
    return len(METHOD_ORDER) + [r for r in rows if r not in firsts].index(row)


def _color(row: Row, rows: Sequence[Row]) -> str:
    """The same color for a method in every figure (vanilla C0, guided C1, random C2) on its first row."""
    return f"C{_ordinal(row, rows) % 10}"


def _line(row: Row, rows: Sequence[Row]) -> str:
    """The line style that keeps rows apart once the ten colors are used up: solid for the first ten rows, then
    dashed, dotted, dash-dot (a sweep of every baseline on several fusions has more than ten rows)."""
    return ("-", "--", ":", "-.")[_ordinal(row, rows) // 10 % 4]


def _marker(row: Row, rows: Sequence[Row]) -> str:
    """The point marker, changing with the line style (circles for the first ten rows, then squares, triangles,
    diamonds): two rows sharing a color differ in both, which a thin dashed line alone does not show well."""
    return ("o", "s", "^", "D")[_ordinal(row, rows) // 10 % 4]


def _legend(fig: Any, ax: Any, rows: Sequence[Row]) -> None:
    # beside the lines while they are few; below the panels, in columns, once they would cover the lines
    if len(rows) <= 6:
        ax.legend(fontsize=7)
        return
    handles, labels = ax.get_legend_handles_labels()
    width, height = fig.get_size_inches()
    extra = 0.2 + 0.16 * math.ceil(len(labels) / 2)  # inches: one legend line per two entries
    fig.set_size_inches(width, height + extra)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig._greedymm_rect = (0, extra / (height + extra), 1, 1)  # _save lays the panels out above the legend


def _method_color(method: str, rows: Sequence[Row]) -> str:
    """One color per method (vanilla C0, guided C1, random C2; other methods C3-C9 in order), for figures where
    a method's rows sit side by side and their labels tell the settings apart."""
    if method in METHOD_ORDER:
        return f"C{METHOD_ORDER.index(method)}"
    others = list(dict.fromkeys(r.method for r in rows if r.method not in METHOD_ORDER))
    free = 10 - len(METHOD_ORDER)
    return f"C{len(METHOD_ORDER) + others.index(method) % free}"


def _aligned(series: Sequence[Sequence[float]]) -> np.ndarray:
    """(runs, length) array cut to the shortest run: a mean is only drawn where every seed has a value."""
    length = min(len(s) for s in series)
    return np.array([list(s[:length]) for s in series], dtype=float)


def _band(ax: Any, x: np.ndarray, arr: np.ndarray, color: str, label: str, ls: str = "-", marker: str = "o") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no speed yet) stay NaN
        mean, lo, hi = np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0)
    shown = marker if len(x) <= 30 else None  # points on short series (a one-epoch run is a single point)
    ax.plot(x, mean, color=color, ls=ls, lw=1.3, marker=shown, ms=3, label=f"{label} (n={len(arr)})")
    if len(arr) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=getattr(fig, "_greedymm_rect", (0, 0, 1, 1)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_d_speed(rows: Sequence[Row], steps_by_run: Mapping[str, Mapping[str, Sequence]], path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    drawn = False
    for row in rows:
        series = [steps_by_run[r]["d_speed"] for r in row.runs if steps_by_run.get(r, {}).get("d_speed")]
        if series:
            arr = _aligned(series)
            _band(ax, np.arange(arr.shape[1]), arr, _color(row, rows), row.label, _line(row, rows), _marker(row, rows))
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("training step")
    two = len(rows[0].modalities) == 2
    label = "d_speed = s(m1|m0) - s(m0|m1)" if two else "d_speed = max_k s_k - min_k s_k"
    ax.set_ylabel(modality_names(label, shared_modalities(rows)))
    ax.set_title(f"{rows[0].dataset}: conditional learning speed (mean, min-max over seeds)")
    _legend(fig, ax, rows)
    return _save(fig, path)


def plot_epoch_metric(
    rows: Sequence[Row],
    records_by_run: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    keys: Sequence[tuple[str, str, str]],
    ylabel: str,
    title: str,
) -> Path:
    """``keys``: (split, field, line style) drawn per row, e.g. [("val", "d_util", "-")]. A row whose records
    have none of the keys (a late-fusion model has no per-branch heads) is left out; colors stay those of
    every row, as in the other figures."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    drawn = [r for r in rows if any(k in records_by_run[r.runs[0]][-1][s] for s, k, _ in keys)]
    for row in drawn:
        for split, key, style in keys:
            arr = _aligned([[r[split].get(key, math.nan) for r in records_by_run[run]] for run in row.runs])
            suffix = f", {key.replace('acc_', '')}" if len(keys) > 1 else ""
            ls = style if len(keys) > 1 else _line(row, rows)  # one key: the style tells rows apart
            marker = "o" if len(keys) > 1 else _marker(row, rows)
            _band(ax, np.arange(1, arr.shape[1] + 1), arr, _color(row, rows), row.label + suffix, ls, marker)
    if any(k == "d_util" for _, k, _ in keys):
        ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{rows[0].dataset}: {title}")
    _legend(fig, ax, drawn)
    return _save(fig, path)


def plot_accuracy_over_epochs(
    rows: Sequence[Row], records_by_run: Mapping[str, Sequence[Mapping[str, Any]]], path: Path
) -> Path:
    """Two panels sharing the epoch axis: validation accuracy (left) and test accuracy (right) of the prediction,
    each row as its mean over seeds with the min-max band; a marker on the mean at each row's best-validation
    epochs (the epochs a report reads)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9), sharex=True)
    for row in rows:
        color = _color(row, rows)
        best = row.stats["best_epoch"].values if "best_epoch" in row.stats else ()  # counted from 0
        for ax, split in zip(axes, ("val", "test"), strict=True):
            arr = _aligned([[r[split].get("acc", math.nan) for r in records_by_run[run]] for run in row.runs])
            epochs = np.arange(1, arr.shape[1] + 1)
            _band(ax, epochs, arr, color, row.label, _line(row, rows), _marker(row, rows))
            at = sorted({int(e) + 1 for e in best if math.isfinite(e) and int(e) < arr.shape[1]})
            if at:  # the epochs the report reads, on the mean line (the run's own value can differ from the mean)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(arr, 0)
                ax.plot(at, mean[np.array(at) - 1], ls="none", marker="*", ms=9, color=color, mec="k", mew=0.5,
                        label="_selected", zorder=3)  # fmt: skip
    stand_in = any("STAND-IN" in s for r in rows for s in r.sources)
    for ax, split in zip(axes, ("validation", "test"), strict=True):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{split} accuracy")
        ax.set_title(f"{split} accuracy (mean, min-max over seeds; stars: best-validation epochs)", fontsize=9)
    _legend(fig, axes[1], rows)
    fig.suptitle(f"{rows[0].dataset}: accuracy over epochs{' (STAND-IN data)' if stand_in else ''}", fontsize=10)
    return _save(fig, path)


def plot_test_accuracy(rows: Sequence[Row], path: Path) -> Path:
    """One horizontal bar per row, first row on top: the mean test accuracy at the best-validation epoch, whiskers
    from the lowest to the highest seed, a dot per seed; the title says when the data is a stand-in."""
    fig, ax = plt.subplots(figsize=(8.5, 1.3 + 0.42 * len(rows)))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        values = row.stats["test.acc"].values
        mean = float(np.mean(values))
        color = _method_color(row.method, rows)
        ax.barh(yi, mean, height=0.6, color=color, alpha=0.75)
        if len(values) > 1:
            ax.errorbar(mean, yi, xerr=[[mean - min(values)], [max(values) - mean]], color="k", capsize=3, lw=0.9)
        ax.plot(values, [yi] * len(values), "o", color="k", ms=2.5)
        ax.text(max(values) + 0.01, yi, f"{mean:.3f}", va="center", fontsize=7)
    late = [f", {len(r.unfinished)} unfinished" if r.unfinished else "" for r in rows]
    ax.set_yticks(y, [f"{r.label} (n={r.n}{tail})" for r, tail in zip(rows, late, strict=True)], fontsize=7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("test accuracy at the best-validation epoch (bar: mean, whiskers: min-max, dots: seeds)", fontsize=8)
    stand_in = any("STAND-IN" in s for r in rows for s in r.sources)
    ax.set_title(f"{rows[0].dataset}: test accuracy per method{' (STAND-IN data)' if stand_in else ''}", fontsize=10)
    return _save(fig, path)


def plot_rebalance_share(rows: Sequence[Row], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(rows), 3.4))
    x = np.arange(len(rows))
    stats = [row.stats["rebalance_share"] for row in rows]
    means = [s.mean for s in stats]
    err = [[m - min(s.values) for m, s in zip(means, stats, strict=True)]]
    err.append([max(s.values) - m for m, s in zip(means, stats, strict=True)])
    ax.bar(x, means, yerr=err, capsize=4, color=[_color(r, rows) for r in rows])
    ax.set_xticks(x, [r.label for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("re-balancing steps / all steps")
    ax.set_ylim(0, 1)
    ax.set_title(f"{rows[0].dataset}: steps spent re-balancing")
    return _save(fig, path)


def dataset_figures(
    rows: Sequence[Row],
    records_by_run: Mapping[str, Sequence[Mapping[str, Any]]],
    steps_by_run: Mapping[str, Mapping[str, Sequence]],
    folder: Path,
) -> dict[str, Path]:
    """Write every figure of every data set into ``folder``; returns {caption: path} in report order."""
    out: dict[str, Path] = {}
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        mods = list(max(mine, key=lambda r: len(r.modalities)).modalities)  # not a uni-modal row's one
        names = shared_modalities(mine)  # the user's modality names where every row orders them alike
        lasts = [records_by_run[r.runs[0]][-1]["val"] for r in mine]
        first = next((v for v in lasts if "d_util" in v), lasts[0])  # a two-modality row's, where there is one
        conditional = ["u_m1_given_m0" in v for v in lasts if "d_util" in v]  # MMTM's d_util, or late fusion's
        out[f"{dataset}: test accuracy per method"] = plot_test_accuracy(mine, folder / f"{dataset}_test_acc.png")
        out[f"{dataset}: validation and test accuracy over epochs"] = plot_accuracy_over_epochs(
            mine, records_by_run, folder / f"{dataset}_acc_epochs.png"
        )
        p = plot_d_speed(mine, steps_by_run, folder / f"{dataset}_d_speed.png")
        if p:
            out[f"{dataset}: d_speed over training steps"] = p
        if "d_util" in first:
            out[f"{dataset}: validation d_util over epochs"] = plot_epoch_metric(
                mine,
                records_by_run,
                folder / f"{dataset}_d_util.png",
                [("val", "d_util", "-")],
                modality_names(
                    "d_util = u(m1|m0) - u(m0|m1)"
                    if all(conditional)
                    else "d_util = u(m1) - u(m0)"
                    if not any(conditional)
                    else "d_util = u(m1|m0) - u(m0|m1) (MMTM), u(m1) - u(m0) (late fusion)",
                    names,
                ),
                "validation d_util (mean, min-max over seeds)",
            )
        elif u_keys := [k for k in first if k.startswith("u_") and "_given_m" not in k.replace("others_given", "")]:
            # more than two modalities: one line per modality's utilization rate
            styles = ["-", "--", ":", "-."]
            out[f"{dataset}: validation utilization per modality over epochs"] = plot_epoch_metric(
                mine,
                records_by_run,
                folder / f"{dataset}_utilization.png",
                [("val", k, styles[i % 4]) for i, k in enumerate(u_keys)],
                "utilization rate",
                ", ".join(
                    f"{modality_names('u(' + k[2:].replace('_given_', '|') + ')', names or mods)} ({styles[i % 4]})"
                    for i, k in enumerate(u_keys)
                ),
            )
        heads = [k for k in (f"acc_head{i}" for i in range(len(mods))) if any(k in v for v in lasts)]
        if heads:
            styles = ["-", "--", ":", "-."]
            out[f"{dataset}: per-head validation accuracy over epochs"] = plot_epoch_metric(
                mine,
                records_by_run,
                folder / f"{dataset}_head_acc.png",
                [("val", k, styles[i % 4]) for i, k in enumerate(heads)],
                "validation accuracy",
                ", ".join(f"head {i} ({mods[i]}) {styles[i % 4]}" for i in range(len(heads))),
            )
        out[f"{dataset}: share of steps re-balancing"] = plot_rebalance_share(mine, folder / f"{dataset}_rebalance.png")
    return out
