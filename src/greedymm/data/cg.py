"""The Colored-and-gray data sets: cg-digits (embedded), cg-mnist and cg-fashion (IDX files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import MultiModalData, register_dataset, stratified_split
from .colored import make_colored_data

DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 0.25


def _reject(unknown: dict) -> None:
    if unknown:
        raise ValueError(f"Colored-and-gray data sets take no options {sorted(unknown)}; they take random_color_val")


def _digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8)  # (1797, 28, 28)
    return images, torch.from_numpy(d.target).long()


@register_dataset("cg-digits", "Colored-and-gray digits from scikit-learn's 1,797 8x8 digits (embedded, no download)")
def load_cg_digits(
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    random_color_val: bool = False,
    **unknown,
) -> MultiModalData:
    _reject(unknown)
    images, labels = _digits_images()
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, seed=data_seed + 100)
    source = {
        "real_data": True,
        "source": "scikit-learn load_digits",
        "note": "1,797 real 8x8 digits upsampled to 28x28; a small demo set, not MNIST",
    }
    return make_colored_data(
        "cg-digits",
        images[train],
        labels[train],
        images[test],
        labels[test],
        source,
        val_fraction=val_fraction,
        data_seed=data_seed,
        random_color_val=random_color_val,
    )


def _idx_loader(name: str):
    def load(
        data_dir: str | Path | None = None,
        val_fraction: float = 0.1,
        data_seed: int = 0,
        random_color_val: bool = False,
        **unknown,
    ) -> MultiModalData:
        _reject(unknown)
        from .fetch import data_root, load_fetched

        tx, ty, sx, sy, info = load_fetched(name, data_root(data_dir))
        source = {
            "real_data": bool(info.get("real_data", True)),
            "source": info.get("source", "unknown"),
            "note": info.get("note", ""),
        }
        return make_colored_data(
            name,
            torch.from_numpy(tx),
            torch.from_numpy(ty),
            torch.from_numpy(sx),
            torch.from_numpy(sy),
            source,
            val_fraction=val_fraction,
            data_seed=data_seed,
            random_color_val=random_color_val,
        )

    return load


register_dataset("cg-mnist", "Colored-and-gray MNIST from IDX files (`greedymm data fetch cg-mnist`)")(
    _idx_loader("cg-mnist")
)
register_dataset("cg-fashion", "Colored-and-gray Fashion-MNIST from IDX files (`greedymm data fetch cg-fashion`)")(
    _idx_loader("cg-fashion")
)
