"""easy-VQA (data/easy_vqa.py) on a tiny wheel in the real format (tests/wheel_fixtures.py): the conversion keeps
every pixel and question, validation is held out by image (no image in two splits), the vocabulary comes from the
training questions only, items are padded one-hot questions with their image, and guided trains end to end."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from greedymm.cli import main
from greedymm.data import load_dataset
from greedymm.data.easy_vqa import UNKNOWN, build_vocabulary, encode, tokenize
from greedymm.data.idx import DataFormatError
from greedymm.data.wheels import VQA_ROOT, WHEELS, cache_path, fetch_wheel, load_cache
from wheel_fixtures import (
    VQA_ANSWERS,
    VQA_IMAGES,
    VQA_TEST_ONLY,
    fetched,
    vqa_image,
    vqa_members,
    vqa_questions,
    write_wheel,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fetched("easy-vqa", tmp_path_factory.mktemp("vqa"))


def test_the_conversion_keeps_every_pixel_and_question(data_dir):
    arrays, info = load_cache("easy-vqa", data_dir)
    assert info["real_data"] is True and arrays["answers"].tolist() == VQA_ANSWERS
    for split, offset in (("train", 0), ("test", 1000)):
        assert arrays[f"{split}_images"].shape == (VQA_IMAGES[split], 64, 64, 3)
        for k in (0, VQA_IMAGES[split] - 1):
            assert np.array_equal(arrays[f"{split}_images"][k], vqa_image(k + offset)[0])  # PNG is lossless
        rows = vqa_questions(split)
        assert arrays[f"{split}_questions"].tolist() == [r[0] for r in rows]
        assert [VQA_ANSWERS[a] for a in arrays[f"{split}_answers"]] == [r[1] for r in rows]
        assert arrays[f"{split}_image_ids"].tolist() == [r[2] for r in rows]


def test_validation_is_held_out_by_image_and_every_question_stays(data_dir):
    data = load_dataset("easy-vqa", data_dir=data_dir, val_fraction=0.25, data_seed=3)
    train_ids, val_ids = set(data.train.image_ids.tolist()), set(data.val.image_ids.tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(VQA_IMAGES["train"]))
    assert len(val_ids) == 10  # 0.25 of 40 images
    assert len(data.train) + len(data.val) == len(vqa_questions("train"))
    assert len(data.test) == len(vqa_questions("test"))
    # every item's image row points at an image of its own split: all 4 questions of an image are in one split
    for split in (data.train, data.val):
        ids = split.image_ids[split.image_rows]
        assert torch.equal(torch.bincount(ids, minlength=40)[ids], torch.full_like(ids, 4))
    other = load_dataset("easy-vqa", data_dir=data_dir, val_fraction=0.25, data_seed=4)
    assert set(other.val.image_ids.tolist()) != val_ids  # the seed draws the images
    again = load_dataset("easy-vqa", data_dir=data_dir, val_fraction=0.25, data_seed=3)
    assert set(again.val.image_ids.tolist()) == val_ids


def test_the_vocabulary_comes_from_the_training_questions_only(data_dir):
    data = load_dataset("easy-vqa", data_dir=data_dir)
    vocabulary = data.source["vocabulary"]
    assert vocabulary[0] == UNKNOWN and vocabulary[1:] == sorted(vocabulary[1:])
    assert "which" not in vocabulary and "colour" not in vocabulary  # only a test question uses them
    assert data.in_channels == (3, len(vocabulary) + 1)
    test_rows = vqa_questions("test")
    i = next(k for k, r in enumerate(test_rows) if r[0] == VQA_TEST_ONLY)
    x, _ = data.test.batch(torch.tensor([i]))
    words = x["question"][0, :-1].argmax(0)[: int(x["question"][0, -1].sum())]
    # "which colour is this shape": which, colour and this are unknown; is and shape are known
    assert [vocabulary[w] for w in words] == [UNKNOWN, UNKNOWN, "is", UNKNOWN, "shape"]


def test_tokenize_and_encode_by_hand():
    assert tokenize("What color is the shape?") == ["what", "color", "is", "the", "shape"]
    vocab = build_vocabulary(["is there a red shape?", "what is it"])
    assert vocab == [UNKNOWN, "a", "is", "it", "red", "shape", "there", "what"]
    assert encode(["what is blue", "a"], vocab, 4).tolist() == [[7, 2, 0, -1], [1, -1, -1, -1]]


def test_items_are_an_image_and_a_padded_one_hot_question(data_dir):
    data = load_dataset("easy-vqa", data_dir=data_dir)
    rows = vqa_questions("train")
    x, y = data.train.batch(torch.arange(len(data.train)))
    length = max(len(tokenize(r[0])) for split in ("train", "test") for r in vqa_questions(split))
    assert x["question"].shape == (len(data.train), data.in_channels[1], length)
    assert x["image"].shape == (len(data.train), 3, 64, 64) and x["image"].dtype == torch.float32
    q = x["question"]
    assert torch.equal(q[:, :-1].sum(1), q[:, -1])  # one token per real position, none in the padding
    for i in range(0, len(data.train), 7):
        image_id = int(data.train.image_ids[data.train.image_rows[i]])
        row = next(r for r in rows if r[2] == image_id and VQA_ANSWERS.index(r[1]) == int(y[i]))
        assert int(q[i, -1].sum()) == len(tokenize(row[0]))
        expected = torch.from_numpy(vqa_image(image_id)[0]).permute(2, 0, 1).float() / 255
        assert torch.equal(x["image"][i], expected)
    small = load_dataset("easy-vqa", data_dir=data_dir, image_size=32)
    xs, _ = small.train.batch(torch.tensor([0]))
    big = x["image"][0] * 255
    blocks = big.reshape(3, 32, 2, 32, 2).mean(dim=(2, 4))  # the mean of each 2 x 2 block, rounded
    assert torch.allclose(xs["image"][0] * 255, torch.round(blocks), atol=1e-4)


def test_bad_options_name_the_fix(data_dir):
    with pytest.raises(ValueError, match="image_size must be 64"):
        load_dataset("easy-vqa", data_dir=data_dir, image_size=48)
    with pytest.raises(ValueError, match="no options \\['size'\\]"):
        load_dataset("easy-vqa", data_dir=data_dir, size=32)
    with pytest.raises(FileNotFoundError, match="greedymm data fetch easy-vqa"):
        load_dataset("easy-vqa", data_dir=data_dir / "nowhere")


def _wheel_with(tmp_path, change) -> tuple:
    members = vqa_members()
    change(members)
    wheel = tmp_path / "x.whl"
    return wheel, write_wheel(wheel, members)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop(f"{VQA_ROOT}train/images/3.png"), "expected images 0.png .. N-1.png"),
        (lambda m: m.update({f"{VQA_ROOT}test/images/2.png": b"\x89PNG broken"}), "not a readable PNG"),
        (lambda m: m.update({f"{VQA_ROOT}train/questions.json": json.dumps([["q?", "maybe", 0]]).encode()}),
         "an answer from answers.txt"),
        (lambda m: m.update({f"{VQA_ROOT}test/questions.json": json.dumps([["q?", "yes", 99]]).encode()}),
         "the id of one of the 8 test images"),
        (lambda m: m.update({f"{VQA_ROOT}train/questions.json": b"[not json"}), "is not JSON"),
        (lambda m: m.pop(f"{VQA_ROOT}answers.txt"), "no easy_vqa/data/answers.txt; is it the easy-vqa==1.0 wheel"),
    ],
)  # fmt: skip
def test_a_malformed_wheel_is_refused_and_nothing_is_written(tmp_path, change, message):
    wheel, sha = _wheel_with(tmp_path, change)
    with pytest.raises(DataFormatError, match=message):
        fetch_wheel("easy-vqa", tmp_path / "data", wheel=wheel, sha256=sha)
    assert list((tmp_path / "data").iterdir()) == []


def test_the_pinned_checksum_refuses_another_wheel_and_a_damaged_cache_names_the_fix(data_dir, tmp_path):
    wheel, _ = _wheel_with(tmp_path, lambda m: None)
    with pytest.raises(Exception, match="sha256 .*greedymm data fetch easy-vqa"):
        fetch_wheel("easy-vqa", tmp_path / "d", wheel=wheel)
    assert list((tmp_path / "d").iterdir()) == []
    cut = tmp_path / "cut.whl"
    cut.write_bytes(wheel.read_bytes()[:5000])
    with pytest.raises(DataFormatError, match="fetch again"):
        fetch_wheel("easy-vqa", tmp_path / "d", wheel=cut, sha256=hashlib.sha256(cut.read_bytes()).hexdigest())
    assert list((tmp_path / "d").iterdir()) == []
    copy = tmp_path / "copy"
    (copy / "easy-vqa").mkdir(parents=True)
    for f in cache_path("easy-vqa", data_dir).parent.iterdir():
        (copy / "easy-vqa" / f.name).write_bytes(f.read_bytes())
    raw = bytearray(cache_path("easy-vqa", copy).read_bytes())
    raw[len(raw) // 3] ^= 0x01
    cache_path("easy-vqa", copy).write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="damaged.*greedymm data fetch easy-vqa"):
        load_dataset("easy-vqa", data_dir=copy)


def test_the_pinned_wheel_is_the_one_checked():
    spec = WHEELS["easy-vqa"]
    assert spec.package == "easy-vqa==1.0" and spec.wheel_name == "easy_vqa-1.0-py3-none-any.whl"
    assert spec.sha256 == "fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f"


@pytest.mark.parametrize("fusion", ["mmtm", "concat"])
def test_guided_and_vanilla_train_end_to_end(data_dir, tmp_path, fusion):
    method = "guided" if fusion == "mmtm" else "vanilla"
    args = ["train", "--dataset", "easy-vqa", "--method", method, "--fusion", fusion, "--epochs", "2",
            "--batch-size", "16", "--width", "0.25", "--device", "cpu", "--no-progress", "--seed", "0",
            "--data-dir", str(data_dir), "--set", "data.image_size=16", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["modalities"] == ["image", "question"]
    assert 0 <= records[-1]["test"]["acc"] <= 1 and records[-1]["source"]["real_data"] is True


def test_the_real_cache_when_fetched():
    """Runs where `greedymm data fetch easy-vqa` was run ($GREEDYMM_DATA or ./data); skipped elsewhere."""
    from greedymm.data.fetch import data_root

    if not cache_path("easy-vqa", data_root(None)).is_file():
        pytest.skip("easy-vqa is not fetched here (greedymm data fetch easy-vqa)")
    data = load_dataset("easy-vqa", data_dir=data_root(None))
    assert len(data.train) + len(data.val) == 38575 and len(data.test) == 9673 and data.num_classes == 13
    assert len(data.train.image_ids) + len(data.val.image_ids) == 4000 and len(data.test.images) == 1000


def test_choosing_modalities_keeps_each_its_backbone(data_dir):
    from greedymm.data import select_modalities
    from greedymm.models import build_model

    data = load_dataset("easy-vqa", data_dir=data_dir)
    swapped = select_modalities(data, ["question", "image"])
    assert swapped.arch == ("text", "small-cnn") and swapped.in_channels == (data.in_channels[1], 3)
    alone = select_modalities(data, ["question"])
    assert alone.arch == ("text",)
    x, _ = alone.train.batch(torch.arange(3))
    model = build_model(alone.arch, alone.modalities, alone.in_channels, 13, width=0.25)
    assert model(x).logits.shape == (3, 13)
