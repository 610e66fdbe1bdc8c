"""MMTM fusion (Joze et al., CVPR 2020) with the bookkeeping the greedy-learning method needs.

SPEC.md sections 1-3 (Wu et al., ICML 2022):
    S_A = mean of A over non-channel dims, S_B likewise                     # (B, C_a), (B, C_b)
    Z   = ReLU(W_s [S_A ; S_B] + b_s)                                       # (B, int(2 (C_a + C_b) / ratio))
    g_A = sigma(W_A Z + b_A),  g_B = sigma(W_B Z + b_B)
    A'  = g_A * A,  B' = g_B * B                                            # channel-wise

Modes (one per forward, chosen by the network):
    "regular"      the equations above.
    "rebalance0/1" branch k's gates are replaced by their detached running means (re-balancing step for
                   branch k, SPEC section 5); the gate layer into branch k then gets no gradient.
    "cut"          conditional-utilization pass (section 3): Z_A from [S_A ; mean(S_B)], Z_B from
                   [mean(S_A) ; S_B], so branch k's output depends on m_k alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributed import all_reduce_

MODES = ("regular", "rebalance0", "rebalance1", "cut")
GATE_FUNCTIONS = ("sigmoid", "2sigmoid")


def _squeeze(x: Tensor) -> Tensor:
    # (B, C, *spatial) -> (B, C)
    return x.flatten(2).mean(dim=2) if x.dim() > 2 else x


def _expand(g: Tensor, like: Tensor) -> Tensor:
    # (B, C) -> (B, C, 1, ..., 1) to broadcast over the spatial/temporal dims of `like`
    return g.view(*g.shape, *([1] * (like.dim() - 2)))


class MMTM(nn.Module):
    """Multi-modal transfer module between feature maps of branch 0 (channels c0) and branch 1 (c1).

    Buffers (saved in state_dict, follow ``.to``):
        gate_mean0/1  running mean over training forwards of the batch-mean gates (SPEC section 2)
        gate_count    number of training forwards folded into gate_mean
        sq_mean0/1    train-split mean of the squeeze vectors S_A / S_B, used by the "cut" mode
        sq_sum0/1, sq_count   accumulators that ``commit_squeeze_means`` turns into sq_mean
    """

    def __init__(self, c0: int, c1: int, ratio: float = 4.0, gate: str = "sigmoid") -> None:
        super().__init__()
        if gate not in GATE_FUNCTIONS:
            raise ValueError(f"unknown MMTM gate {gate!r}; choose one of {GATE_FUNCTIONS}")
        if ratio <= 0:
            raise ValueError(f"MMTM ratio must be > 0, got {ratio}")
        dim_z = int(2 * (c0 + c1) / ratio)
        self.channels = (c0, c1)
        self.gate_fn = gate
        self.squeeze = nn.Linear(c0 + c1, dim_z)  # W_s: shared, in psi_0 and psi_1
        self.gates = nn.ModuleList([nn.Linear(dim_z, c0), nn.Linear(dim_z, c1)])  # W_A (psi_0), W_B (psi_1)
        for k, c in enumerate(self.channels):
            self.register_buffer(f"gate_mean{k}", torch.zeros(c))
            self.register_buffer(f"sq_mean{k}", torch.zeros(c))
            self.register_buffer(f"sq_sum{k}", torch.zeros(c))
        self.register_buffer("gate_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("sq_count", torch.zeros((), dtype=torch.long))
        self.record_squeeze = False  # set by TwoBranchNet.recording_squeeze() for the exact pass

    def _act(self, x: Tensor) -> Tensor:
        return 2.0 * torch.sigmoid(x) if self.gate_fn == "2sigmoid" else torch.sigmoid(x)

    def _gate(self, k: int, z: Tensor) -> Tensor:
        return self._act(self.gates[k](z))

    def buffer(self, name: str, k: int) -> Tensor:
        return getattr(self, f"{name}{k}")

    def forward(self, a: Tensor, b: Tensor, mode: str = "regular") -> tuple[Tensor, Tensor]:
        s = (_squeeze(a), _squeeze(b))  # (B, c0), (B, c1)
        if self.training or self.record_squeeze:
            self._accumulate_squeeze(s)
        if mode == "cut":
            n = a.shape[0]
            m0 = self.sq_mean0.to(a.dtype).expand(n, -1)
            m1 = self.sq_mean1.to(b.dtype).expand(n, -1)
            z0 = torch.relu(self.squeeze(torch.cat([s[0], m1], dim=1)))
            z1 = torch.relu(self.squeeze(torch.cat([m0, s[1]], dim=1)))
            g = (self._gate(0, z0), self._gate(1, z1))
        else:
            z = torch.relu(self.squeeze(torch.cat(s, dim=1)))
            rebalanced = {"rebalance0": 0, "rebalance1": 1}.get(mode)
            if rebalanced is None and mode != "regular":
                raise ValueError(f"unknown MMTM mode {mode!r}; choose one of {MODES}")
            g = []
            for k in range(2):
                if k == rebalanced:
                    with torch.no_grad():  # still computed for the running mean, but no gradient to W_k
                        gk = self._gate(k, z)
                else:
                    gk = self._gate(k, z)
                g.append(gk)
            if self.training:
                self._update_gate_means(g)
            if rebalanced is not None:
                mean = self.buffer("gate_mean", rebalanced).detach()
                g[rebalanced] = mean.to(g[rebalanced].dtype).expand_as(g[rebalanced])
        return a * _expand(g[0], a), b * _expand(g[1], b)

    @torch.no_grad()
    def _update_gate_means(self, g: list[Tensor]) -> None:
        # cumulative mean of batch-mean gates; each branch tracks its own gates (the authors' code used
        # branch 0's gates for both, a defect SPEC section 2 fixes)
        self.gate_count += 1
        batch_means = all_reduce_(torch.cat([g[0].float().mean(dim=0), g[1].float().mean(dim=0)]), "mean")
        for k, bm in enumerate(batch_means.split(self.channels)):
            mean = self.buffer("gate_mean", k)
            mean += (bm - mean) / self.gate_count

    @torch.no_grad()
    def _accumulate_squeeze(self, s: tuple[Tensor, Tensor]) -> None:
        self.sq_count += s[0].shape[0]
        for k in range(2):
            self.buffer("sq_sum", k).add_(s[k].detach().float().sum(dim=0))

    @torch.no_grad()
    def reset_squeeze_sums(self) -> None:
        self.sq_count.zero_()
        for k in range(2):
            self.buffer("sq_sum", k).zero_()

    @torch.no_grad()
    def commit_squeeze_means(self) -> bool:
        """Set sq_mean from the accumulated sums; returns False (and keeps sq_mean) if nothing was seen."""
        for t in (self.sq_count, self.sq_sum0, self.sq_sum1):
            all_reduce_(t)  # every rank saw its own slice of the split
        if int(self.sq_count) == 0:
            return False
        for k in range(2):
            self.buffer("sq_mean", k).copy_(self.buffer("sq_sum", k) / self.sq_count)
        return True
