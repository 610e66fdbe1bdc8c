"""`greedymm reproduce <data set>`: the sweep of vanilla / guided / random, the report, and a verdict on each
claim of the paper (Wu et al., ICML 2022; docs/PAPER.md section 7) with the numbers behind it.

The rules (all read at each run's best-validation epoch, validation split unless said otherwise):

1. Imbalance: every vanilla seed has |d_util| >= D_UTIL_LARGE (0.2), all with the same sign.
2. d_speed predicts the under-used modality: for every vanilla seed, sign(d_speed) == sign(d_util), where d_speed
   is the mean logged d_speed over the second half of the steps that trained the selected checkpoint.
   Why this is the prediction: d_util > 0 means u(m1|m0) > u(m0|m1), i.e. head 0 draws more on m1 than head 1
   draws on m0, so m0 is the under-used modality (m1 when d_util < 0). d_speed > 0 means branch 0 learns faster
   from m1 (through its MMTM gates, psi_0) relative to its own weights than branch 1 learns from m0, which is
   why the guided algorithm re-balances branch 0 (trains it on m0 alone) when d_speed > 0. So d_speed > 0
   predicts "m0 under-used" and d_speed < 0 predicts "m1 under-used"; the prediction is right when the signs agree.
3. Guided helps: (a) guided's mean |d_util| < vanilla's; (b) guided's mean test accuracy > vanilla's (we also say
   whether the gap exceeds the larger seed std of the two); (c) random's mean test accuracy < guided's, i.e.
   random gains less over vanilla than guided does. Claim 3 holds when (a), (b) and (c) hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import mean, std

D_UTIL_LARGE = 0.2  # |d_util| from which we call the imbalance large (vanilla CG-MNIST sits near 0.5-0.8 early on)


@dataclass(frozen=True)
class ReproduceSettings:
    """How `greedymm reproduce` runs one data set; each run's config is ``config.resolve_config(dataset)`` (the data
    set's defaults) with ``overrides`` (and, with --quick, ``quick_overrides``) on top: structured settings, e.g.
    ``{"width": 0.25, "data_options": {"frames": 8}}``."""

    dataset: str
    seeds: tuple[int, ...] = (0, 1, 2)  # the paper reports three seeds
    methods: tuple[str, ...] = ("vanilla", "guided", "random")
    overrides: Mapping[str, Any] = field(default_factory=dict)
    quick_epochs: int = 3
    quick_seeds: tuple[int, ...] = (0, 1)
    quick_overrides: Mapping[str, Any] = field(default_factory=dict)
    quick_fallback: str | None = None  # embedded data set --quick uses when this one's files are absent


# One entry per data set; adding a data set is one line here (and its DATASET_DEFAULTS entry in config.py).
REPRODUCE: dict[str, ReproduceSettings] = {
    # --quick: 3 epochs x 112 steps on the 10k npm subset; 6 runs with --workers 2 took 10 min on 2 CPU cores
    # shared with other jobs (load ~7), about 3 min on idle ones; full 60k MNIST makes each epoch 7.5x longer
    "cg-mnist": ReproduceSettings("cg-mnist", quick_epochs=3, quick_fallback="cg-digits"),
    "cg-fashion": ReproduceSettings("cg-fashion", quick_epochs=3, quick_fallback="cg-digits"),
    # 19 steps per epoch: 12 epochs give guided 11 epochs after its warm-up; a few minutes on 2 CPU cores
    "cg-digits": ReproduceSettings("cg-digits", quick_epochs=12),
    # the authors' protocol (DATASET_DEFAULTS); --quick shrinks the network and the schedule so it runs on a CPU
    "modelnet40": ReproduceSettings(
        "modelnet40",
        quick_epochs=2,
        quick_overrides={"width": 0.25, "batch_size": 32, "optimizer": "adam", "lr": 0.001},
    ),
    "modelnet40-standin": ReproduceSettings("modelnet40-standin", quick_epochs=8),
    "nvgesture": ReproduceSettings(
        "nvgesture", quick_epochs=2, quick_overrides={"width": 0.125, "data_options": {"frames": 8}}
    ),
    "nvgesture-standin": ReproduceSettings("nvgesture-standin", quick_epochs=6),
}


def reproduce_settings(name: str) -> ReproduceSettings:
    if name not in REPRODUCE:
        import difflib

        close = difflib.get_close_matches(name, list(REPRODUCE), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no reproduction settings for {name!r}; choose one of {sorted(REPRODUCE)}.{hint}")
    return REPRODUCE[name]


@dataclass(frozen=True)
class MethodSummary:
    """Per-seed numbers of one method at the best-validation epoch (same seed order in every field)."""

    seeds: tuple[int, ...]
    d_util_val: tuple[float, ...]
    test_acc: tuple[float, ...]
    d_speed: tuple[float, ...]


@dataclass(frozen=True)
class Verdict:
    claim: str  # "1", "2", "3a", "3b", "3c", "3"
    statement: str
    rule: str
    holds: bool | None  # None: cannot be judged (a method is missing, or a number is NaN)
    numbers: str


_mean, _std = mean, std  # over seeds, as every report computes them (greedymm.rundir)


def _pm(xs: Sequence[float], signed: bool = False) -> str:
    mean = f"{_mean(xs):+.3f}" if signed else f"{_mean(xs):.3f}"
    return mean + (f" ± {_std(xs):.3f}" if len(xs) > 1 else "") + f" (n={len(xs)})"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _missing(claim: str, statement: str, rule: str, methods: Sequence[str]) -> Verdict:
    return Verdict(claim, statement, rule, None, f"cannot judge: no runs of {', '.join(methods)}")


def judge_claims(s: Mapping[str, MethodSummary], threshold: float = D_UTIL_LARGE) -> list[Verdict]:
    """The verdicts on docs/PAPER.md section 7 from per-method summaries (see the module docstring for the rules)."""
    out = []
    st1 = "vanilla training shows a consistent, large imbalance of utilization (|d_util| large)"
    r1 = f"every vanilla seed has |d_util val| >= {threshold}, all with the same sign"
    if "vanilla" not in s:
        out.append(_missing("1", st1, r1, ["vanilla"]))
    else:
        d = s["vanilla"].d_util_val
        large = sum(abs(x) >= threshold for x in d)
        same = len({_sign(x) for x in d}) == 1
        nums = f"vanilla d_util val per seed {[round(x, 3) for x in d]}, mean {_pm(d, signed=True)}; "
        nums += f"|d_util| >= {threshold} in {large}/{len(d)} seeds; same sign: {'yes' if same else 'no'}"
        ok = None if any(math.isnan(x) for x in d) else bool(large == len(d) and same)
        out.append(Verdict("1", st1, r1, ok, nums))

    st2 = "the sign of d_speed during training predicts which modality is under-used"
    r2 = (
        "for every vanilla seed, sign(d_speed) == sign(d_util val); d_speed = mean over the 2nd half of the steps "
        "before the checkpoint; > 0 predicts m0 under-used, < 0 m1"
    )
    if "vanilla" not in s:
        out.append(_missing("2", st2, r2, ["vanilla"]))
    else:
        v = s["vanilla"]
        pairs = list(zip(v.seeds, v.d_speed, v.d_util_val, strict=True))
        agree = sum(_sign(ds) == _sign(du) != 0 for _, ds, du in pairs)
        per = "; ".join(
            f"seed {sd}: d_speed {ds:+.3f} (predicts m{0 if ds > 0 else 1} under-used), d_util {du:+.3f} "
            f"(m{0 if du > 0 else 1} under-used)"
            for sd, ds, du in pairs
        )
        ok = None if any(math.isnan(ds) for _, ds, _ in pairs) else agree == len(pairs)
        out.append(Verdict("2", st2, r2, ok, f"{per}; signs agree in {agree}/{len(pairs)} seeds"))

    parts = []
    if "vanilla" in s and "guided" in s:
        v, g = s["vanilla"], s["guided"]
        av, ag = [abs(x) for x in v.d_util_val], [abs(x) for x in g.d_util_val]
        parts.append(
            Verdict(
                "3a",
                "guided reduces |d_util|",
                "mean over seeds of |d_util val|: guided < vanilla",
                _mean(ag) < _mean(av),
                f"|d_util val| vanilla {_pm(av)}, guided {_pm(ag)}",
            )
        )
        gap, spread = _mean(g.test_acc) - _mean(v.test_acc), max(_std(g.test_acc), _std(v.test_acc))
        beyond = "n/a (one seed)" if math.isnan(spread) else ("yes" if abs(gap) > spread else "no")
        parts.append(
            Verdict(
                "3b",
                "guided raises test accuracy over vanilla",
                "mean test accuracy: guided > vanilla",
                gap > 0,
                f"test acc vanilla {_pm(v.test_acc)}, guided {_pm(g.test_acc)}; gap {gap:+.3f}; "
                f"gap exceeds the larger seed std ({spread:.3f}): {beyond}",
            )
        )
    else:
        parts += [
            _missing("3a", "guided reduces |d_util|", "guided < vanilla", ["vanilla", "guided"]),
            _missing("3b", "guided raises test accuracy over vanilla", "guided > vanilla", ["vanilla", "guided"]),
        ]
    if all(m in s for m in ("vanilla", "guided", "random")):
        v, g, r = s["vanilla"], s["guided"], s["random"]
        gain_g, gain_r = _mean(g.test_acc) - _mean(v.test_acc), _mean(r.test_acc) - _mean(v.test_acc)
        parts.append(
            Verdict(
                "3c",
                "the random variant helps less than guided",
                "mean test-accuracy gain over vanilla: random < guided",
                gain_r < gain_g,
                f"gain over vanilla: guided {gain_g:+.3f}, random {gain_r:+.3f}; "
                f"|d_util val| random {_pm([abs(x) for x in r.d_util_val])}",
            )
        )
    else:
        parts.append(_missing("3c", "the random variant helps less than guided", "random < guided", ["random"]))
    out += parts
    holds = None if any(p.holds is None for p in parts) else all(p.holds for p in parts)
    out.append(
        Verdict(
            "3",
            "the balanced algorithm reduces |d_util| and improves test accuracy; random helps less",
            "3a and 3b and 3c",
            holds,
            ", ".join(f"{p.claim}: {_word(p.holds)}" for p in parts),
        )
    )
    return out


def _word(holds: bool | None) -> str:
    return {True: "HOLDS", False: "DOES NOT HOLD", None: "CANNOT JUDGE"}[holds]


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    lines = []
    for v in verdicts:
        lines += [
            f"claim {v.claim}: {_word(v.holds)} - {v.statement}",
            f"    rule: {v.rule}",
            f"    numbers: {v.numbers}",
        ]
    return "\n".join(lines)


def summaries_from_rows(rows: Sequence) -> dict[str, MethodSummary]:
    """Per-method summaries from report rows (report.aggregate.Row); a method's row without extra settings
    is preferred when a sweep holds several."""
    out: dict[str, MethodSummary] = {}

    def paper_first(r) -> tuple[int, int]:
        # the paper's claims are about its own network: multi-modal MMTM rows first (never a late-fusion or a
        # uni-modal row while an MMTM one exists), then the row with the fewest other settings
        multi = len(r.modalities) >= 2
        other = [p for p in r.settings.split(", ") if p and not p.startswith(("fusion=", "modalities="))]
        return (0 if multi and r.fusion == "mmtm" else 1 if multi else 2, len(other))

    for row in sorted(rows, key=paper_first):
        if row.method not in out:
            st = row.stats
            out[row.method] = MethodSummary(
                row.seeds, st["val.d_util"].values, st["test.acc"].values, st["d_speed"].values
            )
    return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``; ``data_options`` and ``hparams`` merged key by key (as config.resolve_config does)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = {**out.get(k, {}), **v} if k in ("data_options", "hparams") else v
    return out


def check_data(dataset: str, data_dir: str | None = None) -> None:
    """Raise FileNotFoundError (with the fetch command) when the data set's files are absent."""
    from .data import load_dataset

    load_dataset(dataset, data_dir=data_dir)


def reproduce(
    name: str,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    workers: int = 1,
    out: str | Path | None = None,
    data_dir: str | None = None,
    launcher=None,
    echo: Callable[[str], None] = print,
    methods: Sequence[str] | None = None,
) -> int:
    """Sweep, report and verdicts; returns the exit code (1 when a run failed). ``methods``: any registered
    methods, each optionally on a fusion (``ogm-ge@concat``); the claims are judged on vanilla, guided and random."""
    from .report.aggregate import write_report
    from .sweep import plan_sweep, run_sweep

    settings = reproduce_settings(name)
    notes = []
    try:
        check_data(settings.dataset, data_dir)
    except FileNotFoundError as err:
        if not (quick and settings.quick_fallback):
            raise FileNotFoundError(f"{err} (or try `greedymm reproduce {name} --quick` for a quick check)") from err
        notes.append(
            f"{settings.dataset} data not found, so --quick uses the embedded {settings.quick_fallback} set instead: "
            f"these are NOT {settings.dataset} numbers. Fetch the data for the real check ({err})"
        )
        settings = reproduce_settings(settings.quick_fallback)
    seeds = tuple(seeds) if seeds else (settings.quick_seeds if quick else settings.seeds)
    epochs = settings.quick_epochs if quick else None
    out = Path(out) if out else Path("runs") / f"reproduce-{name}{'-quick' if quick else ''}"
    if quick:
        notes.append(f"--quick: {epochs} epochs, seeds {list(seeds)}; indicative only, not the full reproduction")
    for n in notes:
        echo(f"note: {n}")
    overrides = _merge(settings.overrides, settings.quick_overrides if quick else {})
    methods = tuple(methods) if methods else settings.methods
    jobs = plan_sweep([settings.dataset], methods, seeds, out, (), epochs, data_dir, overrides=overrides)
    result = run_sweep(jobs, launcher, workers, echo=echo)
    if not result.ok:
        echo(result.failure_text())
        echo(f"fix the failures (see the logs), then run the same command again; finished runs are kept in {out}")
        return 1
    report, rows = write_report(out, "md", out / "report.md", runs=[j.folder for j in jobs])
    verdicts = judge_claims(summaries_from_rows(rows))
    sources = "; ".join(dict.fromkeys(s for r in rows for s in r.sources))
    names = ", ".join(f"m{k} = {m}" for k, m in enumerate(rows[0].modalities))
    text = "\n".join(
        [
            f"# Claims of Wu et al. (ICML 2022) on {settings.dataset} ({names}; data: {sources})",
            *(f"note: {n}" for n in notes),
            "",
            format_verdicts(verdicts),
            "",
            f"report with tables and figures: {report}",
        ]
    )
    (out / "claims.md").write_text(text + "\n")
    echo(text)
    return 0
