"""I3D: Inception-v1 inflated to 3-D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017).

The NVGesture branch of Wu et al. (ICML 2022), docs/PAPER.md section 1. Written here from the published layer table;
inputs are (B, C, T, H, W), trained from scratch (no Kinetics weights: none can be fetched here).

Layers (channel counts of Inception-v1, Szegedy et al. 2015, Table 1; every k x k kernel inflated to k x k x k):
    stem      Conv 7^3/2 (64) - MaxPool 1x3x3/1x2x2 - Conv 1^3 (64) - Conv 3^3 (192) - MaxPool 1x3x3/1x2x2
    Mixed_3b  (64, 96->128, 16->32, pool->32) = 256      Mixed_3c (128, 128->192, 32->96, 64) = 480
    MaxPool 3^3/2
    Mixed_4b..4f  = 512, 512, 512, 528, 832
    MaxPool 2^3/2
    Mixed_5b, Mixed_5c = 832, 1024
    global average pool + linear head (Branch.classify)
An Inception block's four branches are: 1^3 conv | 1^3 conv -> 3^3 conv | 1^3 conv -> 3^3 conv | 3^3 max-pool ->
1^3 conv (I3D uses 3^3 kernels in both middle branches, where 2-D Inception-v1 had 3x3 and 5x5). Every
convolution is followed by BatchNorm and ReLU and has no bias (BN's shift replaces it). Pools use TensorFlow's
"SAME" padding, as the reference I3D does, so that small clips (8 frames, 32 px in tests) still pass through.
``width`` multiplies every channel count (at least 1 channel).

Stages (one per row of ``I3D_STAGE_NAMES``): the stem, then one stage per Inception block, the max-pool in front
of Mixed_4b and Mixed_5b belonging to that block's stage. Stage k's output is what MMTM k may fuse.

Where MMTM goes (``I3D_FUSE_AFTER``): after Mixed_4f, Mixed_5b and Mixed_5c, the last three Inception blocks.
docs/PAPER.md puts MMTM "in the late Inception blocks (as in the MMTM paper)". We could not retrieve the text of the
MMTM paper's hand-gesture section with the search tools available here, and its public code (haamoon/mmtm)
covers only NTU RGB+D, where it places three MMTMs after the last three stages of the visual network; Wu et
al.'s public code does the same for ModelNet40 (ResNet-18 layer2..4). We follow that pattern: three MMTMs on the
last three Inception blocks, where features are most semantic and channel gating is cheap. Every Inception block
is its own stage, so another placement (e.g. after Mixed_3c, Mixed_4f, Mixed_5c, the ends of the three
Inception groups) is a one-line change of this tuple.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .branch import Branch

# Inception block name -> (1^3, 3^3 reduce, 3^3, 3^3 reduce, 3^3, pool projection), Inception-v1 Table 1.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# the max-pool that opens an Inception group: block name -> (kernel, stride), both (T, H, W)
_POOL_BEFORE: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),  # MaxPool3d_4a_3x3
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),  # MaxPool3d_5a_2x2
}
I3D_STAGE_NAMES: tuple[str, ...] = ("stem", *INCEPTION_CHANNELS)
I3D_FUSE_AFTER: tuple[int, ...] = tuple(I3D_STAGE_NAMES.index(n) for n in ("Mixed_4f", "Mixed_5b", "Mixed_5c"))


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class Unit3d(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU, with "same" padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class SamePadMaxPool3d(nn.Module):
    """Max-pool with TensorFlow "SAME" padding: output size ceil(n / stride), whatever n.

    Padding is computed per input (like the reference I3D) and filled with -inf, so it never wins the max.
    """

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        pad: list[int] = []
        # F.pad lists the last dim first: (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)
        for n, k, s in reversed(list(zip(x.shape[2:], self.kernel, self.stride, strict=True))):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pad += [total // 2, total - total // 2]
        if any(pad):
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding=SAME"


class InceptionBlock3d(nn.Module):
    """Four parallel branches concatenated on channels; ``channels`` as in INCEPTION_CHANNELS."""

    def __init__(self, c_in: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        b0, b1r, b1, b2r, b2, b3 = channels
        self.branch0 = Unit3d(c_in, b0, 1)
        self.branch1 = nn.Sequential(Unit3d(c_in, b1r, 1), Unit3d(b1r, b1, 3))
        self.branch2 = nn.Sequential(Unit3d(c_in, b2r, 1), Unit3d(b2r, b2, 3))
        self.branch3 = nn.Sequential(SamePadMaxPool3d((3, 3, 3), (1, 1, 1)), Unit3d(c_in, b3, 1))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


def i3d_branch(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """An I3D branch for (B, in_channels, T, H, W) clips, ending in a ``num_classes`` linear head.

    (T, H, W) through the stages for an 8 x 112 x 112 clip: stem and Mixed_3b/3c (4, 14, 14), Mixed_4b..4f
    (2, 7, 7), Mixed_5b/5c (1, 4, 4). At full width the branch has 12,697,264 parameters with a 400-way head
    (Quo Vadis, Table 1: "12M" per I3D stream).
    """
    if in_channels < 1 or (num_classes is not None and num_classes < 1):
        raise ValueError(f"i3d_branch needs in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}")
    if width <= 0:
        raise ValueError(f"width must be > 0 (1.0 is the published I3D), got {width}")
    c64, c192 = _scaled(64, width), _scaled(192, width)
    stem = nn.Sequential(
        Unit3d(in_channels, c64, 7, stride=2),  # Conv3d_1a_7x7: (B, 64, T/2, H/2, W/2)
        SamePadMaxPool3d((1, 3, 3), (1, 2, 2)),  # MaxPool3d_2a_3x3: space only, time is kept early
        Unit3d(c64, c64, 1),  # Conv3d_2b_1x1
        Unit3d(c64, c192, 3),  # Conv3d_2c_3x3
        SamePadMaxPool3d((1, 3, 3), (1, 2, 2)),  # MaxPool3d_3a_3x3: (B, 192, T/2, H/8, W/8)
    )
    stages: list[nn.Module] = [stem]
    channels = [c192]
    for name, spec in INCEPTION_CHANNELS.items():
        block = InceptionBlock3d(channels[-1], tuple(_scaled(c, width) for c in spec))
        if name in _POOL_BEFORE:
            stages.append(nn.Sequential(SamePadMaxPool3d(*_POOL_BEFORE[name]), block))
        else:
            stages.append(block)
        channels.append(block.out_channels)
    return Branch(stages, channels=channels, num_classes=num_classes)
