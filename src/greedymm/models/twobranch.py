"""The two-branch multi-modal network of Wu et al. (ICML 2022), SPEC.md section 1.

Branch k reads modality m_k and ends in its own linear head (logits y_k). MMTM modules join the branches
after some of their stages. The prediction is the mean of the two heads' logits; the training loss is the sum
of the two heads' cross-entropies. Parameter groups theta_k / psi_k come from the module tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .mmtm import MMTM


class Branch(nn.Module):
    """A uni-modal branch: ``stages`` run in order, then global average pooling and a linear ``head``."""

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if len(stages) != len(channels):
            raise ValueError("a Branch needs one output channel count per stage")
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(channels)  # output channels of each stage
        self.head = nn.Linear(self.channels[-1], num_classes)

    def classify(self, x: Tensor) -> Tensor:
        # (B, C, *spatial) -> (B, num_classes)
        return self.head(x.flatten(2).mean(dim=2) if x.dim() > 2 else x)


class TwoBranchNet(nn.Module):
    """Two branches fused by MMTM after the stages listed in ``fuse_after`` (0-based stage indices)."""

    def __init__(
        self,
        branches: Sequence[Branch],
        fuse_after: Sequence[int],
        modalities: Sequence[str],
        ratio: float = 4.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__()
        if len(branches) != 2 or len(modalities) != 2:
            raise ValueError("TwoBranchNet needs exactly two branches and two modality names")
        n_stages = len(branches[0].stages)
        if len(branches[1].stages) != n_stages:
            raise ValueError("both branches must have the same number of stages")
        if sorted(set(fuse_after)) != list(fuse_after) or not fuse_after:
            raise ValueError(f"fuse_after must be strictly increasing and non-empty, got {fuse_after}")
        if fuse_after[0] < 0 or fuse_after[-1] >= n_stages:
            raise ValueError(f"fuse_after {fuse_after} out of range for {n_stages} stages")
        self.branches = nn.ModuleList(branches)
        self.modalities = tuple(modalities)
        self.fuse_after = tuple(fuse_after)
        self.fusions = nn.ModuleList(
            MMTM(branches[0].channels[i], branches[1].channels[i], ratio=ratio, gate=gate) for i in fuse_after
        )

    # -- forward ---------------------------------------------------------------------------------------
    def _inputs(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"inputs lack modalities {missing}; the model reads {list(self.modalities)}")
        return [inputs[m] for m in self.modalities]

    def _stem(self, xs: list[Tensor]) -> list[Tensor]:
        # the stages before the first MMTM do not depend on the mode, so passes can share them
        for i in range(self.fuse_after[0] + 1):
            xs = [self.branches[k].stages[i](xs[k]) for k in range(2)]
        return xs

    def _rest(self, xs: list[Tensor], mode: str) -> tuple[Tensor, Tensor]:
        fusions = dict(zip(self.fuse_after, self.fusions, strict=True))
        first = self.fuse_after[0]
        for i in range(first, len(self.branches[0].stages)):
            if i > first:
                xs = [self.branches[k].stages[i](xs[k]) for k in range(2)]
            if i in fusions:
                xs = list(fusions[i](xs[0], xs[1], mode))
        return self.branches[0].classify(xs[0]), self.branches[1].classify(xs[1])

    def forward(self, inputs: dict[str, Tensor], mode: str = "regular") -> tuple[Tensor, Tensor]:
        """Logits of head 0 and head 1, each (B, num_classes)."""
        return self._rest(self._stem(self._inputs(inputs)), mode)

    def forward_modes(self, inputs: dict[str, Tensor], modes: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
        """Several modes on one batch, sharing every layer before the first MMTM."""
        stem = self._stem(self._inputs(inputs))
        return {mode: self._rest(stem, mode) for mode in modes}

    @staticmethod
    def fuse(logits: tuple[Tensor, Tensor]) -> Tensor:
        """The multi-modal prediction: mean of the two heads' logits."""
        return (logits[0] + logits[1]) / 2

    # -- parameter groups (SPEC section 1), from the module tree -----------------------------------------
    def theta(self, k: int) -> list[nn.Parameter]:
        """Everything in branch k, its head included."""
        return list(self.branches[k].parameters())

    def psi(self, k: int) -> list[nn.Parameter]:
        """The shared squeeze layer of every MMTM plus the gate layer into branch k."""
        params: list[nn.Parameter] = []
        for f in self.fusions:
            params += list(f.squeeze.parameters()) + list(f.gates[k].parameters())
        return params

    # -- squeeze means for the utilization ("cut") pass -----------------------------------------------------
    def reset_squeeze_sums(self) -> None:
        for f in self.fusions:
            f.reset_squeeze_sums()

    def commit_squeeze_means(self) -> bool:
        return all([f.commit_squeeze_means() for f in self.fusions])

    @contextmanager
    def recording_squeeze(self) -> Iterator[None]:
        """Accumulate squeeze sums on eval-mode forwards too (the exact train-split pass)."""
        for f in self.fusions:
            f.record_squeeze = True
        try:
            yield
        finally:
            for f in self.fusions:
                f.record_squeeze = False


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
