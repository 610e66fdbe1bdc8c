"""ModelNet40 loader (data/modelnet.py) on a tiny generated stand-in (data/modelnet_standin.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greedymm.data import modelnet_standin
from greedymm.data.base import load_dataset
from greedymm.data.idx import DataFormatError
from greedymm.data.modelnet import CACHE_DIR, IMAGENET_MEAN, IMAGENET_STD, STANDIN_MARKER, view_filename
from greedymm.data.modelnet_standin import (
    AZIMUTHS_DEG,
    build_object,
    class_names,
    make_modelnet_standin,
    object_params,
    parse_class,
    render,
    render_views,
)

CLASSES, PER_CLASS, TEST_PER_CLASS, SIZE = 3, 4, 2, 32


def _make(root: Path, seed: int = 0) -> Path:
    return make_modelnet_standin(
        root, classes=CLASSES, per_class=PER_CLASS, test_per_class=TEST_PER_CLASS, size=SIZE, seed=seed, progress=False
    )


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("mn") / "modelnet40-standin")


@pytest.fixture
def standin_copy(standin, tmp_path) -> Path:
    """A private copy, for tests that change files (the cache is left out so each starts cold)."""
    return Path(shutil.copytree(standin, tmp_path / "set", ignore=shutil.ignore_patterns(CACHE_DIR)))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _all(split) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return split.batch(torch.arange(len(split)))


# ---------------------------------------------------------------------------------------------- generator


def test_generator_writes_the_mvcnn_layout(standin):
    names = class_names(CLASSES)
    assert names == sorted(names) and all(n.startswith("standin_") for n in names)
    expected = {STANDIN_MARKER}
    for c in names:
        for split, numbers in (("train", range(1, 5)), ("test", range(5, 7))):
            for n in numbers:
                expected |= {f"{c}/{split}/{view_filename(f'{c}_{n:04d}', v)}" for v in range(12)}
    files = _files(standin)
    assert set(files) == expected
    assert f"{names[0]}/train/{names[0]}_0001.obj.shaded_v001.png" in files  # 0-based view 0 is v001
    with Image.open(standin / names[0] / "test" / view_filename(f"{names[0]}_0005", 11)) as im:
        assert im.size == (SIZE, SIZE)
    info = json.loads((standin / STANDIN_MARKER).read_text())
    assert info["classes"] == CLASSES and info["seed"] == 0 and "NOT ModelNet40" in info["note"]
    assert info["version"] == 2 and info["class_names"] == names


def test_generator_is_deterministic(standin, tmp_path):
    assert _files(_make(tmp_path / "again")) == _files(standin)
    other = _files(_make(tmp_path / "other", seed=1))
    assert other[STANDIN_MARKER] != _files(standin)[STANDIN_MARKER]
    assert sum(other[k] != v for k, v in _files(standin).items() if k.endswith(".png")) > 100


def test_generator_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a stand-in"):
        _make(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _front_rear(name: str, params: dict[str, float], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """v001 (azimuth 0, the front) and v007 (azimuth 180, the rear) of one object."""
    mesh = build_object(name, params)
    vertices, faces = np.asarray(mesh.vertices, float), np.asarray(mesh.faces)
    return render(vertices, faces, AZIMUTHS_DEG[0], size), render(vertices, faces, AZIMUTHS_DEG[6], size)


def test_class_names_alternate_front_and_rear_pairs():
    names = class_names(10)
    assert names == sorted(names)
    specs = [parse_class(n) for n in names]
    for j in range(5):
        (body, aspect, side, feature), twin = specs[2 * j], specs[2 * j + 1]
        assert side == ("front", "rear")[j % 2] and feature is not None
        assert twin == (body, aspect, None, None)  # the plain twin: same body, no feature
    assert len({s[:2] for s in specs}) == 5  # one body per pair
    assert [s[2] for s in specs[::2]] == ["front", "rear", "front", "rear", "front"]  # 3 front pairs, 2 rear
    assert parse_class(class_names(2)[0])[2] == "front"  # --classes 2: a single front pair
    with pytest.raises(ValueError, match="not a stand-in class name"):
        parse_class("standin_00_block_side-knob")


@pytest.mark.parametrize("pair", [0, 1, 2, 3, 4, 11, 22, 37])
def test_each_pair_differs_in_one_view_only(pair):
    """Pair-mates with the same variation differ in the view facing their feature and are pixel-identical in the
    opposite view (the feature is hidden by the body): front pairs differ only in v001, rear pairs only in v007.
    64 px, the size the stand-in is trained at: at 32 px a plate or disc flush with a flat face can vanish."""
    feature, plain = class_names(2 * pair + 2)[2 * pair :]
    side = parse_class(feature)[2]
    for i in range(2):
        params = object_params(np.random.default_rng([pair, i]))
        (fa, ra), (fb, rb) = _front_rear(feature, params, 64), _front_rear(plain, params, 64)
        shown, hidden = ((fa, fb), (ra, rb)) if side == "front" else ((ra, rb), (fa, fb))
        assert (shown[0] != shown[1]).sum() >= 2  # the feature is visible from its side
        assert np.array_equal(*hidden)  # and hidden from the other


def test_rear_feature_is_the_smaller_one():
    """The same feature kind, body and variation: the rear cue covers fewer pixels than the front cue."""
    params = object_params(np.random.default_rng(0))
    front, rear, plain = "standin_00_block_front-knob", "standin_00_block_rear-knob", "standin_01_block_plain"
    (pf, pr), (ff, _), (_, rr) = (
        _front_rear(plain, params, 64),
        _front_rear(front, params, 64),
        _front_rear(rear, params, 64),
    )
    assert 0 < (rr != pr).sum() < (ff != pf).sum()


def test_a_variation_showing_the_hidden_feature_is_redrawn(monkeypatch):
    """_object_views re-draws the variation while the view opposite the feature differs from the plain twin's."""
    real = modelnet_standin.build_object
    calls = {"twin": 0}

    def build(name, params):
        if name.endswith("_plain"):
            calls["twin"] += 1
            if calls["twin"] == 1:  # the first twin differs: the check must fail once
                return real("standin_00_column_plain", params)
        return real(name, params)

    monkeypatch.setattr(modelnet_standin, "build_object", build)
    name = class_names(2)[0]
    views = modelnet_standin._object_views(name, np.random.default_rng(5), 16)
    assert calls["twin"] == 2
    rng = np.random.default_rng(5)
    object_params(rng)  # the rejected draw
    expected = render_views(real(name, object_params(rng)), 16)
    assert all(np.array_equal(a, b) for a, b in zip(views, expected, strict=True))


# ------------------------------------------------------------------------------------------------- loader


def test_loader_shapes_labels_and_splits(standin):
    data = load_dataset("modelnet40-standin", root=standin)
    assert data.modalities == ("view0", "view6") and data.in_channels == (3, 3)
    assert data.num_classes == CLASSES and data.arch == "resnet18" and data.is_standin
    assert "NOT ModelNet40" in data.source["note"]
    n_val = CLASSES * round(0.2 * PER_CLASS)
    assert (len(data.train), len(data.val), len(data.test)) == (CLASSES * PER_CLASS - n_val, n_val, 6)
    x, y = _all(data.test)
    assert set(x) == {"view0", "view6"}
    assert x["view0"].shape == (6, 3, SIZE, SIZE) and x["view0"].dtype == torch.float32
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.bincount(_all(data.val)[1]).tolist() == [1] * CLASSES  # stratified
    # view0 of the first test item is v001 of <class0>_0005, ImageNet-normalized
    c0 = class_names(CLASSES)[0]
    with Image.open(standin / c0 / "test" / view_filename(f"{c0}_0005", 0)) as im:
        rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    expected = (rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x["view0"][0], expected, atol=1e-6)


def test_view_selection_and_resize(standin):
    a = load_dataset("modelnet40-standin", root=standin)
    b = load_dataset("modelnet40-standin", root=standin, views=[3, 9], size=16, arch="resnet18-small")
    assert b.modalities == ("view3", "view9") and b.arch == "resnet18-small"
    xb, yb = _all(b.test)
    assert xb["view3"].shape == (6, 3, 16, 16)
    c = load_dataset("modelnet40-standin", root=standin, views="3,9")
    xa, xc = _all(a.test)[0], _all(c.test)[0]
    assert not torch.equal(xa["view0"], xc["view3"]) and not torch.equal(xa["view6"], xc["view9"])
    assert torch.equal(yb, _all(a.test)[1])
    with pytest.raises(ValueError, match="two different indices"):
        load_dataset("modelnet40-standin", root=standin, views=(0, 12))


def test_validation_split_is_seeded(standin):
    def val_rows(seed):
        return load_dataset("modelnet40-standin", root=standin, data_seed=seed).val.rows.tolist()

    assert val_rows(0) == val_rows(0)
    assert val_rows(0) != val_rows(1)


def test_cache_equals_direct_decoding(standin):
    cached = load_dataset("modelnet40-standin", root=standin)
    direct = load_dataset("modelnet40-standin", root=standin, cache=False)
    assert direct.train.images is None and cached.train.images is not None
    for name in ("train", "val", "test"):
        (xa, ya), (xb, yb) = _all(getattr(cached, name)), _all(getattr(direct, name))
        assert torch.equal(ya, yb) and all(torch.equal(xa[k], xb[k]) for k in xa)
    caches = sorted(p.name for p in (standin / CACHE_DIR).glob("*-v0-6-native-*.npy"))
    assert [p.split("-")[0] for p in caches] == ["test", "train"]  # one per folder, keyed by views and size


def test_cache_is_rebuilt_when_a_source_file_changes(standin_copy):
    first = load_dataset("modelnet40-standin", root=standin_copy)
    old_cache = sorted((standin_copy / CACHE_DIR).glob("test-*.npy"))
    c0 = class_names(CLASSES)[0]
    path = standin_copy / c0 / "test" / view_filename(f"{c0}_0005", 0)
    Image.fromarray(np.full((SIZE, SIZE), 200, np.uint8), "L").save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_dataset("modelnet40-standin", root=standin_copy)
    new_cache = sorted((standin_copy / CACHE_DIR).glob("test-*.npy"))
    assert len(new_cache) == 1 and new_cache != old_cache  # the stale one is gone
    assert (second.test.raw(torch.tensor([0]))[0, 0] == 200).all()
    assert not np.array_equal(first.test.raw(torch.tensor([0])), second.test.raw(torch.tensor([0])))


def test_flip_is_joint_and_follows_torch_rng(standin):
    data = load_dataset("modelnet40-standin", root=standin)
    idx = torch.arange(len(data.train))
    plain, _ = data.train.batch(idx)
    torch.manual_seed(0)
    x1, _ = data.train.batch(idx, train=True)
    torch.manual_seed(0)
    x2, _ = data.train.batch(idx, train=True)
    assert all(torch.equal(x1[k], x2[k]) for k in x1)  # same RNG state, same flips (resume)
    flipped = [torch.equal(x1["view0"][i], plain["view0"][i].flip(-1)) for i in range(len(idx))]
    assert any(flipped) and not all(flipped)
    for i, f in enumerate(flipped):
        assert torch.equal(x1["view6"][i], plain["view6"][i].flip(-1) if f else plain["view6"][i])
    off = load_dataset("modelnet40-standin", root=standin, flip="none").train.batch(idx, train=True)[0]
    assert all(torch.equal(off[k], plain[k]) for k in off)
    with pytest.raises(ValueError, match="flip must be one of"):
        load_dataset("modelnet40-standin", root=standin, flip="sometimes")


# ------------------------------------------------------------------------------------------------- errors


def test_missing_view_names_object_and_file(standin_copy):
    c1 = class_names(CLASSES)[1]
    (standin_copy / c1 / "train" / view_filename(f"{c1}_0002", 6)).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{c1}_0002.*{c1}_0002\.obj\.shaded_v007\.png"):
        load_dataset("modelnet40-standin", root=standin_copy)
    # views that do not need the missing file still load
    assert len(load_dataset("modelnet40-standin", root=standin_copy, views=(0, 5)).test) == 6


@pytest.mark.parametrize("cache, keep", [(True, 0.5), (False, 0.5), (True, 0.05)])
def test_truncated_png_names_the_file(standin_copy, cache, keep):
    c2 = class_names(CLASSES)[2]
    path = standin_copy / c2 / "test" / view_filename(f"{c2}_0006", 6)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])  # half: pixel data cut; 5%: not even a PNG header
    with pytest.raises(DataFormatError, match=rf"{path.name}.*damaged or truncated"):
        loaded = load_dataset("modelnet40-standin", root=standin_copy, cache=cache)
        _all(loaded.test)  # with cache=False the files are decoded only here
    if cache:
        assert not list((standin_copy / CACHE_DIR).glob("*test-*"))  # no half-written cache, no temp file left


def test_class_without_test_items(standin_copy):
    c0 = class_names(CLASSES)[0]
    for p in (standin_copy / c0 / "test").iterdir():
        p.unlink()
    with pytest.raises(DataFormatError, match=rf"{c0} has no test items"):
        load_dataset("modelnet40-standin", root=standin_copy)


def test_missing_root_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ModelNet40 renders under .*greedymm data make modelnet-standin"):
        load_dataset("modelnet40", data_dir=tmp_path)


def test_unknown_option_is_named(standin):
    with pytest.raises(ValueError, match="no options \\['colour'\\]"):
        load_dataset("modelnet40-standin", root=standin, colour=True)


def test_real_data_without_marker(standin_copy):
    (standin_copy / STANDIN_MARKER).unlink()
    data = load_dataset("modelnet40-standin", root=standin_copy)
    assert data.source["real_data"] and not data.is_standin
    with pytest.warns(UserWarning, match="not ModelNet40's 40"):
        load_dataset("modelnet40", root=standin_copy)
