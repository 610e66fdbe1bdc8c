"""mfeat (UCI Multiple Features) on a tiny wheel in its real format: the loader, its stratified split, train-only
standardization, view subsets, the MLP encoder in both families, N = 6, and `greedymm train` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from greedymm import intermediate_fusion, late_fusion
from greedymm.cli import main
from greedymm.data import load_dataset, select_modalities
from greedymm.data.wheels import MFEAT_VIEWS, load_cache
from greedymm.models import MMTMNet, build_model, count_parameters
from greedymm.models.mlp import mlp
from wheel_fixtures import fetched


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fetched("mfeat", tmp_path_factory.mktemp("mfeat"))


def test_split_is_stratified_seeded_and_disjoint(data_dir):
    data = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2, test_fraction=0.5, data_seed=3)
    counts = {s: torch.bincount(getattr(data, s).labels, minlength=10) for s in ("train", "val", "test")}
    assert counts["test"].tolist() == [3] * 10  # half of each class's 6
    assert counts["val"].tolist() == [1] * 10 and counts["train"].tolist() == [2] * 10
    again = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2, test_fraction=0.5, data_seed=3)
    other = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2, test_fraction=0.5, data_seed=4)
    assert torch.equal(data.test.features["pix"], again.test.features["pix"])
    assert not torch.equal(data.test.features["pix"], other.test.features["pix"])


def test_features_are_standardized_with_training_statistics_only(data_dir):
    data = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2, data_seed=0)
    raw, _ = load_cache("mfeat", data_dir)
    for view in MFEAT_VIEWS:
        train = data.train.features[view].double()
        assert torch.allclose(train.mean(0), torch.zeros(train.shape[1], dtype=torch.float64), atol=1e-5)
        assert torch.allclose(train.std(0, unbiased=False), torch.ones(train.shape[1], dtype=torch.float64), atol=1e-4)
        test = data.test.features[view].double()
        assert test.mean(0).abs().max() > 1e-3  # test was not standardized on itself
    # the transform is the training split's: the raw test rows, minus the raw training mean, over its std
    rows = {s: getattr(data, s).rows.numpy() for s in ("train", "val", "test")}
    assert len(set(np.concatenate(list(rows.values())))) == 60  # every row in exactly one split
    pix = raw["pix"].astype(np.float64)
    mean, std = pix[rows["train"]].mean(0), pix[rows["train"]].std(0)
    expected = (pix[rows["test"]] - mean) / np.where(std > 0, std, 1)
    np.testing.assert_allclose(data.test.features["pix"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert data.source["real_data"] is True and "stratified" in data.source["note"]


def test_any_subset_of_views_in_the_order_given(data_dir):
    data = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2)
    for names in (("pix", "fou"), ("mor", "zer", "fac"), MFEAT_VIEWS):
        sub = select_modalities(data, names)
        x, y = sub.train.batch(torch.arange(4))
        assert list(x) == list(names) and sub.in_channels == tuple(x[m].shape[1] for m in names)
    with pytest.raises(ValueError, match="fou,fac,kar,pix,zer,mor"):
        select_modalities(data, ("pix", "pixels"))
    with pytest.raises(ValueError, match="no options"):
        load_dataset("mfeat", data_dir=data_dir, views="pix")


@pytest.mark.parametrize("fusion", ["mmtm", "concat", "sum"])
def test_the_mlp_encoder_in_both_families_with_six_views(data_dir, fusion):
    data = load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2)
    model = build_model("mlp", data.modalities, data.in_channels, 10, fusion=fusion, width=0.25)
    x, y = data.train.batch(torch.arange(8))
    out = model(x)
    assert out.logits.shape == (8, 10) and len(model.modalities) == 6
    torch.nn.functional.cross_entropy(out.logits, y).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if fusion == "mmtm":
        assert isinstance(model, MMTMNet) and len(model.fusions) == 3  # after every stage
        for mode in model.training_modes():
            assert model(x, mode).logits.shape == (8, 10)


def test_the_user_builders_take_the_mlp_stages(data_dir):
    data = select_modalities(load_dataset("mfeat", data_dir=data_dir, val_fraction=0.2), ("pix", "fou"))
    x, _ = data.train.batch(torch.arange(4))
    enc = {m: list(mlp(c, None, width=0.25).stages) for m, c in zip(data.modalities, data.in_channels, strict=True)}
    a = intermediate_fusion(enc, 10, fuse_after=(0, 1, 2), example=x)
    assert a(x).logits.shape == (4, 10) and count_parameters(a) > 0
    enc = {m: list(mlp(c, None, width=0.25).stages) for m, c in zip(data.modalities, data.in_channels, strict=True)}
    b = late_fusion(enc, 10, example=x)
    assert b(x).logits.shape == (4, 10)


def test_guided_trains_end_to_end_on_six_views_and_on_two(data_dir, tmp_path, capsys):
    common = ["--dataset", "mfeat", "--method", "guided", "--epochs", "3", "--batch-size", "8", "--device", "cpu"]
    common += ["--data-dir", str(data_dir), "--no-progress", "--set", "width=0.25", "--set", "val_fraction=0.2"]
    assert main(["train", *common, "--out", str(tmp_path / "six")]) == 0
    assert main(["train", *common, "--modalities", "pix,fou", "--out", str(tmp_path / "two")]) == 0
    six = [json.loads(line) for line in (tmp_path / "six" / "results.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "results.jsonl").read_text().splitlines()]
    assert len(six) == len(two) == 3
    assert "u_others_given_m5" in six[-1]["val"] and "d_util" in two[-1]["val"]
    steps = (tmp_path / "six" / "steps.csv").read_text().splitlines()
    assert any(",rebalance" in line for line in steps[1:])  # guided re-balanced some branch after warm-up
    config = json.loads((tmp_path / "two" / "config.json").read_text())["config"]
    assert config["modalities"] == ["pix", "fou"] and config["optimizer"] == "adam"
