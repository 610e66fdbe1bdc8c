"""The Colored-and-gray construction (docs/DATA.md)."""

import torch

from greedymm.data import load_dataset
from greedymm.data.base import epoch_order, stratified_split
from greedymm.data.colored import MASK_THRESHOLD, PALETTE, class_colors, colorize, palette_colors, random_colors


def nearest_color_accuracy(split) -> float:
    x, y = split.batch(torch.arange(len(split)))
    gray, colored = x["gray"], x["colored"]
    mask = (gray >= MASK_THRESHOLD).float()
    mean_color = (colored * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1)  # (N, 3)
    pred = torch.cdist(mean_color, PALETTE).argmin(1)
    return (pred == y).float().mean().item()


def test_palette_channels_are_permutations_of_ten_levels():
    levels = torch.arange(10) * 0.1 + 0.05
    for ch in range(3):
        assert torch.allclose(PALETTE[:, ch].sort().values, levels)


def test_train_val_colors_predict_the_label_test_colors_do_not():
    d = load_dataset("cg-digits")
    # with noise std sqrt(0.02) per channel the classes overlap somewhat: a nearest-palette-color classifier
    # gets ~88% (computed for this palette); chance is 10%
    assert nearest_color_accuracy(d.train) > 0.8
    assert nearest_color_accuracy(d.val) > 0.8
    assert nearest_color_accuracy(d.test) < 0.2


def test_a_validation_drawn_like_test_keeps_its_items_and_takes_the_test_colors():
    a = load_dataset("cg-digits")
    b = load_dataset("cg-digits", random_color_val=True)
    assert nearest_color_accuracy(b.val) < 0.25  # measured 0.118; 0.912 with the training colors
    assert torch.equal(b.val.images, a.val.images) and torch.equal(b.val.labels, a.val.labels)  # same items
    assert torch.equal(b.train.colors, a.train.colors) and torch.equal(b.test.colors, a.test.colors)
    # drawn by the test split's own rule (its own seed): uniform colors; under PMR's scheme, the jittered palette
    # colors of random classes (variance 0.030), as PMR's test colors are
    assert torch.equal(b.val.colors, random_colors(len(b.val), 3))
    p = load_dataset("cg-digits", colors="pmr", random_color_val=True)
    assert torch.equal(p.val.colors, palette_colors(len(p.val), 3, 0.030)) and nearest_color_accuracy(p.val) < 0.25


def test_pixels_below_threshold_are_black_and_gray_is_the_same_digit():
    d = load_dataset("cg-digits")
    x, _ = d.test.batch(torch.arange(16))
    below = (x["gray"] < 0.3).expand_as(x["colored"])
    assert (x["colored"][below] == 0).all()
    above = (x["gray"] >= 0.3).squeeze(1)
    assert above.any()
    colors = d.test.colors[:16]
    for i in range(16):  # every foreground pixel carries the item's color
        assert torch.allclose(x["colored"][i][:, above[i]], colors[i][:, None].expand(-1, int(above[i].sum())))
    assert x["gray"].shape[1:] == (1, 28, 28) and x["colored"].shape[1:] == (3, 28, 28)


def test_colorize_by_hand():
    gray = torch.tensor([[[[0.0, 0.29], [0.3, 1.0]]]])
    out = colorize(gray, torch.tensor([[0.1, 0.5, 0.9]]))
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[0, :, 0, 1].tolist() == [0, 0, 0]
    assert torch.allclose(out[0, :, 1, 0], torch.tensor([0.1, 0.5, 0.9]))


def test_class_colors_are_noisy_palette_colors_in_range():
    labels = torch.arange(10).repeat(500)
    c = class_colors(labels, seed=0)
    assert c.min() >= 0 and c.max() <= 1
    assert torch.allclose(c[labels == 4].mean(0), PALETTE[4], atol=0.02)


def test_validation_is_held_out_stratified_and_deterministic():
    d1, d2 = load_dataset("cg-digits"), load_dataset("cg-digits")
    assert torch.equal(d1.val.images, d2.val.images) and torch.equal(d1.val.colors, d2.val.colors)
    assert len(d1.train) + len(d1.val) + len(d1.test) == 1797
    assert set(d1.val.labels.tolist()) == set(range(10))
    other = load_dataset("cg-digits", data_seed=1)  # another data seed holds out other items, as many
    assert len(other.val) == len(d1.val) and not torch.equal(other.val.images, d1.val.images)
    kept, held = stratified_split(torch.arange(100) % 4, 0.25, seed=0)
    # 25 items per class, round(0.25 * 25) = 6 of each held out
    assert (torch.arange(100) % 4)[held].bincount().tolist() == [6, 6, 6, 6]
    assert len(kept) == 76 and not set(kept.tolist()) & set(held.tolist())


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(10, 3, seed=1, epoch=0)
    assert [len(b) for b in a] == [3, 3, 3]  # the ragged last batch is dropped
    assert torch.equal(torch.cat(a), torch.cat(epoch_order(10, 3, seed=1, epoch=0)))
    assert not torch.equal(torch.cat(a), torch.cat(epoch_order(10, 3, seed=1, epoch=1)))
