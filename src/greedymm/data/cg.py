"""The Colored-and-gray data sets: cg-digits (embedded), cg-mnist and cg-fashion (IDX files)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import MultiModalData, register_dataset, stratified_split
from .colored import make_colored_data

CLASSES = 10  # digits and Fashion-MNIST alike: the class count is fixed, never read off the labels
DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 0.25


def _reject(unknown: dict) -> None:
    if unknown:
        raise ValueError(
            f"Colored-and-gray data sets take no options {sorted(unknown)}; they take random_color_val, "
            "colors (ours | pmr) and arch (small-cnn | pmr-convnet)"
        )


def _digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8)  # (1797, 28, 28)
    return images, torch.from_numpy(d.target).long()


Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]  # train x, y, test x, y, source


def _digits_raw(data_dir: str | Path | None, data_seed: int) -> Raw:
    images, labels = _digits_images()
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, seed=data_seed + 100)
    source = {
        "real_data": True,
        "source": "scikit-learn load_digits",
        "note": "1,797 real 8x8 digits upsampled to 28x28; a small demo set, not MNIST",
    }
    return images[train], labels[train], images[test], labels[test], source


def _idx_raw(name: str) -> Callable[[str | Path | None, int], Raw]:
    def raw(data_dir: str | Path | None, data_seed: int) -> Raw:
        from .fetch import data_root, load_fetched

        tx, ty, sx, sy, info = load_fetched(name, data_root(data_dir))
        _check_label_files(data_root(data_dir) / name, {"train": ty, "test": sy})
        source = {
            "real_data": bool(info.get("real_data", True)),
            "source": info.get("source", "unknown"),
            "note": info.get("note", ""),
        }
        return (*(torch.from_numpy(a) for a in (tx, ty, sx, sy)), source)

    return raw


def _check_label_files(folder: Path, labels: dict[str, np.ndarray]) -> None:
    """Every label of an IDX folder is one of the ``CLASSES`` digits; the first one outside is named with its file
    and index (a damaged file, or another data set's labels)."""
    from .idx import MNIST_FILES, DataFormatError, find_idx_file

    for split, values in labels.items():
        if len(bad := np.flatnonzero((values < 0) | (values >= CLASSES))):
            path = find_idx_file(folder, MNIST_FILES[f"{split}_labels"])
            i = int(bad[0])
            raise DataFormatError(
                f"{path}: label {int(values[i])} at index {i} is outside the {CLASSES} classes 0..{CLASSES - 1} "
                f"({len(bad)} such labels); the file is damaged or holds another data set's labels: delete the "
                f"folder {folder} and fetch it again (`greedymm data fetch {folder.name}`)"
            )


def _colored_loader(name: str, raw: Callable[[str | Path | None, int], Raw]) -> Callable[..., MultiModalData]:
    """The loader the registry calls: raw gray images and labels from ``raw``, colored by ``make_colored_data``."""

    def load(
        data_dir: str | Path | None = None,
        val_fraction: float = 0.1,
        data_seed: int = 0,
        random_color_val: bool = False,
        colors: str = "ours",
        arch: str = "small-cnn",
        **unknown,
    ) -> MultiModalData:
        _reject(unknown)
        if arch not in ("small-cnn", "pmr-convnet"):
            raise ValueError(f"arch must be small-cnn or pmr-convnet for {name}, got {arch!r}")
        tx, ty, sx, sy, source = raw(data_dir, data_seed)
        data = make_colored_data(
            name, tx, ty, sx, sy, {**source, "colors": colors},
            val_fraction=val_fraction, data_seed=data_seed, random_color_val=random_color_val, colors=colors,
            num_classes=CLASSES,
        )  # fmt: skip
        return dataclasses.replace(data, arch=arch)

    return load


for _name, _raw, _description in (
    ("cg-digits", _digits_raw, "Colored-and-gray digits from scikit-learn's 1,797 8x8 digits (embedded, no download)"),
    ("cg-mnist", _idx_raw("cg-mnist"), "Colored-and-gray MNIST from IDX files (`greedymm data fetch cg-mnist`)"),
    (
        "cg-fashion",
        _idx_raw("cg-fashion"),
        "Colored-and-gray Fashion-MNIST from IDX files (`greedymm data fetch cg-fashion`)",
    ),
):
    register_dataset(_name, _description, validation_like_test="data.random_color_val=true")(
        _colored_loader(_name, _raw)
    )
