"""Whether numbers over seeds support a verdict: the one place that decides "holds", "does not hold" or "cannot
judge" for a comparison of two methods (or of one method against a fixed value).

The rule, for a claim "a > b" (``direction="greater"``; ``"less"`` claims "a < b"):

- The interval: with ``paired=True`` (the default; run i of ``a`` and run i of ``b`` share a seed) a two-sided
  Student-t confidence interval of the mean of the per-seed differences d_i = a_i - b_i, n - 1 degrees of freedom:
  mean(d) +- t(1 - (1 - confidence) / 2, n - 1) * sd(d) / sqrt(n), sd with n - 1. With ``paired=False`` a Welch
  interval of mean(a) - mean(b) (unequal variances, Welch-Satterthwaite degrees of freedom).
- "holds" only when the interval lies entirely on the claimed side of 0, with at least ``min_n`` values on each side
  (pairs when paired), at least ``min_epochs`` epochs trained (when the caller says how many), and, when ``chance``
  is given, the better of the two mean accuracies more than ``chance_margin`` above chance.
- "does not hold" only under the same conditions, when the interval lies entirely on the opposite side of 0.
- "cannot judge" otherwise, with every reason in plain words in ``reasons`` (too few seeds or epochs, accuracy
  near chance, an interval that contains 0, values that are not finite).

A pair with a NaN or infinite value on either side is left out (and said so); the rest are compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
CANNOT_JUDGE = "cannot judge"
VERDICTS = (HOLDS, DOES_NOT_HOLD, CANNOT_JUDGE)

MIN_N = 3  # seeds: with two, one lucky seed decides and the t interval is very wide
CHANCE_MARGIN = 0.05  # accuracy within this of chance (absolute) says nothing about which method is better


@dataclass(frozen=True)
class Comparison:
    """The result of ``compare``.

    ``mean_diff``: mean of a - b (the mean of the per-seed differences when paired); ``ci``: its confidence interval
    (NaN ends when there are fewer than two values); ``n``: the number of values compared (pairs when paired, the
    smaller side otherwise); ``wins`` / ``losses`` / ``ties``: per seed (paired only; 0 otherwise), how often a
    beat b in the claimed direction, lost, or tied; ``reasons``: why the verdict is "cannot judge" (empty when it
    is "holds" or "does not hold"); ``notes``: what was left out on the way (non-finite values)."""

    verdict: str
    mean_diff: float
    ci: tuple[float, float]
    n: int
    wins: int
    losses: int
    ties: int
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    paired: bool
    direction: str
    confidence: float

    @property
    def holds(self) -> bool | None:
        """True / False / None for "holds" / "does not hold" / "cannot judge"."""
        return {HOLDS: True, DOES_NOT_HOLD: False}.get(self.verdict)

    def text(self, digits: int = 3, reasons: bool = True) -> str:
        """One line: the difference, its interval, the per-seed record, and (``reasons``) the reasons and notes."""
        f = f"{{:+.{digits}f}}"
        if math.isnan(self.mean_diff):
            out = f"no difference computed (n={self.n})"
        else:
            lo, hi = self.ci
            ci = "n/a" if math.isnan(lo) else f"[{f.format(lo)}, {f.format(hi)}]"
            pct = f"{self.confidence * 100:g}%"
            out = f"difference {f.format(self.mean_diff)}, {pct} CI {ci}, n={self.n}"
            if self.paired:
                out += f"; per seed {self.wins} better, {self.losses} worse, {self.ties} tied"
        said = [*self.reasons, *self.notes] if reasons else list(self.notes)
        return out + (f" ({'; '.join(said)})" if said else "")


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtrit  # scipy comes with scikit-learn, a dependency

    return float(stdtrit(df, p))


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = True,
    direction: str = "greater",
    confidence: float = 0.95,
    chance: float | None = None,
    chance_margin: float = CHANCE_MARGIN,
    min_n: int = MIN_N,
    epochs: int | None = None,
    min_epochs: int | None = None,
) -> Comparison:
    """Judge the claim "a > b" (``direction="greater"``) or "a < b" (``"less"``) from per-seed values.

    ``chance``: the accuracy of guessing (e.g. 0.1 for ten balanced classes); give it when a and b are accuracies.
    ``epochs`` / ``min_epochs``: how many epochs the runs trained (the fewest over the runs) and the fewest that
    can support a verdict; either None skips that check. See the module docstring for the rule."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    a, b = [float(x) for x in a], [float(x) for x in b]
    reasons: list[str] = []
    notes: list[str] = []
    if paired:
        if len(a) != len(b):
            raise ValueError(
                f"a paired comparison needs one value per seed on each side; got {len(a)} and {len(b)} values. "
                "Compare the seeds both sides share, or pass paired=False"
            )
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
        if len(pairs) < len(a):
            notes.append(f"{len(a) - len(pairs)} of {len(a)} seeds left out (a value is not finite)")
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
    else:
        fa, fb = [x for x in a if math.isfinite(x)], [y for y in b if math.isfinite(y)]
        dropped = len(a) - len(fa) + len(b) - len(fb)
        if dropped:
            notes.append(f"{dropped} value{'s' if dropped > 1 else ''} left out (not finite)")
        a, b = fa, fb
    n = len(a) if paired else min(len(a), len(b))
    sign = 1.0 if direction == "greater" else -1.0
    wins = losses = ties = 0
    mean_diff, ci = math.nan, (math.nan, math.nan)
    if paired and n:
        d = [x - y for x, y in zip(a, b, strict=True)]
        wins = sum(sign * x > 0 for x in d)
        losses = sum(sign * x < 0 for x in d)
        ties = n - wins - losses
        mean_diff = _mean(d)
        if n >= 2:
            half = t_quantile(1 - (1 - confidence) / 2, n - 1) * math.sqrt(_var(d) / n)
            ci = (mean_diff - half, mean_diff + half)
    elif not paired and a and b:
        mean_diff = _mean(a) - _mean(b)
        if len(a) >= 2 and len(b) >= 2:
            va, vb = _var(a) / len(a), _var(b) / len(b)
            se2 = va + vb
            if se2 == 0:
                ci = (mean_diff, mean_diff)
            else:
                df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
                half = t_quantile(1 - (1 - confidence) / 2, df) * math.sqrt(se2)
                ci = (mean_diff - half, mean_diff + half)
    if n < min_n:
        reasons.append(f"n={n} < {min_n} seeds")
    if epochs is not None and min_epochs is not None and epochs < min_epochs:
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''} trained < {min_epochs}")
    if chance is not None and a and b:
        best = max(_mean(a), _mean(b))
        if best - chance <= chance_margin:
            reasons.append(f"accuracy within {chance_margin:g} of chance ({chance:g}): best mean {best:.3f}")
    lo, hi = ci
    if math.isnan(lo):
        if n >= 1:
            reasons.append("no interval (fewer than two values)")
        else:
            reasons.append("nothing to compare")
        side = 0
    elif lo > 0 or hi < 0:
        side = 1 if (lo > 0) == (sign > 0) else -1
    else:
        reasons.append(f"the {confidence * 100:g}% interval [{lo:+.3f}, {hi:+.3f}] contains 0")
        side = 0
    verdict = CANNOT_JUDGE if reasons or side == 0 else HOLDS if side > 0 else DOES_NOT_HOLD
    return Comparison(
        verdict=verdict,
        mean_diff=mean_diff,
        ci=ci,
        n=n,
        wins=wins,
        losses=losses,
        ties=ties,
        reasons=tuple(reasons),
        notes=tuple(notes),
        paired=paired,
        direction=direction,
        confidence=confidence,
    )


def against(
    values: Sequence[float],
    reference: float,
    *,
    direction: str = "greater",
    confidence: float = 0.95,
    chance: float | None = None,
    chance_margin: float = CHANCE_MARGIN,
    min_n: int = MIN_N,
    epochs: int | None = None,
    min_epochs: int | None = None,
) -> Comparison:
    """Judge "mean of values > reference" (or "<" with ``direction="less"``): a one-sample t interval, i.e.
    ``compare`` against the constant ``reference`` for every seed."""
    return compare(
        values,
        [reference] * len(values),
        paired=True,
        direction=direction,
        confidence=confidence,
        chance=chance,
        chance_margin=chance_margin,
        min_n=min_n,
        epochs=epochs,
        min_epochs=min_epochs,
    )
