"""The user's own arrays as a data set (greedymm.data.npz): splits, names, backbones, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greedymm.config import resolve_config
from greedymm.data import load_dataset
from greedymm.data.base import dataset_base, dataset_label
from greedymm.data.npz import NpzFormatError


def _arrays(n: int = 40, classes: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "labels": np.arange(n) % classes,
        "audio": rng.normal(size=(n, 6)),
        "text": rng.normal(size=(n, 3)),
    }


def test_one_file_keeps_the_users_names_and_draws_stratified_splits(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays())
    data = load_dataset(f"npz:{path}", val_fraction=0.25, test_fraction=0.2)
    assert data.modalities == ("audio", "text")
    assert data.in_channels == (6, 3)
    assert data.num_classes == 4
    assert data.arch == "mlp"
    # 40 items, 10 per class: 2 per class to test (8), then a quarter of the remaining 8 per class to validation
    assert (len(data.train), len(data.val), len(data.test)) == (24, 8, 8)
    x, y = data.train.batch(torch.arange(len(data.train)))
    assert set(x) == {"audio", "text"} and x["audio"].dtype == torch.float32
    # standardized with training statistics: zero mean and unit std per feature on train
    assert torch.allclose(x["audio"].mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(x["audio"].std(0, unbiased=False), torch.ones(6), atol=1e-4)
    assert torch.bincount(y, minlength=4).tolist() == [6, 6, 6, 6]


def test_split_ids_are_followed_and_validation_drawn_from_train_when_absent(tmp_path):
    a = _arrays()
    split = np.array(["train"] * 30 + ["test"] * 10)
    np.savez(tmp_path / "s.npz", split=split, **a)
    data = load_dataset(f"npz:{tmp_path / 's.npz'}", val_fraction=0.2, standardize=False)
    assert len(data.test) == 10
    _, y_test = data.test.batch(torch.arange(10))
    assert y_test.tolist() == (np.arange(30, 40) % 4).tolist()
    # validation: a stratified fifth of the 30 training items (6 of them), never a test item
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    x, _ = data.test.batch(torch.arange(10))
    assert torch.allclose(x["text"], torch.from_numpy(a["text"][30:]).float())  # not standardized: raw values
    xv, _ = data.val.batch(torch.arange(6))
    raw = torch.from_numpy(a["text"]).float()
    rows = [int(torch.cdist(row[None], raw).argmin()) for row in xv["text"]]
    assert all(r < 30 for r in rows) and len(set(rows)) == 6


def _split_rows(data, split_name):
    split = getattr(data, split_name)
    x, _ = split.batch(torch.arange(len(split)))
    raw = torch.from_numpy(_arrays()["text"]).float()
    return sorted(int(torch.cdist(row[None], raw).argmin()) for row in x["text"])


def test_the_data_seed_draws_another_split_and_the_same_seed_the_same(tmp_path):
    np.savez(tmp_path / "d.npz", **_arrays())
    load = lambda seed: load_dataset(f"npz:{tmp_path / 'd.npz'}", val_fraction=0.25, data_seed=seed, standardize=False)  # noqa: E731
    zero, one, again = load(0), load(1), load(0)
    for name in ("val", "test"):
        assert _split_rows(zero, name) == _split_rows(again, name)
    assert _split_rows(zero, "test") != _split_rows(one, "test")
    assert not set(_split_rows(zero, "val")) & set(_split_rows(zero, "test"))  # disjoint


def test_an_empty_split_and_a_class_count_below_the_labels_are_refused(tmp_path):
    np.savez(tmp_path / "t.npz", split=np.array(["train"] * 40), **_arrays())
    with pytest.raises(NpzFormatError, match="the test split is empty; mark some items 'test' in 'split', or drop"):
        load_dataset(f"npz:{tmp_path / 't.npz'}")
    np.savez(tmp_path / "c.npz", **_arrays())
    with pytest.raises(NpzFormatError, match="labels run from 0 to 3 with classes=3"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}", classes=3)
    assert load_dataset(f"npz:{tmp_path / 'c.npz'}", classes=6).num_classes == 6  # classes absent from the data


def test_a_folder_of_split_files_and_signals_get_seq1d_with_a_mask(tmp_path):
    rng = np.random.default_rng(1)
    raw = {}
    for name, n in (("train", 16), ("val", 8), ("test", 8)):
        raw[name] = rng.normal(loc=3.0, scale=2.0, size=(n, 3, 20))  # train, val, test with other statistics
        np.savez(tmp_path / f"{name}.npz", y=np.arange(n) % 2, acc=raw[name], gyro=rng.normal(size=(n, 3, 20)))
    data = load_dataset(f"npz:{tmp_path}")
    assert (len(data.train), len(data.val), len(data.test)) == (16, 8, 8)
    assert data.arch == "seq1d" and data.in_channels == (4, 4)  # three channels and the mask
    x, _ = data.val.batch(torch.arange(2))
    assert x["acc"].shape == (2, 4, 20) and torch.all(x["acc"][:, -1] == 1)
    # a signal is standardized per channel (over items and time) with the training split's statistics only
    mean, std = raw["train"].mean((0, 2)), raw["train"].std((0, 2))
    xt, _ = data.test.batch(torch.arange(8))
    expected = (raw["test"] - mean[None, :, None]) / std[None, :, None]
    assert torch.allclose(xt["acc"][:, :3].double(), torch.from_numpy(expected), atol=1e-4)
    assert torch.all(xt["acc"][:, -1] == 1)  # the mask is not standardized


def test_the_name_reaches_train_sweep_and_report_settings():
    assert dataset_base("npz:/a/b/my data.npz") == "npz"
    assert dataset_label("npz:/a/b/my data.npz") == "npz-my_data"
    assert dataset_base("synthetic") == "synthetic" and dataset_label("synthetic") == "synthetic"
    cfg = resolve_config("npz:/somewhere/x.npz", method="vanilla")
    assert cfg.dataset == "npz:/somewhere/x.npz" and cfg.optimizer == "adam"  # the npz defaults


def test_a_sweep_plans_npz_runs_in_folders_without_the_path(tmp_path):
    from greedymm.sweep import plan_sweep

    np.savez(tmp_path / "x.npz", **_arrays())
    jobs = plan_sweep([f"npz:{tmp_path / 'x.npz'}"], ["vanilla"], [0], tmp_path / "runs", epochs=1)
    assert jobs[0].folder.parent == tmp_path / "runs"
    assert jobs[0].folder.name.startswith("npz-x_vanilla_s0_")


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"audio": np.zeros((4, 2))}, r"bad\.npz has no labels; its keys are \['audio'\]"),
        ({"labels": np.array([0.0, 1, 0, 1]), "audio": np.zeros((4, 2))}, r"key 'labels'.*dtype float64.*integer"),
        ({"labels": np.array([0, 1, 0, 1]), "audio": np.zeros((3, 2))}, r"key 'audio': shape \(3, 2\).*N = 4"),
        ({"labels": np.array([0, 1, 0, 1]), "audio": np.zeros(4)}, r"key 'audio'.*reshape to \(N, 1\)"),
        ({"labels": np.array([0, 1, 0, 1]), "audio": np.array(["a"] * 4)}, r"key 'audio': dtype <U1 is not numeric"),
        ({"labels": np.array([0, 1, 0, 1]), "audio": np.array([[np.nan]] * 4)}, r"key 'audio' holds NaN"),
        ({"labels": np.array([0, 1, 0, -1]), "audio": np.zeros((4, 1))}, r"labels must be >= 0"),
        ({"labels": np.array([0, 1, 0, 1]), "audio": np.zeros((4, 1)), "split": np.array(["train", "x", "val", "a"])},
         r"key 'split': unknown split ids \['a', 'x'\]"),
        ({"labels": np.array([0, 1, 0, 1])}, r"labels but no modality arrays"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_file_and_key(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(NpzFormatError, match=match):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_files_of_a_folder_must_agree_and_paths_must_exist(tmp_path):
    np.savez(tmp_path / "a.npz", labels=np.arange(8) % 2, audio=np.zeros((8, 3)))
    np.savez(tmp_path / "b.npz", labels=np.arange(8) % 2, audio=np.zeros((8, 4)))
    with pytest.raises(NpzFormatError, match=r"b\.npz has modalities .*'audio': \(4,\).* but .*a\.npz"):
        load_dataset(f"npz:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(NpzFormatError, match=r"junk\.npz is not a readable \.npz file"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


def test_mixed_item_shapes_ask_for_one_backbone(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "m.npz", labels=np.arange(20) % 2, table=rng.normal(size=(20, 5)), sig=rng.normal(size=(20, 2, 9))
    )
    with pytest.raises(NpzFormatError, match="need one backbone for every modality"):
        load_dataset(f"npz:{tmp_path / 'm.npz'}")


@pytest.mark.slow
def test_greedymm_train_reads_npz(tmp_path):
    from greedymm.train import fit

    np.savez(tmp_path / "x.npz", **_arrays(n=80))
    cfg = resolve_config(f"npz:{tmp_path / 'x.npz'}", method="vanilla", fusion="concat", epochs=1, batch_size=16,
                         width=0.25, device="cpu")  # fmt: skip
    out = fit(cfg, tmp_path / "run", progress=False)
    from greedymm.rundir import RunDir

    rec = RunDir(out).records()[-1]
    assert rec["modalities"] == ["audio", "text"] and 0 <= rec["val"]["acc"] <= 1
