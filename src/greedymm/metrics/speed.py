"""Conditional learning speed, the online proxy of Wu et al. (ICML 2022), docs/PAPER.md section 4, for N modalities.

After backward and before the optimizer step of a regular step:
    mu(P) = sum_{p in P} ||grad p||^2 / sum_{p in P} ||p||^2
    M_theta_k += mu(theta_k),  M_psi_k += mu(psi_k)                     (cumulative, regular steps only)
    s_k = log10(M_psi_k / M_theta_k)                                    (N = 2: s_0 = s(m1|m0), s_1 = s(m0|m1))
    d_speed = s_0 - s_1 (N = 2, signed)  or  max_k s_k - min_k s_k (N > 2)   (docs/DESIGN.md section 3)
Late-fusion models have no psi: the tracker then accumulates mu(theta_k) only, for diagnosis.

Squared norms: float32 norms of 4096-element rows, combined in float64 over rows, tensors and steps (relative error
~4e-9 on the ModelNet40 ResNet-18 pair, at the cost of one fused float32 norm). ``torch._foreach_norm`` in float32
was 7.5e-5 off on a 2.4M-element tensor on CPU, 2e-5 on that model.
The only host sync is one read of the cumulative sums per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..precision import KeepsFloat64

ROW = 4096  # float32 norms of rows this long are ~1e-8 accurate; rows are combined in float64


def memory_flat(t: Tensor) -> Tensor:
    """``t``'s elements as a 1-D view in memory order: ``t.view(-1)`` for a contiguous tensor, the dims permuted by
    decreasing stride for any other dense layout (channels-last, channels-last-3d, a transpose), so no layout
    copies. Only a tensor with gaps or overlaps in memory (a slice of a larger one) is copied."""
    if t.is_contiguous():
        return t.view(-1)
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))  # stable: ties keep their logical order
    p = t.permute(order)
    return p.view(-1) if p.is_contiguous() else t.reshape(-1)


def sum_sq(tensors: Sequence[Tensor], flatten: Callable[[Tensor], Tensor] = memory_flat) -> Tensor:
    """sum_t ||t||^2 as a float64 0-d tensor: float32 norms of 4096-element rows (views in memory order, no copy
    in any layout), squared and summed in float64; the few leftover elements of each tensor in float64. As fast
    as one fused float32 norm. Contiguous tensors give the same rows, hence the same bits, as a logical-order
    flatten; a channels-last tensor's rows hold its elements in another order (agreement to ~1e-9 relative).
    bf16 and fp16 tensors are normed in float32. ``flatten``: how a tensor becomes 1-D (the benchmark passes
    ``Tensor.reshape(-1)``, the logical order, which copies every non-contiguous tensor, to time what this avoids)."""
    rows, tails = [], []
    for t in tensors:
        flat = flatten(t.detach())
        k = flat.numel() // ROW * ROW
        if k:
            block = flat[:k].view(-1, ROW)
            if block.dtype in (torch.float32, torch.float64):
                rows.append(torch.linalg.vector_norm(block, dim=1))
            else:
                rows.append(torch.linalg.vector_norm(block, dim=1, dtype=torch.float32))
        if k < flat.numel():
            tails.append(flat[k:])
    total = torch.cat(rows).double().square().sum() if rows else None
    if tails:
        tail = torch.cat(tails).double().square().sum()
        total = tail if total is None else total + tail
    return total if total is not None else torch.zeros((), dtype=torch.float64)


def group_speed(params: Sequence[nn.Parameter]) -> Tensor:
    """mu(P) as a float64 0-d tensor: sum of squared gradient norms over sum of squared weight norms."""
    with torch.no_grad():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), dtype=torch.float64, device=params[0].device)
        return sum_sq(grads) / sum_sq(params).clamp_min(1e-30)


def log_speed(m_psi: float, m_theta: float) -> float:
    """log10(M_psi / M_theta); NaN before anything has been accumulated."""
    if m_psi <= 0 or m_theta <= 0:
        return math.nan
    return math.log10(m_psi / m_theta)


def d_speed(s: Sequence[float]) -> float:
    """N = 2: s_0 - s_1 (signed, the paper's); N > 2: max - min; NaN if any s_k is NaN or N < 2."""
    if len(s) < 2 or any(math.isnan(v) for v in s):
        return math.nan
    return s[0] - s[1] if len(s) == 2 else max(s) - min(s)


def speed_names(n: int) -> tuple[str, ...]:
    """Log names of s_k: the paper's for N = 2, ``s_others_given_m<k>`` otherwise."""
    if n == 2:
        return ("s_m1_given_m0", "s_m0_given_m1")
    return tuple(f"s_others_given_m{k}" for k in range(n))


def mu_names(n: int) -> tuple[str, ...]:
    """Log names of the per-branch mu(theta_k) of late-fusion models."""
    return tuple(f"mu_m{k}" for k in range(n))


class SpeedTracker(KeepsFloat64):
    """Cumulative sums M of ``n_groups`` groups as a float64 buffer (saved in checkpoints; stays float64 under
    dtype casts).

    Groups come from ``model.speed_groups()``: theta_0..theta_{N-1}, psi_0..psi_{N-1} (MMTM) or theta_k only.
    """

    def __init__(self, n_groups: int = 4, with_psi: bool = True) -> None:
        super().__init__()
        if with_psi and n_groups % 2:
            raise ValueError(f"theta and psi groups come in pairs, got {n_groups} groups")
        self.with_psi = with_psi
        self.register_buffer("sums", torch.zeros(n_groups, dtype=torch.float64))
        # this step's mu per group (logged for late fusion; not state: the next step overwrites it)
        self.register_buffer("last", torch.zeros(n_groups, dtype=torch.float64), persistent=False)

    @property
    def n(self) -> int:
        return len(self.sums) // 2 if self.with_psi else len(self.sums)

    def update(self, groups: Sequence[Sequence[nn.Parameter]]) -> None:
        """Add mu of each group, in ``speed_groups`` order."""
        if len(groups) != len(self.sums):
            raise ValueError(f"the tracker holds {len(self.sums)} groups, got {len(groups)}")
        mus = torch.stack([group_speed(g) for g in groups]).to(self.sums)
        # an fp16 step whose gradients overflowed (the loss scaler skips it) adds nothing, without a host sync
        self.last.copy_(torch.where(torch.isfinite(mus), mus, torch.zeros_like(mus)))
        self.sums += self.last

    def speeds_from(self, sums: Sequence[float]) -> list[float]:
        """s_k from host copies of the sums (MMTM); the cumulative M_theta_k themselves without psi groups."""
        if self.with_psi:
            n = self.n
            return [log_speed(sums[n + k], sums[k]) for k in range(n)]
        return list(sums)

    def speeds(self) -> tuple[list[float], float]:
        """([s_k] or [M_theta_k], d_speed) from the sums; one host sync. d_speed is NaN without psi groups."""
        s = self.speeds_from(self.sums.tolist())
        return s, d_speed(s) if self.with_psi else math.nan
