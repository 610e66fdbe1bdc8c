"""smartwatch on a tiny wheel in its real format: windows (no sample dropped), subject-held-out splits, train-only
standardization, and the masked seq1d encoder in both families (a padded item equals the item alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greedymm import intermediate_fusion, late_fusion
from greedymm.data import load_dataset
from greedymm.data.smartwatch import window_bounds
from greedymm.data.wheels import load_cache
from greedymm.models import build_model
from greedymm.models.seq1d import seq1d
from wheel_fixtures import fetched

OPTS = {"window": 32, "step": 16, "n_test_subjects": 1, "n_val_subjects": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fetched("smartwatch", tmp_path_factory.mktemp("smartwatch"))


@pytest.mark.parametrize("length", [1, 31, 32, 33, 47, 48, 49, 100, 2618])
def test_windows_cover_every_sample_and_only_the_tail_is_shorter(length):
    bounds = window_bounds(length, 250 if length == 2618 else 32, 125 if length == 2618 else 16)
    covered = np.zeros(length, dtype=bool)
    for a, b in bounds:
        covered[a:b] = True
    assert covered.all() and bounds[0][0] == 0 and bounds[-1][1] == length
    w = 250 if length == 2618 else 32
    assert all(b - a == w for a, b in bounds[:-1]) and 0 < bounds[-1][1] - bounds[-1][0] <= w
    assert window_bounds(length, 0, 1) == [(0, length)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_subject_is_in_two_splits(data_dir, seed):
    data = load_dataset("smartwatch", data_dir=data_dir, data_seed=seed, **OPTS)
    subjects = {s: set(getattr(data, s).subjects.tolist()) for s in ("train", "val", "test")}
    assert len(subjects["test"]) == 1 and len(subjects["val"]) == 1 and len(subjects["train"]) == 3
    assert not subjects["train"] & subjects["val"] and not subjects["test"] & (subjects["train"] | subjects["val"])
    recordings = {s: set(getattr(data, s).recordings.tolist()) for s in ("train", "val", "test")}
    assert sum(len(r) for r in recordings.values()) == 35  # every recording is used, in one split


def test_the_documented_subject_split_and_another_seed():
    """docs/RESULTS.md's split of the ten subjects (data_seed 0: train 1, 3, 4, 7, 9, 10; val 6, 8; test 2, 5)
    needs no data to pin down; another data seed holds out other subjects."""
    from greedymm.data.smartwatch import _subjects

    subjects = np.arange(1, 11)
    assert _subjects(subjects, None, None, 2, 2, 0) == ([1, 3, 4, 7, 9, 10], [6, 8], [2, 5])
    assert _subjects(subjects, None, None, 2, 2, 1)[1:] != ([6, 8], [2, 5])


def test_chosen_subjects_and_bad_choices(data_dir):
    data = load_dataset("smartwatch", data_dir=data_dir, window=32, step=16, test_subjects=[2, 5], val_subjects=[1])
    assert set(data.test.subjects.tolist()) == {2, 5} and set(data.val.subjects.tolist()) == {1}
    assert set(data.train.subjects.tolist()) == {3, 4}
    for test, val in (([2], [2]), ([11], [1]), ([], [1])):
        with pytest.raises(ValueError, match="subject ids"):
            load_dataset("smartwatch", data_dir=data_dir, test_subjects=test, val_subjects=val)
    with pytest.raises(ValueError, match="no options"):
        load_dataset("smartwatch", data_dir=data_dir, windows=10)
    with pytest.raises(ValueError, match="step"):
        load_dataset("smartwatch", data_dir=data_dir, window=32, step=40)


def test_items_are_padded_masked_and_standardized_on_training_subjects(data_dir):
    data = load_dataset("smartwatch", data_dir=data_dir, **OPTS)
    raw, _ = load_cache("smartwatch", data_dir)
    starts = np.concatenate([[0], np.cumsum(raw["lengths"])[:-1]])
    train_rec = [r for r in range(35) if raw["subjects"][r] in set(data.train.subjects.tolist())]
    samples = np.concatenate([raw["signals"][starts[r] : starts[r] + raw["lengths"][r]] for r in train_rec])
    mean, std = samples.astype(np.float64).mean(0), samples.astype(np.float64).std(0)
    x, y = data.test.batch(torch.arange(len(data.test)))
    assert x["acc"].shape[1:] == (4, 32) and x["gyro"].shape[1:] == (4, 32)
    lengths = x["acc"][:, 3].sum(1)
    assert torch.equal(lengths, x["gyro"][:, 3].sum(1)) and (lengths < 32).any() and (lengths == 32).any()
    # every test sample appears, standardized with the training subjects' mean and std
    r = int(data.test.recordings[0])
    first = raw["signals"][starts[r] : starts[r] + 32]
    expected = (first - mean) / std
    np.testing.assert_allclose(x["acc"][0, :3].T.numpy(), expected[:, :3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x["gyro"][0, :3].T.numpy(), expected[:, 3:], rtol=1e-4, atol=1e-4)
    pad = x["acc"][:, 3] == 0
    assert (x["acc"][:, :3].permute(1, 0, 2)[:, pad] == 0).all()  # zeros after the end
    n_windows = sum(len(window_bounds(int(n), 32, 16)) for n in raw["lengths"])
    assert len(data.train) + len(data.val) + len(data.test) == n_windows
    whole = load_dataset("smartwatch", data_dir=data_dir, window=0, n_test_subjects=1, n_val_subjects=1)
    assert whole.train.inputs["acc"].shape[-1] == int(raw["lengths"].max()) and len(whole.test) == 7


@pytest.mark.parametrize("fusion", ["mmtm", "concat", "gated"])
def test_a_padded_item_gives_what_the_item_alone_gives(fusion):
    torch.manual_seed(0)
    model = build_model("seq1d", ("acc", "gyro"), (4, 4), 7, fusion=fusion).double().eval()
    alone = {m: torch.randn(1, 4, 37, dtype=torch.float64) for m in ("acc", "gyro")}
    for v in alone.values():
        v[:, 3] = 1
    padded = {m: torch.cat([v, torch.zeros(1, 4, 63, dtype=torch.float64)], dim=-1) for m, v in alone.items()}
    a, b = model(alone), model(padded)
    assert torch.allclose(a.logits, b.logits, atol=1e-12)
    if fusion == "mmtm":  # every mode: the re-balancing and cut passes see the same squeeze
        for mode in model.training_modes():
            assert torch.allclose(model(alone, mode).logits, model(padded, mode).logits, atol=1e-12)


def test_both_families_train_on_real_shaped_batches(data_dir):
    data = load_dataset("smartwatch", data_dir=data_dir, **OPTS)
    x, y = data.train.batch(torch.arange(8))
    for fusion in ("mmtm", "concat"):
        model = build_model(data.arch, data.modalities, data.in_channels, 7, fusion=fusion, width=0.25)
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    enc = {m: list(seq1d(4, None, width=0.25).stages) for m in data.modalities}
    assert intermediate_fusion(enc, 7, fuse_after=(0, 1, 2), example=x)(x).logits.shape == (8, 7)
    enc = {m: list(seq1d(4, None, width=0.25).stages) for m in data.modalities}
    assert late_fusion(enc, 7, example=x)(x).logits.shape == (8, 7)
    with pytest.raises(ValueError, match="mask channel"):
        seq1d(1, 7)
