"""Conditional learning speed, the online proxy of Wu et al. (ICML 2022), SPEC.md section 4.

After backward and before the optimizer step of a regular step:
    mu(P) = sum_{p in P} ||grad p||^2 / sum_{p in P} ||p||^2
    M_theta_k += mu(theta_k),  M_psi_k += mu(psi_k)                     (cumulative, regular steps only)
    s(m1|m0) = log10(M_psi_0 / M_theta_0),  s(m0|m1) = log10(M_psi_1 / M_theta_1)
    d_speed  = s(m1|m0) - s(m0|m1)

The norms of a whole group are computed with fused multi-tensor kernels and stay on the device; the only host
sync is one read of the four cumulative sums per step (the authors' code paid one per parameter tensor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _sum_sq(tensors: Sequence[Tensor]) -> Tensor:
    norms = torch._foreach_norm(list(tensors))  # one fused kernel per device/dtype
    return torch.stack(norms).float().square().sum()


def group_speed(params: Sequence[nn.Parameter]) -> Tensor:
    """mu(P) as a 0-d tensor: sum of squared gradient norms over sum of squared weight norms."""
    with torch.no_grad():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=params[0].device)
        return _sum_sq(grads) / _sum_sq([p for p in params]).clamp_min(1e-30)


def log_speed(m_psi: float, m_theta: float) -> float:
    """log10(M_psi / M_theta); NaN before anything has been accumulated."""
    if m_psi <= 0 or m_theta <= 0:
        return math.nan
    return math.log10(m_psi / m_theta)


class SpeedTracker(nn.Module):
    """Cumulative sums M_theta_0, M_theta_1, M_psi_0, M_psi_1 as a buffer (saved with the method state)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(4, dtype=torch.float64))  # theta0, theta1, psi0, psi1

    def update(self, groups: Sequence[Sequence[nn.Parameter]]) -> None:
        """Add mu of each group (theta_0, theta_1, psi_0, psi_1, in that order)."""
        mus = torch.stack([group_speed(g) for g in groups]).to(self.sums)
        self.sums += mus

    def speeds(self) -> tuple[float, float, float]:
        """(s(m1|m0), s(m0|m1), d_speed) from the sums; one host sync."""
        t0, t1, p0, p1 = self.sums.tolist()
        s10, s01 = log_speed(p0, t0), log_speed(p1, t1)
        return s10, s01, s10 - s01
