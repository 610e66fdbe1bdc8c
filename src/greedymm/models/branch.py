"""A uni-modal branch: a backbone cut into stages, global average pooling, and (optionally) a linear head.

Backbones (small CNN, ResNet-18, I3D) are lists of stages so that fusion can sit between any two of them
(intermediate fusion, family (a) of docs/DESIGN.md) or after the last one (late fusion, family (b)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def pool(x: Tensor) -> Tensor:
    # (B, C, *spatial) -> (B, C): global average pooling over every non-channel dim
    return x.flatten(2).mean(dim=2) if x.dim() > 2 else x


class Branch(nn.Module):
    """``stages`` run in order, then global average pooling and a linear ``head`` (None: an encoder only)."""

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], num_classes: int | None) -> None:
        super().__init__()
        if len(stages) != len(channels):
            raise ValueError("a Branch needs one output channel count per stage")
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(channels)  # output channels of each stage
        self.head = nn.Linear(self.channels[-1], num_classes) if num_classes is not None else None

    @property
    def out_features(self) -> int:
        return self.channels[-1]

    def encode(self, x: Tensor) -> Tensor:
        """Every stage, then pooling: (B, C, *spatial) -> (B, out_features)."""
        for stage in self.stages:
            x = stage(x)
        return pool(x)

    def classify(self, x: Tensor) -> Tensor:
        # (B, C, *spatial) -> (B, num_classes)
        if self.head is None:
            raise RuntimeError("this Branch was built without a head (an encoder for late fusion)")
        return self.head(pool(x))


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
