"""IDX files (the MNIST / Fashion-MNIST container format): read, write and load a folder of them.

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header of two zero bytes, one dtype
code byte, one byte for the number of dimensions, then one big-endian uint32 per dimension, then the array in
row-major order. MNIST images carry magic 2051 (uint8, 3 dims), labels 2049 (uint8, 1 dim). Files may be
gzip-compressed; we decide by the gzip magic bytes, not the suffix, because people unpack and rename them.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_open

# IDX dtype code -> numpy dtype (big-endian as stored on disk).
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Keyed by (kind, itemsize) so native and big-endian inputs map to the same code.
_KIND_SIZE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}

_GZIP_MAGIC = b"\x1f\x8b"

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


# the smallest image side an MNIST-layout folder may hold: scikit-learn's digits are 8x8, MNIST's 28x28; a
# convolutional branch needs a few pixels to pool
MIN_IMAGE_SIDE = 8


class DataFormatError(ValueError):
    """A data file exists but is not what it claims to be (bad header, truncated, corrupt, wrong shape)."""


def _fix_hint(path: Path) -> str:
    return f"delete {path} and fetch it again (`greedymm data fetch ...`)"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # gzip raises BadGzipFile (OSError), EOFError on a cut stream, zlib.error on corrupt blocks.
        raise DataFormatError(f"corrupt gzip file {path}: {err}; {_fix_hint(path)}") from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian numpy array of the dims in its header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(
            f"{path} is too short for an IDX header ({len(data)} bytes, need at least 4); {_fix_hint(path)}"
        )
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _CODE_TO_DTYPE:
        magic = int.from_bytes(data[:4], "big")
        raise DataFormatError(
            f"{path} is not an IDX file: wrong magic 0x{magic:08X} (expected 0x0000TTNN with a known dtype "
            f"code TT, e.g. 0x00000803 for MNIST images); {_fix_hint(path)}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataFormatError(
            f"{path} is too short for its IDX header: {ndim} dims need {header_len} bytes, "
            f"found {len(data)}; {_fix_hint(path)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _CODE_TO_DTYPE[code]
    # Python ints: the product of uint32 dims cannot overflow here the way an int64 product could.
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path} {what}: expected {expected} bytes of data for dims {dims}, found {found}; {_fix_hint(path)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    # astype copies: the result is writable, native-endian and does not pin the file's bytes.
    return array.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends with ``.gz``; atomic on POSIX."""
    path = Path(path)
    array = np.asarray(array)
    code = _KIND_SIZE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; cast to uint8, int8, int16, int32, float32 or float64")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX cannot store shape {array.shape} (at most 255 dims, each below 2**32)")
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()

    with atomic_open(path) as f:
        if path.name.endswith(".gz"):
            # mtime=0 and no name in the gzip header: equal arrays give equal bytes (stable checksums).
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            f.write(header)
            f.write(payload)


def find_idx_file(folder: Path, gz_name: str) -> Path | None:
    """Return ``folder/gz_name`` or its unpacked twin without ``.gz``; prefer the .gz (our canonical copy)."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_dir(folder: str | os.PathLike, hint: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the four MNIST-layout IDX files from ``folder``: (train_x, train_y, test_x, test_y).

    Images come back uint8 (N, H, W), labels uint8 (N,). ``hint`` says how to get missing files and is put
    into the FileNotFoundError message.
    """
    folder = Path(folder)
    paths = {key: find_idx_file(folder, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[key] for key, p in paths.items() if p is None]
    if missing:
        where = f"under {folder}" if folder.is_dir() else f"because folder {folder} does not exist"
        msg = f"missing IDX files {where}: {', '.join(missing)} (with or without .gz)"
        raise FileNotFoundError(f"{msg}; {hint}" if hint else msg)

    arrays: dict[str, np.ndarray] = {}
    for key, p in paths.items():
        a = read_idx(p)
        want_ndim = 3 if key.endswith("images") else 1
        if a.dtype != np.uint8 or a.ndim != want_ndim:
            kind = "images (magic 0x00000803)" if want_ndim == 3 else "labels (magic 0x00000801)"
            raise DataFormatError(
                f"{p} should hold {want_ndim}-D uint8 {kind}, found {a.ndim}-D {a.dtype} of shape {a.shape}; "
                f"is it the right file? {hint}".rstrip()
            )
        if len(a) == 0:
            raise DataFormatError(f"{p} holds no items (dims {a.shape}); it is cut or empty. {hint}".rstrip())
        if want_ndim == 3 and min(a.shape[1:]) < MIN_IMAGE_SIDE:
            size = "x".join(map(str, a.shape[1:]))
            raise DataFormatError(
                f"{p} holds {size} images, too small for a convolutional branch (at least {MIN_IMAGE_SIDE}x"
                f"{MIN_IMAGE_SIDE}; MNIST's are 28x28); is it the right file? {hint}".rstrip()
            )
        arrays[key] = a

    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DataFormatError(
                f"label/image count mismatch in {paths[f'{split}_labels']}: {len(x)} images, "
                f"{len(y)} labels; the two {split} files do not belong together"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataFormatError(
            f"image size differs between {paths['train_images']} {arrays['train_images'].shape[1:]} and "
            f"{paths['test_images']} {arrays['test_images'].shape[1:]}; they come from different data sets"
        )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]
