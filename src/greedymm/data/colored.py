"""Colored-and-gray data sets (docs/DATA.md): each item is one gray image twice, gray (m1) and colored (m0).

Construction (Kim et al. 2019 colored MNIST, paired as later work does): 10 class colors whose R, G and B
channels are each a permutation of {0.05, 0.15, ..., 0.95}. Training and validation items get
clamp(class_color + sqrt(color_var) N(0, I_3), 0, 1), strongly tied to the label; test items get a color
unrelated to the label. A pixel is colored where the gray value >= 0.3 and black elsewhere.

Two constructions (the ``colors`` option of the CG data sets):
    "ours" (default)  color_var 0.020; test colors uniform random in [0, 1]^3.
    "pmr"             as PMR's CG-MNIST file is built (jitter variance 0.030, Kim et al.'s protocol) [our
                      reading of it: the file is not public]: color_var 0.030; each test item gets the palette
                      color of a class drawn at random, independent of its label, with the same jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import MultiModalData, stratified_split

# A fixed palette: every channel a permutation of the ten levels, chosen (max-min search over permutations)
# so that the closest two class colors are as far apart as such a palette allows (0.42).
PALETTE = torch.tensor(
    [
        [0.05, 0.45, 0.95],
        [0.15, 0.75, 0.25],
        [0.25, 0.15, 0.65],
        [0.35, 0.95, 0.75],
        [0.45, 0.55, 0.55],
        [0.55, 0.65, 0.15],
        [0.65, 0.05, 0.05],
        [0.75, 0.25, 0.85],
        [0.85, 0.85, 0.45],
        [0.95, 0.35, 0.35],
    ]
)
COLOR_STD = math.sqrt(0.02)
COLOR_SCHEMES = {"ours": (0.02, "uniform"), "pmr": (0.03, "palette")}  # (jitter variance, test colors)
MASK_THRESHOLD = 0.3
MODALITIES = ("colored", "gray")  # m0, m1


def class_colors(labels: Tensor, seed: int, var: float = 0.02) -> Tensor:
    """Label-correlated colors (N, 3) for training/validation items: palette color + N(0, var) jitter."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), 3, generator=g) * math.sqrt(var)
    return (PALETTE[labels] + noise).clamp(0, 1)


def palette_colors(n: int, seed: int, var: float) -> Tensor:
    """Colors (N, 3) of classes drawn at random, independent of the label, with the training jitter."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(len(PALETTE), (n,), generator=g)
    return class_colors(classes, seed + 7, var)


def random_colors(n: int, seed: int) -> Tensor:
    """Uniform random colors (N, 3), independent of the label (the test split)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g)


def colorize(gray: Tensor, colors: Tensor) -> Tensor:
    """gray (B, 1, H, W) in [0, 1], colors (B, 3) -> (B, 3, H, W): the color where gray >= 0.3, else black."""
    mask = (gray >= MASK_THRESHOLD).to(gray.dtype)
    return mask * colors[:, :, None, None].to(gray.dtype)


@dataclass(frozen=True)
class ColoredSplit:
    """Gray images kept as uint8 (N, H, W); the colored modality is made per batch, on the fly."""

    images: Tensor  # (N, H, W) uint8
    labels: Tensor  # (N,) int64
    colors: Tensor  # (N, 3) float32

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.labels) == len(self.colors)):
            raise ValueError("images, labels and colors must have the same length")
        if len(self.images) == 0:
            raise ValueError("empty split: it holds no items; check the data files and split fractions")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        gray = self.images[idx].unsqueeze(1).float() / 255.0  # (B, 1, H, W)
        return {"colored": colorize(gray, self.colors[idx]), "gray": gray}, self.labels[idx]


def make_colored_data(
    name: str,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    source: dict,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    random_color_val: bool = False,
    colors: str = "ours",
    num_classes: int | None = None,
) -> MultiModalData:
    """Build the train / validation / test splits; validation keeps the training colors by default.

    ``num_classes``: the data set's class count when it has a fixed one (MNIST: 10); a label outside it is refused
    with its split and index. None: one more than the largest label (for data of your own)."""
    if colors not in COLOR_SCHEMES:
        raise ValueError(f"colors must be one of {sorted(COLOR_SCHEMES)} (see greedymm.data.colored), got {colors!r}")
    var, test_scheme = COLOR_SCHEMES[colors]
    train_labels, test_labels = train_labels.long(), test_labels.long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(bad := torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()):
            i = int(bad[0])
            raise ValueError(
                f"{name}: {split} label {int(labels[i])} at index {i} is outside the {num_classes} classes 0.."
                f"{num_classes - 1} ({len(bad)} such labels); labels must be 0-based class indices"
            )
    if num_classes > len(PALETTE):
        raise ValueError(
            f"{name}: {num_classes} classes, but the colored modality has a color for {len(PALETTE)} (one per class)"
        )
    keep, held = stratified_split(train_labels, val_fraction, seed=data_seed)
    train_colors = class_colors(train_labels, seed=data_seed + 1, var=var)

    def test_like(n: int, seed: int) -> Tensor:  # colors drawn as the test split's are
        return random_colors(n, seed) if test_scheme == "uniform" else palette_colors(n, seed, var)

    val_colors = test_like(len(held), data_seed + 3) if random_color_val else train_colors[held]
    test_colors = test_like(len(test_labels), data_seed + 2)

    def split(images: Tensor, labels: Tensor, colors: Tensor) -> ColoredSplit:
        return ColoredSplit(images.contiguous(), labels.contiguous(), colors.contiguous())

    return MultiModalData(
        name=name,
        modalities=MODALITIES,
        in_channels=(3, 1),
        num_classes=num_classes,
        arch="small-cnn",
        train=split(train_images[keep], train_labels[keep], train_colors[keep]),
        val=split(train_images[held], train_labels[held], val_colors),
        test=split(test_images, test_labels, test_colors),
        source=source,
    )
