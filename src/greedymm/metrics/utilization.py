"""Conditional utilization rate (Wu et al., ICML 2022; docs/PAPER.md section 3) for N modalities (docs/DESIGN.md 2).

    u = (A(f) - A(f')) / A(f)       never clipped; NaN when A(f) = 0

Family (a), MMTM: f_k' is head k with every other modality's squeeze input replaced by its train-split mean
("cut all others"); u(others|m_k) is what the other modalities add to head k. For N = 2: u(m1|m0) = u(others|m0),
u(m0|m1) = u(others|m1) and d_util = u(m1|m0) - u(m0|m1) (the paper's, signed). The least-used modality is the
one whose own head leans most on the others: argmax_k u(others|m_k) (N = 2: m0 when d_util > 0).
Family (b), late fusion: u(m_j) = (A(f) - A(f^{-j})) / A(f), f^{-j} with z_j replaced by its train-split mean.
For N = 2, d_util = u(m1) - u(m0), so d_util > 0 again means m0 is the under-used one; least used: argmin_j u(m_j).
For any N the spread max - min summarizes the imbalance.
These are pure formulas on accuracies; which passes give the accuracies is each network's to say
(``MultiModalNet.eval_passes`` and ``MultiModalNet.utilization``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def utilization_rate(acc_full: float, acc_cut: float) -> float:
    """(A(f) - A(f')) / A(f); NaN when A(f) is 0 (the rate is undefined, not zero)."""
    if acc_full == 0:
        return math.nan
    return (acc_full - acc_cut) / acc_full


def others_util_names(n: int) -> tuple[str, ...]:
    """Names of u(others|m_k), what the other modalities add to head k: the paper's for N = 2
    (u_m1_given_m0, u_m0_given_m1), ``u_others_given_m<k>`` otherwise."""
    if n == 2:
        return ("u_m1_given_m0", "u_m0_given_m1")
    return tuple(f"u_others_given_m{k}" for k in range(n))


def own_util_names(n: int) -> tuple[str, ...]:
    """Names of u(m_j), what modality j adds to the prediction: ``u_m<j>``."""
    return tuple(f"u_m{j}" for j in range(n))


# the per-modality rate names a results.jsonl record holds, by the "family" it records (for readers of old records)
_NAMES_OF_RECORD = {"intermediate": others_util_names, "late": own_util_names}


def util_names(n: int, family: str) -> tuple[str, ...]:
    """The per-modality rate names in a record whose "family" field is ``family``."""
    if family not in _NAMES_OF_RECORD:
        raise ValueError(f"unknown model family {family!r} in a record; known: {sorted(_NAMES_OF_RECORD)}")
    return _NAMES_OF_RECORD[family](n)


def utilization_summary(u: Sequence[float], *, of_others: bool) -> dict[str, Any]:
    """d_util (N = 2), spread (max - min) and the index of the least-used modality (None if undefined).

    ``of_others``: u[k] is what the other modalities add to modality k's head (MMTM), so a large u[k] means m_k
    is the under-used one: d_util = u[0] - u[1], least used argmax. Otherwise u[j] is what modality j adds
    (late fusion): d_util = u[1] - u[0], least used argmin. Either way d_util > 0 means m0 is the under-used one.
    """
    if not isinstance(of_others, bool):
        raise TypeError(
            f"of_others must be True (MMTM's u(others|m_k)) or False (late fusion's u(m_j)), got {of_others!r}"
        )
    out: dict[str, Any] = {}
    defined = not any(math.isnan(v) for v in u)
    if len(u) == 2:
        out["d_util"] = u[0] - u[1] if of_others else u[1] - u[0]
    out["util_spread"] = max(u) - min(u) if defined and u else math.nan
    if defined and len(u) >= 2:
        pick = max if of_others else min
        out["least_used"] = pick(range(len(u)), key=lambda k: u[k])
    else:
        out["least_used"] = None
    return out


def pairwise_utilization(acc_heads: Sequence[float], acc_removed: Sequence[Sequence[float]]) -> dict[str, float]:
    """MMTM, optional: u(m_j|m_k) = (A(f_k) - A(f_k^{-j})) / A(f_k) for j != k; acc_removed[j][k] = A(f_k^{-j})."""
    n = len(acc_heads)
    return {
        f"u_m{j}_given_m{k}": utilization_rate(acc_heads[k], acc_removed[j][k])
        for j in range(n)
        for k in range(n)
        if j != k
    }
