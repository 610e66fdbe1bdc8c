"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as a two-branch ``Branch``.

The ModelNet40 branch of Wu et al. (ICML 2022), docs/PAPER.md section 1: ResNet-18 from scratch, 40-way head, MMTM
after layer2, layer3 and layer4. Layout (ImageNet variant, table 1 of the ResNet paper):

    stem    conv7x7 64 stride 2, BN, ReLU, maxpool3x3 stride 2      # (B, 64, H/4, W/4)
    layer1  2 BasicBlocks, 64 channels                                # (B, 64, H/4, W/4)
    layer2  2 BasicBlocks, 128 channels, first one stride 2           # (B, 128, H/8, W/8)
    layer3  2 BasicBlocks, 256 channels, first one stride 2           # (B, 256, H/16, W/16)
    layer4  2 BasicBlocks, 512 channels, first one stride 2           # (B, 512, H/32, W/32)
    global average pool, linear head (made by ``Branch``)

A BasicBlock is conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (identity, or conv1x1-BN when the shape changes),
then ReLU. Stages of the Branch: [stem + layer1, layer2, layer3, layer4], so MMTM indices are (1, 2, 3).
With width 1.0 and a 1000-way head the network has the standard 11,689,512 parameters.

Under ``--channels-last`` on the CPU the last stage stays contiguous (``stays_contiguous``, greedymm.precision):
its maps are 4x4 to 7x7 at 112-224 px, where the CPU's channels-last convolutions and weight casts cost more than
contiguous ones (benchmarks/bench_precision.py). Without channels-last nothing changes (the input is contiguous).

``resnet18_small_branch`` swaps the stem for conv3x3 stride 1 without max-pool (the usual CIFAR-size variant),
so tiny CPU images (32-64 px) are not reduced to 1x1 before layer4.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..precision import stays_contiguous
from .branch import Branch

RESNET18_CHANNELS = (64, 128, 256, 512)
RESNET18_BLOCKS = (2, 2, 2, 2)
# MMTM after layer2, layer3 and layer4 (0-based Branch stages; stage 0 is stem + layer1)
RESNET18_FUSE_AFTER = (1, 2, 3)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (projection when stride or channels change).
    ``contiguous``: keep this block contiguous under channels-last on the CPU (its weights and its input)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, contiguous: bool = False) -> None:
        super().__init__()
        self.stays_contiguous = contiguous
        # convs feed BN, whose shift makes a conv bias redundant
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        if stays_contiguous(self, x):
            x = x.contiguous()  # a no-op for a contiguous input
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _layer(c_in: int, c_out: int, blocks: int, stride: int, contiguous: bool = False) -> nn.Sequential:
    first = BasicBlock(c_in, c_out, stride, contiguous)
    return nn.Sequential(first, *(BasicBlock(c_out, c_out, contiguous=contiguous) for _ in range(blocks - 1)))


def _init(module: nn.Module) -> None:
    # He et al. 2015 init for ReLU nets (fan_out, as in the ResNet paper's reference code); BN starts as identity
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18_channels(width: float = 1.0) -> tuple[int, ...]:
    """Output channels of the four stages at ``width`` (each at least 1)."""
    if width <= 0:
        raise ValueError(f"width must be > 0 (1.0 is the standard ResNet-18), got {width}")
    return tuple(max(1, round(c * width)) for c in RESNET18_CHANNELS)


def _resnet18(in_channels: int, num_classes: int | None, width: float, small_input: bool) -> Branch:
    c = resnet18_channels(width)
    if small_input:
        stem = [nn.Conv2d(in_channels, c[0], 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU()]
    else:
        stem = [
            nn.Conv2d(in_channels, c[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
    stages = [nn.Sequential(*stem, _layer(c[0], c[0], RESNET18_BLOCKS[0], stride=1))]
    for i in range(1, 4):
        stages.append(_layer(c[i - 1], c[i], RESNET18_BLOCKS[i], stride=2, contiguous=i == 3))
    branch = Branch(stages, channels=c, num_classes=num_classes)
    _init(branch.stages)  # the head keeps nn.Linear's default init
    return branch


def resnet18_branch(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """ResNet-18 branch (ImageNet stem): stages [stem + layer1, layer2, layer3, layer4], channels 64..512 * width."""
    return _resnet18(in_channels, num_classes, width, small_input=False)


def resnet18_small_branch(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """ResNet-18 branch for tiny images: conv3x3 stride-1 stem, no max-pool (4x less downsampling)."""
    return _resnet18(in_channels, num_classes, width, small_input=True)
