"""What every multi-modal network in greedymm offers, whatever its family (DESIGN.md section 1).

A network reads ``dict[modality, Tensor]`` and returns an ``Output``: the prediction's logits, the logits of every
uni-modal head it has, and the pooled feature of every modality. It names the forward modes it knows (training:
"regular" and, for MMTM, "rebalance<k>"; evaluation: the passes that measure utilization), its default loss, and
the parameter groups of the conditional learning speed, all from its module tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INTERMEDIATE = "intermediate"  # family (a): MMTM between the branches, one head per branch
LATE = "late"  # family (b): encoders, one fused head (and optional uni-modal heads)


class Output(NamedTuple):
    """One forward pass. A NamedTuple, so DistributedDataParallel finds every tensor in it."""

    logits: Tensor  # (B, num_classes): the multi-modal prediction
    heads: tuple[Tensor, ...]  # (B, num_classes) per uni-modal head, in modality order (may be empty)
    features: tuple[Tensor, ...]  # (B, d_k) pooled feature per modality, in modality order


class MultiModalNet(nn.Module):
    """Shared interface; subclasses set ``family``, ``fusion`` and implement ``forward_modes``."""

    family: str = ""
    fusion: str = ""

    def __init__(self, modalities: Sequence[str]) -> None:
        super().__init__()
        if len(set(modalities)) != len(modalities) or not modalities:
            raise ValueError(f"modalities must be distinct names, at least one, got {list(modalities)}")
        self.modalities = tuple(modalities)

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    def _inputs(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"inputs lack modalities {missing}; the model reads {list(self.modalities)}")
        return [inputs[m] for m in self.modalities]

    def forward(self, inputs: dict[str, Tensor], mode: str = "regular") -> Output:
        return self.forward_modes(inputs, [mode])[mode]

    def forward_modes(self, inputs: dict[str, Tensor], modes: Sequence[str]) -> dict[str, Output]:
        """Several modes on one batch, sharing whatever does not depend on the mode."""
        raise NotImplementedError

    # -- what the training loop and the methods ask -------------------------------------------------------
    def training_modes(self) -> tuple[str, ...]:
        """Modes a training step may run in."""
        return ("regular",)

    def utilization_modes(self, pairwise: bool = False) -> tuple[str, ...]:
        """Modes an evaluation runs besides "regular" to measure conditional utilization."""
        raise NotImplementedError

    def loss(self, out: Output, y: Tensor) -> Tensor:
        """The default training loss of the family (a method may replace it)."""
        raise NotImplementedError

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups whose gradient-to-weight ratios the speed tracker accumulates."""
        raise NotImplementedError

    def encoder(self, k: int) -> nn.Module:
        """The module that reads modality k (for methods that act on one modality's parameters)."""
        raise NotImplementedError

    # -- train-split means used by the utilization passes -------------------------------------------------
    def _mean_holders(self) -> list[nn.Module]:
        raise NotImplementedError

    def reset_squeeze_sums(self) -> None:
        for m in self._mean_holders():
            m.reset_squeeze_sums()

    def commit_squeeze_means(self) -> bool:
        return all([m.commit_squeeze_means() for m in self._mean_holders()])

    @contextmanager
    def recording_squeeze(self) -> Iterator[None]:
        """Accumulate the sums on eval-mode forwards too (the exact train-split pass)."""
        holders = self._mean_holders()
        for m in holders:
            m.record_squeeze = True
        try:
            yield
        finally:
            for m in holders:
                m.record_squeeze = False


def heads_loss(heads: Sequence[Tensor], y: Tensor) -> Tensor:
    """Sum of the heads' cross-entropies (the paper's loss for N = 2: CE(y_0, t) + CE(y_1, t))."""
    return sum((F.cross_entropy(h, y) for h in heads), start=torch.zeros((), device=y.device))
