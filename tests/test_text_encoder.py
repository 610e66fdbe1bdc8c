"""The text encoder (models/text.py) and branches of different architectures in one network: one-hot tokens with a
mask, padding that changes nothing, both model families through build_model and the user builders, and the rule
that lines up the fusion points of mixed architectures under MMTM."""

from __future__ import annotations

import pytest
import torch

from greedymm import intermediate_fusion, late_fusion
from greedymm.models import ARCHITECTURES, REGULAR, LateFusionNet, MMTMNet, build_model, rebalance
from greedymm.models.branch import Branch
from greedymm.models.text import TEXT_FUSE_AFTER, one_hot_tokens, text

VOCAB = 6


def test_one_hot_tokens_by_hand():
    x = one_hot_tokens([[2, 0, 5], [4]], VOCAB)
    assert x.shape == (2, VOCAB + 1, 3)
    expected0 = torch.zeros(VOCAB + 1, 3)
    expected0[2, 0] = expected0[0, 1] = expected0[5, 2] = 1
    expected0[VOCAB] = 1  # three words: the mask is 1 1 1
    expected1 = torch.zeros(VOCAB + 1, 3)
    expected1[4, 0] = expected1[VOCAB, 0] = 1  # one word, then two padded positions: all channels 0
    assert torch.equal(x[0], expected0) and torch.equal(x[1], expected1)
    assert torch.equal(one_hot_tokens(torch.tensor([[2, 0, 5], [4, -1, -1]]), VOCAB), x)
    assert one_hot_tokens([[1]], VOCAB, length=4).shape == (1, VOCAB + 1, 4)
    with pytest.raises(ValueError, match="0..5"):
        one_hot_tokens([[6]], VOCAB)
    with pytest.raises(ValueError, match="does not fit length 2"):
        one_hot_tokens([[1, 2, 3]], VOCAB, length=2)


def test_the_encoder_is_a_token_embedding_then_convolutions():
    branch = text(VOCAB + 1, 4, width=0.5)
    assert len(branch.stages) == 4 and branch.channels == (17, 33, 33, 32) and TEXT_FUSE_AFTER == (1, 2, 3)
    emb = branch.stages[0]
    x = one_hot_tokens([[3, 1]], VOCAB)
    out = emb(x)
    w = emb.embed.weight[:, :, 0]  # (E, V): column v is token v's vector
    # two real tokens of two: the scale L / real is 1; the maps are the looked-up vectors and the mask
    assert torch.allclose(out[0, :16], torch.stack([w[:, 3], w[:, 1]], dim=1))
    assert torch.equal(out[0, 16], torch.ones(2))
    padded = emb(one_hot_tokens([[3, 1]], VOCAB, length=8))
    # padded to 8: real positions scaled by 8 / 2, padding zero, so the mean over the 8 positions is the mean of two
    assert torch.allclose(padded[0, :, :2], out[0] * 4) and torch.equal(padded[0, :, 2:], torch.zeros(17, 6))
    assert torch.allclose(padded.mean(-1), out.mean(-1))
    with pytest.raises(ValueError, match="mask channel"):
        text(1, 4)


def _pair(batch_lengths: list[int], length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in batch_lengths]
    return {"image": torch.rand(len(ids), 3, 16, 16, generator=g), "question": one_hot_tokens(ids, VOCAB, length)}


@pytest.mark.parametrize("fusion", ["mmtm", "concat", "sum", "film", "gated"])
def test_padding_changes_nothing_in_either_family(fusion):
    torch.manual_seed(0)
    model = build_model(("small-cnn", "text"), ("image", "question"), (3, VOCAB + 1), 4, fusion=fusion, width=0.25)
    model = model.double().eval()
    short, long_ = _pair([3], 3), _pair([3], 11)
    short, long_ = ({k: v.double() for k, v in x.items()} for x in (short, long_))
    assert torch.equal(short["image"], long_["image"])
    assert torch.allclose(model(short).logits, model(long_).logits, atol=1e-12)
    for mode in model.training_modes():  # MMTM: every re-balancing mode sees the same squeeze
        assert torch.allclose(model(short, mode).logits, model(long_, mode).logits, atol=1e-12)


def test_a_batch_of_texts_of_different_lengths_gives_what_each_gives_alone():
    torch.manual_seed(0)
    model = build_model(("small-cnn", "text"), ("image", "question"), (3, VOCAB + 1), 4, width=0.25).double().eval()
    batch = {k: v.double() for k, v in _pair([1, 4, 7], 7, seed=3).items()}
    together = model(batch).logits
    for i, n in enumerate([1, 4, 7]):
        alone = {"image": batch["image"][i : i + 1], "question": batch["question"][i : i + 1, :, :n]}
        assert torch.allclose(model(alone).logits, together[i : i + 1], atol=1e-12)


@pytest.mark.parametrize("fusion", ["mmtm", "concat"])
def test_text_trains_in_both_families_with_every_mode(fusion):
    torch.manual_seed(0)
    model = build_model(("small-cnn", "text"), ("image", "question"), (3, VOCAB + 1), 4, fusion=fusion, width=0.25)
    assert isinstance(model, MMTMNet if fusion == "mmtm" else LateFusionNet)
    x, y = _pair([2, 5, 3, 4], 5), torch.tensor([0, 1, 2, 3])
    for mode in model.training_modes():
        model.zero_grad()
        model.loss(model(x, mode), y).backward()
        text_grads = [p.grad for p in model.encoder(1).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in text_grads)
    if fusion == "mmtm":
        assert model.training_modes() == (REGULAR, rebalance(0), rebalance(1))
        assert model.fuse_after == (1, 2, 3) and [f.channels for f in model.fusions] == [(8, 17), (16, 17), (16, 16)]


def test_the_user_builders_take_the_text_stages():
    x = _pair([2, 5], 5)
    enc = {"image": list(ARCHITECTURES["small-cnn"][0](3, None, width=0.25).stages),
           "question": list(text(VOCAB + 1, None, width=0.25).stages)}  # fmt: skip
    assert intermediate_fusion(enc, 4, fuse_after=(1, 2, 3), example=x)(x).logits.shape == (2, 4)
    enc = {"question": list(text(VOCAB + 1, None, width=0.25).stages)}
    assert late_fusion(enc, 4, example={"question": x["question"]})(x).logits.shape == (2, 4)


def test_mixed_architectures_line_up_their_fusion_points():
    """seq1d (3 stages, MMTM after all) with small-cnn (4 stages, MMTM after the last 3): the CNN's first two
    stages become one, so stage i of both branches ends at fusion point i; nothing is lost or added."""
    torch.manual_seed(0)
    model = build_model(("seq1d", "small-cnn"), ("audio", "image"), (3, 1), 5, width=0.25)
    assert model.fuse_after == (0, 1, 2)
    assert [len(b.stages) for b in model.branches] == [3, 3] and model.branches[1].channels == (8, 16, 16)
    torch.manual_seed(0)
    plain_cnn = ARCHITECTURES["small-cnn"][0](1, 5, width=0.25)
    assert sum(p.numel() for p in model.branches[1].parameters()) == sum(p.numel() for p in plain_cnn.parameters())
    audio = torch.randn(2, 3, 12)
    audio[:, -1] = 1
    x, y = {"audio": audio, "image": torch.rand(2, 1, 12, 12)}, torch.tensor([1, 4])
    for mode in model.training_modes():
        model.zero_grad()
        model.loss(model(x, mode), y).backward()
    assert len(model.speed_groups()) == 4
    late = build_model(("seq1d", "small-cnn"), ("audio", "image"), (3, 1), 5, fusion="concat", width=0.25)
    assert late(x).logits.shape == (2, 5) and len(late.encoder(1).stages) == 4  # late fusion: untouched
    # one architecture for all: the network is built as before (no stage merged)
    same = build_model("small-cnn", ("a", "b"), (1, 1), 5, width=0.25)
    assert same.fuse_after == (1, 2, 3) and len(same.branches[0].stages) == 4


def test_architectures_that_cannot_be_lined_up_are_refused(monkeypatch):
    def two_stages(c, n, width=1.0):
        return Branch([torch.nn.Conv1d(c, 4, 1), torch.nn.Conv1d(4, 4, 1)], channels=[4, 4], num_classes=n)

    monkeypatch.setitem(ARCHITECTURES, "two", (two_stages, (0, 1)))
    with pytest.raises(ValueError, match="different numbers of MMTM points"):
        build_model(("two", "text"), ("a", "b"), (2, 3), 4)
    monkeypatch.setitem(ARCHITECTURES, "first-of-three", (ARCHITECTURES["seq1d"][0], (0, 1)))
    with pytest.raises(ValueError, match="not fused after its last 2 stages"):
        build_model(("two", "first-of-three"), ("a", "b"), (2, 3), 4)
    with pytest.raises(ValueError, match="one architecture per modality"):
        build_model(("text",), ("a", "b"), (3, 3), 4)
    with pytest.raises(ValueError, match="unknown architecture 'txt'"):
        build_model(("small-cnn", "txt"), ("a", "b"), (3, 3), 4)
