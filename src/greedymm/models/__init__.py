"""Backbones, MMTM fusion and the two-branch network; ``build_model`` makes one from an architecture name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .cnn import SMALL_CNN_FUSE_AFTER, small_cnn
from .i3d import I3D_FUSE_AFTER, i3d_branch
from .mmtm import MMTM
from .resnet import RESNET18_FUSE_AFTER, resnet18_branch, resnet18_small_branch
from .twobranch import Branch, TwoBranchNet

# name -> (branch builder(in_channels, num_classes, width), stages followed by MMTM)
ARCHITECTURES: dict[str, tuple[Callable[..., Branch], tuple[int, ...]]] = {
    "small-cnn": (small_cnn, SMALL_CNN_FUSE_AFTER),
    "i3d": (i3d_branch, I3D_FUSE_AFTER),
    "resnet18": (resnet18_branch, RESNET18_FUSE_AFTER),
    "resnet18-small": (resnet18_small_branch, RESNET18_FUSE_AFTER),  # 3x3 stride-1 stem for tiny CPU images
}


def build_model(
    arch: str,
    modalities: Sequence[str],
    in_channels: Sequence[int],
    num_classes: int,
    width: float = 1.0,
    gate: str = "sigmoid",
    ratio: float = 4.0,
) -> TwoBranchNet:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if width <= 0:
        raise ValueError(f"width must be > 0 (1.0 is the paper's size), got {width}")
    make, fuse_after = ARCHITECTURES[arch]
    branches = [make(c, num_classes, width=width) for c in in_channels]
    return TwoBranchNet(branches, fuse_after, modalities, ratio=ratio, gate=gate)


__all__ = ["ARCHITECTURES", "MMTM", "Branch", "TwoBranchNet", "build_model"]
