"""Conditional utilization rate (Wu et al., ICML 2022, SPEC.md section 3).

    u(m1|m0) = (A(f_0) - A(f_0')) / A(f_0)      what m1 adds to head 0, given m0
    u(m0|m1) = (A(f_1) - A(f_1')) / A(f_1)
    d_util   = u(m1|m0) - u(m0|m1)

f_k' is head k with the other modality's squeeze input to every MMTM replaced by its train-split mean.
Values are never clipped: A(f_k') can exceed A(f_k), which makes u negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def utilization_rate(acc_full: float, acc_cut: float) -> float:
    """(A(f) - A(f')) / A(f); NaN when A(f) is 0 (the rate is undefined, not zero)."""
    if acc_full == 0:
        return math.nan
    return (acc_full - acc_cut) / acc_full


@dataclass(frozen=True)
class Utilization:
    acc_head0: float  # A(f_0)
    acc_head1: float  # A(f_1)
    acc_head0_cut: float  # A(f_0')
    acc_head1_cut: float  # A(f_1')

    @property
    def u_m1_given_m0(self) -> float:
        return utilization_rate(self.acc_head0, self.acc_head0_cut)

    @property
    def u_m0_given_m1(self) -> float:
        return utilization_rate(self.acc_head1, self.acc_head1_cut)

    @property
    def d_util(self) -> float:
        return self.u_m1_given_m0 - self.u_m0_given_m1

    def as_dict(self) -> dict[str, float]:
        return {
            "u_m1_given_m0": self.u_m1_given_m0,
            "u_m0_given_m1": self.u_m0_given_m1,
            "d_util": self.d_util,
        }
