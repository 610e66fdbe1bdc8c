"""The small CNN branch used for Colored-and-gray MNIST (docs/PAPER.md section 1).

BN on the input, conv5x5 32, max-pool, conv3x3 32, conv3x3 64 stride 2, conv3x3 64, global average pool.
Stages are cut so that MMTM can follow each of the last three convolutions.
"""

from __future__ import annotations

from torch import nn

from .branch import Branch


def small_cnn(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    c1, c2 = max(1, round(32 * width)), max(1, round(64 * width))
    stages = [
        nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ),  # (B, c1, H/2, W/2)
        nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(inplace=True)),  # (B, c1, H/2, W/2)
        nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True)),  # (B, c2, H/4, W/4)
        nn.Sequential(nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(inplace=True)),  # (B, c2, H/4, W/4)
    ]
    return Branch(stages, channels=[c1, c1, c2, c2], num_classes=num_classes)


# MMTM after the last three conv stages (our choice; the paper's placement for CG-MNIST is not public)
SMALL_CNN_FUSE_AFTER = (1, 2, 3)


def pmr_convnet(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """PMR's CG-MNIST encoder (``convnet`` of the official code, docs/BASELINES.md section 7): BN on the input,
    conv5x5 32 + ReLU, max-pool 3 stride 2, conv3x3 32 + ReLU, conv3x3 64 stride 2 + ReLU, conv3x3 64 + ReLU,
    average pool, Linear(64 -> 512) without activation: a 512-d feature. Conv biases kept; Linear xavier-normal
    with zero bias, conv kaiming-normal (fan_out, ReLU), as its init."""
    c1, c2, d = max(1, round(32 * width)), max(1, round(64 * width)), max(1, round(512 * width))
    stages = [
        nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ),  # (B, c1, H/2, W/2)
        nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True)),  # (B, c2, H/4, W/4)
        nn.Sequential(
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c2, d),
        ),  # (B, d): the encoder's feature
    ]
    for m in nn.ModuleList(stages).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return Branch(stages, channels=[c1, c1, c2, d], num_classes=num_classes)
