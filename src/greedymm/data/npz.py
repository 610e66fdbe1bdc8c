"""Your own arrays as a data set: one ``.npz`` file, or a folder of them (``--dataset npz:PATH``).

A file holds one array per modality, named as you like (the names are kept in every log, table and report), with
the items along the first axis, and the labels:

- ``labels`` (or ``y``): integer class indices 0..K-1, shape (N,);
- every other array: one modality, shape (N, ...) and numeric (float, int or bool; cast to float32);
- optional ``split``: (N,) split ids, ``"train"`` / ``"val"`` / ``"test"`` or 0 / 1 / 2.

A folder: every ``*.npz`` in it, in name order, with the same modality names and item shapes. Files named
``train.npz``, ``val.npz`` and ``test.npz`` hold those splits (a ``split`` array in them is not needed); the items
of any other file go by their ``split`` array, or, without one, are split as below.

Items without a split id are split stratified by label with ``data_seed``: ``test_fraction`` (default 0.2) to
test, then ``val_fraction`` of the rest to validation. Items marked train are split into train and validation the
same way when no item is marked validation.

The backbone follows each item's shape (the same for every modality): a vector (D,) is a table (``mlp``), a
(C, L) array a 1-D signal (``seq1d``; a mask channel of ones is appended: every item is real to its end), a
(C, H, W) array an image (``small-cnn``). ``arch`` chooses another. With ``standardize`` (default true) every
feature (tables) or channel (signals, images) is set to zero mean and unit std with the training split's
statistics. Options: ``--set data.test_fraction=0.3``, ``data.arch=mlp``, ``data.standardize=false``,
``data.classes=K`` (default: the largest label + 1).

A file that cannot be used is refused with its name, the key, and what to change.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import MultiModalData, register_dataset, stratified_split

LABEL_KEYS = ("labels", "y")
SPLIT_KEY = "split"
SPLIT_FILES = ("train", "val", "test")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, 0: 0, 1: 1, 2: 2}
ARCH_BY_RANK = {1: "mlp", 2: "seq1d", 3: "small-cnn"}
OPTIONS = ("path", "test_fraction", "arch", "standardize", "classes")


class NpzFormatError(ValueError):
    """A file that is not a data set greedymm can read; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class ArraySplit:
    """Items in memory: each modality (N, ...) float32, labels (N,) int64."""

    arrays: dict[str, Tensor]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        return {m: a[idx] for m, a in self.arrays.items()}, self.labels[idx]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise NpzFormatError(
                f"npz: the folder {path} holds no .npz files; put one array per modality and labels in each"
            )
        return files
    raise FileNotFoundError(
        f"npz: no file or folder {path}; give --dataset npz:PATH with a .npz file or a folder of them"
    )


def _read(file: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(file):
        raise NpzFormatError(f"npz: {file} is not a readable .npz file (not a zip archive); write it with numpy.savez")
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise NpzFormatError(f"npz: {file} is not a readable .npz file ({e}); write it with numpy.savez") from None
    except ValueError as e:  # object arrays need pickle: refused, no code in a data file may run
        raise NpzFormatError(
            f"npz: {file} holds an object array ({e}); save numeric arrays (and string split ids as a str array)"
        ) from None


def _labels(file: Path, arrays: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    keys = [k for k in LABEL_KEYS if k in arrays]
    if not keys:
        raise NpzFormatError(
            f"npz: {file} has no labels; its keys are {sorted(arrays)}. Save the class indices as 'labels' "
            "(numpy.savez(path, labels=y, <modality>=x, ...))"
        )
    if len(keys) > 1:
        raise NpzFormatError(f"npz: {file} has both 'labels' and 'y'; keep one of them as the labels")
    key = keys[0]
    y = arrays[key]
    if y.ndim != 1:
        raise NpzFormatError(f"npz: {file} key {key!r}: labels must have shape (N,), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise NpzFormatError(
            f"npz: {file} key {key!r}: labels have dtype {y.dtype}; they must be integer class indices 0..K-1 "
            "(map names to indices first, e.g. numpy.unique(names, return_inverse=True)[1])"
        )
    if len(y) and y.min() < 0:
        raise NpzFormatError(f"npz: {file} key {key!r}: labels must be >= 0 (class indices), found {int(y.min())}")
    return key, y.astype(np.int64)


def _split_ids(file: Path, raw: np.ndarray, n: int) -> np.ndarray:
    if raw.shape != (n,):
        raise NpzFormatError(f"npz: {file} key 'split': shape {raw.shape}, expected ({n},), one id per item")
    values = [v.item() if hasattr(v, "item") else v for v in raw]
    bad = sorted({str(v) for v in values if v not in SPLIT_IDS})
    if bad:
        raise NpzFormatError(
            f"npz: {file} key 'split': unknown split ids {bad[:5]}; use 'train' / 'val' / 'test' or 0 / 1 / 2"
        )
    return np.asarray([SPLIT_IDS[v] for v in values], dtype=np.int64)


def _modalities(file: Path, arrays: dict[str, np.ndarray], label_key: str, n: int) -> dict[str, np.ndarray]:
    out = {}
    for key, a in arrays.items():
        if key in (label_key, SPLIT_KEY):
            continue
        if a.dtype.kind not in "fiub":
            raise NpzFormatError(
                f"npz: {file} key {key!r}: dtype {a.dtype} is not numeric; a modality must be a float, int or bool "
                "array (or rename the key if it is not a modality)"
            )
        if a.ndim < 2 or a.shape[0] != n:
            raise NpzFormatError(
                f"npz: {file} key {key!r}: shape {a.shape}; a modality must be (N, ...) with N = {n} items, the "
                "labels' length (a single feature per item: reshape to (N, 1))"
            )
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise NpzFormatError(f"npz: {file} key {key!r} holds NaN or infinite values; fill or drop those items")
        out[key] = a
    if not out:
        raise NpzFormatError(f"npz: {file} holds labels but no modality arrays; its keys are {sorted(arrays)}")
    return out


def read_npz(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """(modalities, labels, split ids with -1 where none is given, the files read) from a file or a folder."""
    files = _files(Path(path))
    mods: dict[str, list[np.ndarray]] = {}
    labels, splits = [], []
    first: tuple[Path, dict[str, tuple[int, ...]]] | None = None
    for file in files:
        arrays = _read(file)
        key, y = _labels(file, arrays)
        m = _modalities(file, arrays, key, len(y))
        shapes = {k: a.shape[1:] for k, a in m.items()}
        if first is None:
            first = (file, shapes)
        elif shapes != first[1]:
            raise NpzFormatError(
                f"npz: {file} has modalities {shapes} but {first[0]} has {first[1]} (name: item shape); every file "
                "of a folder must hold the same modality names with the same item shapes"
            )
        if SPLIT_KEY in arrays:
            s = _split_ids(file, arrays[SPLIT_KEY], len(y))
        elif file.stem in SPLIT_FILES and len(files) > 1:
            s = np.full(len(y), SPLIT_FILES.index(file.stem), dtype=np.int64)
        else:
            s = np.full(len(y), -1, dtype=np.int64)
        for k, a in m.items():
            mods.setdefault(k, []).append(a)
        labels.append(y)
        splits.append(s)
    return (
        {k: np.concatenate(v) for k, v in mods.items()},
        np.concatenate(labels),
        np.concatenate(splits),
        [str(f) for f in files],
    )


def _assign(labels: np.ndarray, split: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
    """Split ids for every item: the given ones, the rest stratified (test, then validation from train)."""
    split = split.copy()
    y = torch.as_tensor(labels)
    free = np.flatnonzero(split == -1)
    if len(free):
        keep, held = stratified_split(y[free], test_fraction, seed=seed)
        split[free[held.numpy()]] = 2
        split[free[keep.numpy()]] = 0
    if not (split == 1).any():
        train = np.flatnonzero(split == 0)
        keep, held = stratified_split(y[train], val_fraction, seed=seed + 1)
        split[train[held.numpy()]] = 1
    return split


def _standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per feature (tables) or per channel (signals, images), from the training items."""
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x[train].mean(axis=axes, keepdims=True)
    std = x[train].std(axis=axes, keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


@register_dataset("npz", "Your own arrays: --dataset npz:PATH (a .npz file or a folder; one array per modality)")
def load_npz(
    data_dir: Any = None,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    path: str | None = None,
    test_fraction: float = 0.2,
    arch: str | None = None,
    standardize: bool = True,
    classes: int | None = None,
    **unknown: Any,
) -> MultiModalData:
    if unknown:
        raise ValueError(f"npz has no options {sorted(unknown)}; valid: {list(OPTIONS)}")
    path = path or data_dir
    if not path:
        raise ValueError("npz needs a path: --dataset npz:PATH (a .npz file or a folder of them)")
    if not 0 < test_fraction < 1:
        raise ValueError(f"npz: test_fraction must be in (0, 1), got {test_fraction}")
    mods, labels, split, files = read_npz(path)
    given = bool((split >= 0).all())
    split = _assign(labels, split, test_fraction, val_fraction, data_seed)
    for sid, name in enumerate(SPLIT_FILES):
        if not (split == sid).any():
            raise NpzFormatError(
                f"npz: {path}: the {name} split is empty; mark some items {name!r} in 'split', or drop 'split' to "
                "split at random"
            )
    ranks = {k: a.ndim - 1 for k, a in mods.items()}
    if arch is None:
        if len(set(ranks.values())) > 1 or next(iter(ranks.values())) not in ARCH_BY_RANK:
            raise NpzFormatError(
                f"npz: {path}: item shapes { ({k: a.shape[1:] for k, a in mods.items()}) } need one backbone for every "
                "modality: vectors (D,) -> mlp, (C, L) signals -> seq1d, (C, H, W) images -> small-cnn. Reshape them "
                "alike (e.g. flatten every modality to vectors), or train your own model on them with "
                "greedymm.diagnose(data, model=...)"
            )
        arch = ARCH_BY_RANK[next(iter(ranks.values()))]
    from ..models import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"npz: unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    train_idx = np.flatnonzero(split == 0)
    if standardize:
        mods = {k: _standardize(a, train_idx) for k, a in mods.items()}
    if arch == "seq1d":  # a mask channel of ones: every sample is real
        mods = {k: np.concatenate([a, np.ones_like(a[:, :1])], axis=1) for k, a in mods.items()}
    num_classes = int(labels.max()) + 1 if classes is None else int(classes)
    if num_classes < 2 or labels.max() >= num_classes:
        raise NpzFormatError(
            f"npz: {path}: labels run from {int(labels.min())} to {int(labels.max())} with classes={num_classes}; "
            "need at least 2 classes and every label below classes"
        )
    tensors = {k: torch.from_numpy(a) for k, a in mods.items()}
    y = torch.from_numpy(labels)

    def part(sid: int) -> ArraySplit:
        idx = torch.from_numpy(np.flatnonzero(split == sid))
        return ArraySplit({k: t[idx].contiguous() for k, t in tensors.items()}, y[idx].contiguous())

    names = tuple(mods)
    return MultiModalData(
        name="npz",
        modalities=names,
        in_channels=tuple(int(mods[k].shape[1]) for k in names),
        num_classes=num_classes,
        arch=arch,
        train=part(0),
        val=part(1),
        test=part(2),
        source={
            "real_data": True,
            "source": f"npz: {path}",
            "note": f"the user's arrays ({len(files)} file(s)); split ids "
            f"{'given' if given else 'drawn (stratified, data_seed ' + str(data_seed) + ')'}; "
            + ("standardized with training statistics" if standardize else "not standardized"),
            "files": files,
        },
    )
