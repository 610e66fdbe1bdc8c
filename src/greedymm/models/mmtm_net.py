"""Family (a): N uni-modal branches joined by N-way MMTM, one head per branch (docs/PAPER.md s. 1; docs/DESIGN.md 1a).

Branch k reads modality m_k and ends in its own linear head (logits y_k). MMTM modules join the branches after
some of their stages. The prediction is the mean of the heads' logits; the training loss is the sum of the
heads' cross-entropies. With two branches this is the paper's network, parameter for parameter. Parameter
groups theta_k / psi_k come from the module tree.

What it declares (``MultiModalNet``): training modes regular and rebalance(k); evaluation passes regular (acc,
acc_head<k>), CUT (acc_head<k>_cut: head k with every other modality at its train-split mean) and, pairwise,
remove(j) (acc_head<k>_no_m<j>); utilization u(others|m_k) from head k's accuracy with and without the others
(the paper's u_m1_given_m0, u_m0_given_m1 and d_util = u(m1|m0) - u(m0|m1) for N = 2); speed groups theta_k, psi_k
(conditional speeds s_k, d_speed); one uni-modal head per modality (the branch heads), which are also its
per-modality logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..metrics.speed import speed_names
from ..metrics.utilization import others_util_names, pairwise_utilization, utilization_rate, utilization_summary
from .branch import Branch, pool
from .fusions import ParamSlice
from .mmtm import MMTM
from .modes import CUT, REGULAR, Mode, rebalance, remove
from .network import INTERMEDIATE, EvalPass, MultiModalNet, Output, SpeedLayout, heads_loss, summed_ce


class MMTMNet(MultiModalNet):
    """N >= 2 branches fused by MMTM after the stages listed in ``fuse_after`` (0-based stage indices)."""

    family = INTERMEDIATE
    fusion = "mmtm"

    def __init__(
        self,
        branches: Sequence[Branch],
        fuse_after: Sequence[int],
        modalities: Sequence[str],
        ratio: float = 4.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__(modalities)
        if len(branches) < 2 or len(branches) != len(modalities):
            raise ValueError(
                f"MMTM fusion needs two or more branches, one per modality; got {len(branches)} branches for "
                f"modalities {list(modalities)} (a uni-modal model is a late-fusion model with one modality)"
            )
        if any(b.head is None for b in branches):
            raise ValueError("every branch of an MMTM network needs its own head (build it with num_classes)")
        n_stages = len(branches[0].stages)
        if any(len(b.stages) != n_stages for b in branches):
            raise ValueError("all branches must have the same number of stages")
        if sorted(set(fuse_after)) != list(fuse_after) or not fuse_after:
            raise ValueError(f"fuse_after must be strictly increasing and non-empty, got {fuse_after}")
        if fuse_after[0] < 0 or fuse_after[-1] >= n_stages:
            raise ValueError(f"fuse_after {fuse_after} out of range for {n_stages} stages")
        self.branches = nn.ModuleList(branches)
        self.fuse_after = tuple(fuse_after)
        self.fusions = nn.ModuleList(
            MMTM(*(b.channels[i] for b in branches), ratio=ratio, gate=gate) for i in fuse_after
        )

    # -- forward ---------------------------------------------------------------------------------------
    def _stem(self, xs: list[Tensor]) -> list[Tensor]:
        # the stages before the first MMTM do not depend on the mode, so passes can share them
        for i in range(self.fuse_after[0] + 1):
            xs = [b.stages[i](x) for b, x in zip(self.branches, xs, strict=True)]
        return xs

    def _rest(self, xs: list[Tensor], mode: Mode) -> Output:
        fusions = dict(zip(self.fuse_after, self.fusions, strict=True))
        first = self.fuse_after[0]
        for i in range(first, len(self.branches[0].stages)):
            if i > first:
                xs = [b.stages[i](x) for b, x in zip(self.branches, xs, strict=True)]
            if i in fusions:
                xs = list(fusions[i](*xs, mode=mode))
        features = tuple(pool(x) for x in xs)
        heads = tuple(b.head(z) for b, z in zip(self.branches, features, strict=True))
        return Output(self.fuse(heads), heads, features)

    def _forward_modes(self, xs: list[Tensor], modes: list[Mode]) -> dict[Mode, Output]:
        stem = self._stem(xs)
        return {mode: self._rest(stem, mode) for mode in modes}

    @staticmethod
    def fuse(heads: Sequence[Tensor]) -> Tensor:
        """The multi-modal prediction: mean of the heads' logits."""
        return sum(heads[1:], start=heads[0]) / len(heads)

    def training_modes(self) -> tuple[Mode, ...]:
        return (REGULAR, *(rebalance(k) for k in range(self.n_modalities)))

    def loss(self, out: Output, y: Tensor) -> Tensor:
        return heads_loss(out.heads, y)

    # -- evaluation ------------------------------------------------------------------------------------
    def utilization_modes(self, pairwise: bool = False) -> tuple[Mode, ...]:
        removes = tuple(remove(j) for j in range(self.n_modalities)) if pairwise else ()
        return (CUT, *removes)

    def eval_passes(self, utilization: bool = True, pairwise: bool = False) -> tuple[EvalPass, ...]:
        n = self.n_modalities

        def all_logits(out: Output) -> list[Tensor]:
            return [out.logits, *out.heads]

        def heads(out: Output) -> tuple[Tensor, ...]:
            return out.heads

        passes = [EvalPass(REGULAR, ("acc", *(f"acc_head{k}" for k in range(n))), all_logits)]
        if utilization:
            for mode in self.utilization_modes(pairwise):
                suffix = "cut" if mode == CUT else f"no_m{mode.index}"
                passes.append(EvalPass(mode, tuple(f"acc_head{k}_{suffix}" for k in range(n)), heads))
        return tuple(passes)

    def eval_loss(self, out: Output, y: Tensor) -> Tensor:
        return summed_ce(out.heads, y)

    def utilization(self, acc: Mapping[str, float], pairwise: bool = False) -> dict[str, Any]:
        n = self.n_modalities
        u = [utilization_rate(acc[f"acc_head{k}"], acc[f"acc_head{k}_cut"]) for k in range(n)]
        out: dict[str, Any] = dict(zip(others_util_names(n), u, strict=True))
        out.update(utilization_summary(u, of_others=True))
        if pairwise:
            heads = [acc[f"acc_head{k}"] for k in range(n)]
            removed = [[acc[f"acc_head{k}_no_m{j}"] for k in range(n)] for j in range(n)]
            out.update(pairwise_utilization(heads, removed))
        return out

    # -- parameter groups (docs/PAPER.md section 1, docs/DESIGN.md section 3), from the module tree ---
    def theta(self, k: int) -> list[nn.Parameter]:
        """Everything in branch k, its head included."""
        return list(self.branches[k].parameters())

    def psi(self, k: int) -> list[nn.Parameter]:
        """The shared squeeze layer of every MMTM plus the gate layer into branch k."""
        params: list[nn.Parameter] = []
        for f in self.fusions:
            params += list(f.squeeze.parameters()) + list(f.gates[k].parameters())
        return params

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """theta_0, ..., theta_{N-1}, psi_0, ..., psi_{N-1}."""
        n = self.n_modalities
        return [self.theta(k) for k in range(n)] + [self.psi(k) for k in range(n)]

    def speed_layout(self) -> SpeedLayout:
        names = speed_names(self.n_modalities)
        return SpeedLayout(conditional=True, step_names=names, total_names=names)

    # -- per modality ----------------------------------------------------------------------------------
    def encoder(self, k: int) -> nn.Module:
        """Branch k, its head included."""
        return self.branches[k]

    def encoder_head(self, k: int) -> nn.Module:
        return self.branches[k].head

    @property
    def has_unimodal_heads(self) -> bool:
        return True

    def unimodal_logits(self, inputs: dict[str, Tensor], k: int) -> Tensor:
        """Head k of the whole network with every other modality's input set to zero."""
        name = self.modalities[k]
        return self({m: inputs[m] if m == name else torch.zeros_like(inputs[m]) for m in self.modalities}).heads[k]

    @property
    def splits_per_modality(self) -> bool:
        return True

    def modality_logits(self, out: Output) -> list[Tensor]:
        """The branch heads' logits."""
        return list(out.heads)

    def modality_slices(self, k: int) -> list[ParamSlice]:
        """None: everything that reads modality k alone is in branch k (``encoder(k)``); MMTM reads them all."""
        return []

    def output_weights(self) -> list[Tensor]:
        return [b.head.weight for b in self.branches]

    def _mean_holders(self) -> list[nn.Module]:
        return list(self.fusions)
