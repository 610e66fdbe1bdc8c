"""Smartwatch shoulder exercises (``smartwatch``): accelerometer + gyroscope, 7 classes, 10 subjects.

140 recordings at 50 Hz (947-2,618 samples each), 14 per subject (each of the 7 exercises once per side). Two
modalities, each a 1-D signal for the ``seq1d`` backbone: ``acc`` (the accelerometer's 3 axes) and ``gyro``
(the gyroscope's 3 axes).

Windows: each recording is cut into windows of ``window`` samples (default 250, 5 s) every ``step`` samples
(default 125); the samples after the last full window make one more, shorter window, so no sample is dropped.
``window=0`` keeps whole recordings as items. Every item is padded with zeros to the longest item of the data
set and carries a mask as its last channel (1 = a recorded sample, 0 = padding), so an input is (4, T): three
axes and the mask; the ``seq1d`` encoder reads the mask and ignores the padding.

Splits are by subject, so no subject is in two splits: ``test_subjects`` and ``val_subjects`` (lists of subject
ids 1-10) if given, else ``n_test_subjects`` (default 2) and ``n_val_subjects`` (default 2) drawn with
``data_seed``; the other subjects train. ``val_fraction`` is accepted and not used (the split is by subject).
Each channel is standardized with the mean and standard deviation of the training subjects' samples only.
``greedymm data fetch smartwatch`` makes the cache this loader reads (data/wheels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import MultiModalData, register_dataset
from .idx import DataFormatError
from .wheels import WHEELS, load_cache

MODALITY_CHANNELS = {"acc": ("ax", "ay", "az"), "gyro": ("wx", "wy", "wz")}
OPTIONS = ("window", "step", "test_subjects", "val_subjects", "n_test_subjects", "n_val_subjects")


@dataclass(frozen=True)
class SequenceSplit:
    """Items in memory: per modality (n, channels + 1, T) float32 with the mask last; labels and subjects (n,)."""

    inputs: dict[str, Tensor]
    labels: Tensor
    subjects: Tensor  # the subject of every item
    recordings: Tensor  # the recording every item was cut from (an index into the fetched recordings)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        return {m: x[idx] for m, x in self.inputs.items()}, self.labels[idx]


def window_bounds(length: int, window: int, step: int) -> list[tuple[int, int]]:
    """(start, end) of each window of a recording of ``length`` samples; the tail after the last full window is one
    more, shorter window (``window`` 0: the whole recording)."""
    if window <= 0 or length <= window:
        return [(0, length)]
    bounds = [(s, s + window) for s in range(0, length - window + 1, step)]
    if bounds[-1][1] < length:
        bounds.append((bounds[-1][0] + step, length))
    return bounds


def _subjects(
    ids: np.ndarray, test: Sequence[int] | None, val: Sequence[int] | None, n_test: int, n_val: int, seed: int
) -> tuple[list[int], list[int], list[int]]:
    known = sorted(int(s) for s in np.unique(ids))
    if test is None or val is None:
        order = [known[i] for i in torch.randperm(len(known), generator=torch.Generator().manual_seed(seed))]
        drawn = [s for s in order if s not in (test or []) and s not in (val or [])]
        test = list(test) if test is not None else drawn[:n_test]
        drawn = [s for s in drawn if s not in test]
        val = list(val) if val is not None else drawn[:n_val]
    test, val = sorted(int(s) for s in test), sorted(int(s) for s in val)
    bad = [s for s in test + val if s not in known]
    if bad or set(test) & set(val) or not test or not val:
        raise ValueError(
            f"smartwatch: test_subjects {test} and val_subjects {val} must be distinct, non-empty lists of the "
            f"subject ids {known}"
        )
    train = [s for s in known if s not in test and s not in val]
    if not train:
        raise ValueError("smartwatch: no subject is left to train on; hold out fewer subjects")
    return train, val, test


@register_dataset("smartwatch", "Smartwatch accelerometer + gyroscope, 7 shoulder exercises, 10 subjects (fetch first)")
def load_smartwatch(
    data_dir: Any = None,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    window: int = 250,
    step: int = 125,
    test_subjects: Sequence[int] | None = None,
    val_subjects: Sequence[int] | None = None,
    n_test_subjects: int = 2,
    n_val_subjects: int = 2,
    **unknown: Any,
) -> MultiModalData:
    del val_fraction  # the validation split is held-out subjects
    if unknown:
        raise ValueError(f"smartwatch has no options {sorted(unknown)}; valid: {list(OPTIONS)}")
    if window < 0 or (window > 0 and not 0 < step <= window):
        raise ValueError(f"smartwatch: need window >= 0 and 0 < step <= window, got window {window}, step {step}")
    arrays, info = load_cache("smartwatch", data_dir)
    names = tuple(str(s) for s in arrays["channel_names"])
    if names != MODALITY_CHANNELS["acc"] + MODALITY_CHANNELS["gyro"]:
        raise DataFormatError(f"smartwatch: the cache's channels are {names}, expected ax, ay, az, wx, wy, wz")
    lengths, labels, subjects = arrays["lengths"], arrays["labels"], arrays["subjects"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    recordings = [arrays["signals"][s : s + n].astype(np.float64) for s, n in zip(starts, lengths, strict=True)]
    train_s, val_s, test_s = _subjects(
        subjects, test_subjects, val_subjects, n_test_subjects, n_val_subjects, data_seed
    )
    train_samples = np.concatenate([r for r, s in zip(recordings, subjects, strict=True) if s in train_s])
    mean, std = train_samples.mean(axis=0), train_samples.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    items = [
        (r, a, b) for r, n in enumerate(lengths) for a, b in window_bounds(int(n), window, step)
    ]  # (recording, start, end)
    longest = max(b - a for _, a, b in items)

    def split(ids: list[int]) -> SequenceSplit:
        chosen = [(r, a, b) for r, a, b in items if subjects[r] in ids]
        x = np.zeros((len(chosen), 8, longest), dtype=np.float32)  # acc 3 + mask, gyro 3 + mask
        for i, (r, a, b) in enumerate(chosen):
            z = ((recordings[r][a:b] - mean) / std).T  # (6, b - a)
            x[i, 0:3, : b - a], x[i, 4:7, : b - a] = z[0:3], z[3:6]
            x[i, 3, : b - a] = x[i, 7, : b - a] = 1.0
        t = torch.from_numpy(x)
        rec = torch.as_tensor([r for r, _, _ in chosen], dtype=torch.long)
        return SequenceSplit(
            {"acc": t[:, 0:4].contiguous(), "gyro": t[:, 4:8].contiguous()},
            torch.as_tensor(labels[rec.numpy()], dtype=torch.long),
            torch.as_tensor(subjects[rec.numpy()], dtype=torch.long),
            rec,
        )

    where = f"window {window}, step {step}" if window else "whole recordings"
    return MultiModalData(
        name="smartwatch",
        modalities=("acc", "gyro"),
        in_channels=(4, 4),
        num_classes=len(arrays["class_names"]),
        arch="seq1d",
        train=split(train_s),
        val=split(val_s),
        test=split(test_s),
        source={
            "real_data": True,
            "source": info.get("detail", WHEELS["smartwatch"].package),
            "note": f"{WHEELS['smartwatch'].note}; {where}; subjects: train {train_s}, val {val_s}, test {test_s}; "
            "channels standardized with the training subjects' statistics",
            "class_names": [str(c) for c in arrays["class_names"]],
        },
    )
