"""MMTM fusion (Joze et al., CVPR 2020) for N branches, with the bookkeeping the greedy-learning method needs.

docs/PAPER.md sections 1-3 (Wu et al., ICML 2022), generalized as in docs/DESIGN.md sections 1-2:
    S_k = mean of branch k's map over its non-channel dims                    # (B, C_k)
    Z   = ReLU(W_s [S_1; ...; S_N] + b_s)                                     # (B, int(2 sum_k C_k / ratio))
    g_k = sigma(W_k Z + b_k)                                                  # (2 sigma as an option)
    X_k' = g_k * X_k                                                          # channel-wise
For two branches this is the paper's module exactly (same layers, created in the same order).

Modes (one per forward, chosen by the network):
    "regular"      the equations above.
    "rebalance<k>" branch k's gates are replaced by their detached running means (re-balancing step for
                   branch k, docs/PAPER.md section 5); the gate layer into branch k then gets no gradient.
    "cut"          conditional-utilization pass "cut all others" (docs/DESIGN.md section 2a): branch k's gate comes from
                   Z_k = ReLU(W_s [mean S_1; ...; S_k; ...; mean S_N]), so branch k depends on m_k alone. For two
                   branches this is docs/PAPER.md section 3's single cut pass.
    "remove<j>"    the pairwise pass: S_j is replaced by its train-split mean in Z, and every gate comes from that Z,
                   so no branch other than j depends on m_j.
Running gate means and squeeze sums are float64 buffers: float32 sums drift over the ~10^5 forwards of a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributed import all_reduce_
from ..precision import KeepsFloat64
from .modes import REGULAR, Mode

GATE_FUNCTIONS = ("sigmoid", "2sigmoid")


MMTM_KINDS = ("regular", "rebalance", "cut", "remove")


def parse_mode(mode: Mode | str, n: int) -> Mode:
    """The ``Mode`` an MMTM between ``n`` branches runs (a Mode or its name); a clear error for anything else."""
    m = Mode.parse(mode)
    if m.kind not in MMTM_KINDS or m.index >= n:
        valid = ["regular", "cut", *(f"rebalance{k}" for k in range(n)), *(f"remove{k}" for k in range(n))]
        raise ValueError(f"unknown MMTM mode {str(mode)!r}; choose one of {valid}")
    return m


def _squeeze(x: Tensor) -> Tensor:
    # (B, C, *spatial) -> (B, C)
    return x.flatten(2).mean(dim=2) if x.dim() > 2 else x


def _expand(g: Tensor, like: Tensor) -> Tensor:
    # (B, C) -> (B, C, 1, ..., 1) to broadcast over the spatial/temporal dims of `like`
    return g.view(*g.shape, *([1] * (like.dim() - 2)))


class MMTM(KeepsFloat64):
    """Multi-modal transfer module between the feature maps of N >= 2 branches with ``channels`` channels.

    ``MMTM(c0, c1)`` is the paper's two-branch module. Buffers (saved in state_dict; they follow device
    moves and stay float64 under dtype casts such as ``model.float()``):
        gate_mean<k>  running mean over training forwards of branch k's batch-mean gates (docs/PAPER.md section 2)
        gate_count    number of training forwards folded into gate_mean
        sq_mean<k>    train-split mean of S_k, used by the "cut" and "remove" modes
        sq_sum<k>, sq_count   accumulators that ``commit_means`` turns into sq_mean
    """

    def __init__(self, *channels: int, ratio: float = 4.0, gate: str = "sigmoid") -> None:
        super().__init__()
        if len(channels) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"MMTM joins two or more branches with >= 1 channels each, got channels {channels}")
        if gate not in GATE_FUNCTIONS:
            raise ValueError(f"unknown MMTM gate {gate!r}; choose one of {GATE_FUNCTIONS}")
        if not ratio > 0:
            raise ValueError(f"MMTM ratio must be > 0, got {ratio}")
        dim_z = int(2 * sum(channels) / ratio)
        if dim_z < 1:
            raise ValueError(f"MMTM ratio {ratio} leaves no squeeze units for channels {channels}; lower the ratio")
        self.channels = tuple(channels)
        self.gate_fn = gate
        self.squeeze = nn.Linear(sum(channels), dim_z)  # W_s: shared, in every psi_k
        self.gates = nn.ModuleList(nn.Linear(dim_z, c) for c in channels)  # W_k: in psi_k only
        for k, c in enumerate(channels):
            self.register_buffer(f"gate_mean{k}", torch.zeros(c, dtype=torch.float64))
            self.register_buffer(f"sq_mean{k}", torch.zeros(c, dtype=torch.float64))
            self.register_buffer(f"sq_sum{k}", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("gate_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("sq_count", torch.zeros((), dtype=torch.long))
        self.recording = False  # set by the network's recording_means() for the exact pass

    @property
    def n(self) -> int:
        return len(self.channels)

    def _gate(self, k: int, z: Tensor) -> Tensor:
        x = self.gates[k](z)
        return 2.0 * torch.sigmoid(x) if self.gate_fn == "2sigmoid" else torch.sigmoid(x)

    def buffer(self, name: str, k: int) -> Tensor:
        return getattr(self, f"{name}{k}")

    def _means(self, s: Sequence[Tensor]) -> list[Tensor]:
        return [self.buffer("sq_mean", k).to(s[k].dtype).expand_as(s[k]) for k in range(self.n)]

    def forward(self, *xs: Tensor, mode: Mode | str = REGULAR) -> tuple[Tensor, ...]:
        if len(xs) != self.n:
            raise ValueError(f"this MMTM joins {self.n} branches, got {len(xs)} feature maps")
        m = parse_mode(mode, self.n)
        kind, j = m.kind, m.index
        s = [_squeeze(x) for x in xs]  # (B, C_k) each
        if self.training or self.recording:
            self._accumulate_squeeze(s)
        if kind == "cut":
            means = self._means(s)
            g = []
            for k in range(self.n):
                parts = [s[i] if i == k else means[i] for i in range(self.n)]
                g.append(self._gate(k, torch.relu(self.squeeze(torch.cat(parts, dim=1)))))
        elif kind == "remove":
            parts = [self._means(s)[i] if i == j else s[i] for i in range(self.n)]
            z = torch.relu(self.squeeze(torch.cat(parts, dim=1)))
            g = [self._gate(k, z) for k in range(self.n)]
        else:
            z = torch.relu(self.squeeze(torch.cat(s, dim=1)))
            g = []
            for k in range(self.n):
                if k == j:  # re-balanced: still computed for the running mean, but no gradient to W_k
                    with torch.no_grad():
                        g.append(self._gate(k, z))
                else:
                    g.append(self._gate(k, z))
            if self.training:
                self._update_gate_means(g)
            if kind == "rebalance":
                g[j] = self.buffer("gate_mean", j).detach().to(g[j].dtype).expand_as(g[j])
        return tuple(x * _expand(gk, x) for x, gk in zip(xs, g, strict=True))

    @torch.no_grad()
    def _update_gate_means(self, g: list[Tensor]) -> None:
        # cumulative mean of batch-mean gates; each branch tracks its own gates (the authors' code used
        # branch 0's gates for both, a defect docs/PAPER.md section 2 fixes)
        self.gate_count += 1
        batch_means = all_reduce_(torch.cat([gk.double().mean(dim=0) for gk in g]), "mean")
        for k, bm in enumerate(batch_means.split(self.channels)):
            mean = self.buffer("gate_mean", k)
            mean += (bm - mean) / self.gate_count

    @torch.no_grad()
    def _accumulate_squeeze(self, s: Sequence[Tensor]) -> None:
        self.sq_count += s[0].shape[0]
        for k in range(self.n):
            self.buffer("sq_sum", k).add_(s[k].detach().double().sum(dim=0))

    @torch.no_grad()
    def reset_sums(self) -> None:
        self.sq_count.zero_()
        for k in range(self.n):
            self.buffer("sq_sum", k).zero_()

    @torch.no_grad()
    def commit_means(self) -> bool:
        """Set sq_mean from the accumulated sums; returns False (and keeps sq_mean) if nothing was seen."""
        for t in (self.sq_count, *(self.buffer("sq_sum", k) for k in range(self.n))):
            all_reduce_(t)  # every rank saw its own slice of the split
        if int(self.sq_count) == 0:
            return False
        for k in range(self.n):
            self.buffer("sq_mean", k).copy_(self.buffer("sq_sum", k) / self.sq_count)
        return True

    def has_means(self) -> bool:
        """False until ``commit_means`` first set sq_mean (all zero before)."""
        return any(bool(self.buffer("sq_mean", k).any()) for k in range(self.n))

    reset_squeeze_sums = reset_sums
    commit_squeeze_means = commit_means
