"""The generated `synthetic` data set: shapes, determinism, the shortcut's shift, and option checks."""

import math

import pytest
import torch

from greedymm.data import list_datasets, load_dataset
from greedymm.data.synthetic import load_synthetic


def everything(split) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return split.batch(torch.arange(len(split)))


def nearest_centroid_accuracy(fit_split, eval_split, modality: str, classes: int = 10) -> float:
    """Class-mean images from ``fit_split``; each ``eval_split`` item gets the class of the closest mean."""
    x, y = everything(fit_split)
    centroids = torch.stack([x[modality][y == c].flatten(1).mean(0) for c in range(classes)])
    x, y = everything(eval_split)
    pred = torch.cdist(x[modality].flatten(1), centroids).argmin(1)
    return (pred == y).float().mean().item()


def test_registered_and_default_shapes():
    assert "synthetic" in list_datasets()
    d = load_dataset("synthetic")
    assert d.modalities == ("m0", "m1") and d.in_channels == (1, 1)
    assert d.num_classes == 10 and d.arch == "small-cnn"
    assert len(d.train) + len(d.val) == 2000 and len(d.val) == 200 and len(d.test) == 1000
    x, y = d.train.batch(torch.tensor([0, 5, 7]))
    assert set(x) == {"m0", "m1"}
    assert x["m0"].shape == (3, 1, 16, 16) and x["m0"].dtype == torch.float32
    assert y.shape == (3,) and y.dtype == torch.long
    assert d.is_standin and d.source["source"] == "synthetic" and "generated" in d.source["note"]
    assert d.source["knobs"]["signal"] == [0.25, 0.12] and d.source["knobs"]["shortcut"] is None


def test_three_modalities_names_channels_and_sizes():
    d = load_dataset("synthetic", modalities=3, image_size=8, size=300, test_size=50, classes=3)
    assert d.modalities == ("m0", "m1", "m2") and d.in_channels == (1, 1, 1) and d.num_classes == 3
    x, y = d.test.batch(torch.arange(4))
    assert [x[m].shape for m in d.modalities] == [(4, 1, 8, 8)] * 3
    assert set(everything(d.train)[1].tolist()) == {0, 1, 2}


def test_deterministic_for_a_seed_and_different_for_another():
    a, b = load_dataset("synthetic", data_seed=3), load_dataset("synthetic", data_seed=3)
    c = load_dataset("synthetic", data_seed=4)
    for split in ("train", "val", "test"):
        xa, ya = everything(getattr(a, split))
        xb, yb = everything(getattr(b, split))
        assert torch.equal(ya, yb) and all(torch.equal(xa[m], xb[m]) for m in a.modalities)
    assert not torch.equal(everything(a.test)[0]["m0"], everything(c.test)[0]["m0"])


def test_a_modality_does_not_change_when_the_others_do():
    base = everything(load_dataset("synthetic").test)[0]["m0"]
    other = everything(load_dataset("synthetic", modalities=3, signal=[0.25, 0.0, 2.0], noise=[1, 3, 0]).test)[0]
    assert torch.equal(base, other["m0"])


def test_default_modalities_differ_in_strength():
    d = load_dataset("synthetic")
    strong = nearest_centroid_accuracy(d.train, d.test, "m0")
    weak = nearest_centroid_accuracy(d.train, d.test, "m1")
    assert strong > 0.8 and 0.25 < weak < 0.75  # chance is 0.1


def test_shortcut_predicts_the_label_on_train_and_val_not_on_test():
    # signal 0 in m1 leaves only the shortcut there, so a decoder of m1 is a decoder of the shortcut
    d = load_dataset("synthetic", shortcut=1, signal=[0.25, 0.0])
    assert nearest_centroid_accuracy(d.train, d.train, "m1") > 0.95
    assert nearest_centroid_accuracy(d.train, d.val, "m1") > 0.95
    assert nearest_centroid_accuracy(d.train, d.test, "m1") < 0.2
    assert torch.equal(d.train.shortcut_labels, d.train.labels) and torch.equal(d.val.shortcut_labels, d.val.labels)
    assert (d.test.shortcut_labels == d.test.labels).float().mean() < 0.2
    # the shortcut touches only its own modality
    assert torch.equal(everything(d.test)[0]["m0"], everything(load_dataset("synthetic").test)[0]["m0"])


def test_no_shortcut_by_default_and_minus_one_means_none():
    d = load_dataset("synthetic", shortcut=-1)
    assert d.train.shortcut_labels is None and d.test.shortcut_labels is None
    assert torch.equal(everything(d.test)[0]["m1"], everything(load_dataset("synthetic").test)[0]["m1"])


def test_zero_signal_carries_no_class_information():
    d = load_dataset("synthetic", signal=[0.25, 0.0])
    x, y = everything(d.train)
    n_per_class = len(y) / 10

    def between_class_variance(m: str) -> float:
        means = torch.stack([x[m][y == c].flatten(1).mean(0) for c in range(10)])  # (10, H*W)
        return means.var(0).mean().item()

    # class means of pure noise differ only by sampling error, variance ~ 1 / n per pixel
    assert between_class_variance("m1") < 1.5 / n_per_class
    assert between_class_variance("m0") > 0.25**2 / 2
    assert nearest_centroid_accuracy(d.train, d.test, "m1") < 0.2


def test_json_values_are_accepted():
    d = load_dataset("synthetic", signal=[1, 0], noise=[0.5, 2], shortcut=0, shortcut_strength=2)
    assert d.source["knobs"]["signal"] == [1.0, 0.0] and d.source["knobs"]["shortcut_strength"] == 2.0
    x, _ = everything(d.test)
    assert x["m1"].std() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": 1}, "valid:"),
        ({"signal": [0.1, 0.2, 0.3]}, "3 values for 2 modalities"),
        ({"noise": -1.0}, "noise must be a finite number >= 0"),
        ({"noise": [1.0, math.nan]}, "noise[1]"),
        ({"signal": math.inf}, "finite"),
        ({"signal": "strong"}, "signal must be a number"),
        ({"shortcut": 2}, "shortcut must be a modality index in 0..1"),
        ({"shortcut": True}, "shortcut"),
        ({"modalities": 0}, "modalities must be >= 1"),
        ({"modalities": 2.5}, "modalities must be an integer"),
        ({"classes": 1}, "classes must be >= 2"),
        ({"image_size": 4}, "image_size must be >= 8"),
        ({"size": 5}, "size must be >= 10"),
        ({"shortcut_strength": -0.5}, "shortcut_strength"),
        ({"val_fraction": 0.0}, "no validation items"),
        ({"data_seed": 1.5}, "data_seed must be an integer"),
        ({"size": 10**9, "image_size": 64}, "lower size"),
    ],
)
def test_bad_options_are_refused_with_a_useful_message(options, message):
    with pytest.raises(ValueError, match="synthetic") as err:
        load_synthetic(**options)
    assert message in str(err.value)
