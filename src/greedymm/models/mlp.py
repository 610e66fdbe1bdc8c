"""An MLP encoder for tabular views (a feature vector per item, e.g. mfeat's six views).

Three stages of Linear -> BatchNorm -> ReLU, each giving a (B, hidden) vector; MMTM can follow any of them (its
squeeze of a vector is the vector itself), so the same encoder serves both model families. ``width`` scales
the hidden size (128 at width 1).
"""

from __future__ import annotations

from torch import nn

from .branch import Branch


def mlp(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """``in_channels`` is the number of features of the view."""
    if in_channels < 1:
        raise ValueError(f"the mlp encoder needs at least one input feature, got {in_channels}")
    h = max(1, round(128 * width))
    stages = [nn.Sequential(nn.Linear(c, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)) for c in (in_channels, h, h)]
    return Branch(stages, channels=[h, h, h], num_classes=num_classes)


# MMTM after every stage
MLP_FUSE_AFTER = (0, 1, 2)
