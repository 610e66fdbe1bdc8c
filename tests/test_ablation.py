"""Utilization by ablation and learning speed from named parameter groups, for any model (metrics/ablation.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from greedymm.metrics.ablation import (
    GroupSpeed,
    accuracies,
    feature_means,
    input_means,
    noise_accuracy,
    utilization_by_ablation,
)


class OnlyA(nn.Module):
    """Two encoders and a sum: the logits are a's features; b's encoder output is multiplied by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.enc_a = nn.Identity()
        self.enc_b = nn.Identity()

    def forward(self, x):
        return {"logits": self.enc_a(x["a"]) + 0 * self.enc_b(x["b"]), "heads": [self.enc_b(x["b"])]}


def _items(n: int = 8):
    """Balanced labels 0/1; a = +-1 one-hot of the label (perfect), b = +-1 one-hot of (the label for the first
    half of each class, the other label for the rest): b alone is right on half the items."""
    y = torch.arange(n) % 2
    a = torch.nn.functional.one_hot(y, 2).float() * 2 - 1
    flip = torch.arange(n) >= n // 2
    b = torch.nn.functional.one_hot(torch.where(flip, 1 - y, y), 2).float() * 2 - 1
    return {"a": a, "b": b}, y


def _source(x, y, size=3):
    return lambda: [({k: v[i : i + size] for k, v in x.items()}, y[i : i + size]) for i in range(0, len(y), size)]


def test_mean_filled_inputs_give_the_rates_worked_out_by_hand():
    x, y = _items()
    means = input_means(_source(x, y)(), ["a", "b"])
    assert torch.equal(means["a"], torch.zeros(2)) and torch.equal(means["b"], torch.zeros(2))
    u = utilization_by_ablation(OnlyA(), _source(x, y), ["a", "b"], fill="mean", means=means)
    # a at its mean: logits (0, 0) for every item, argmax picks class 0: right on half the items
    assert u["acc"] == 1.0
    assert u["acc_without"] == {"a": 0.5, "b": 1.0}
    assert u["u"] == {"a": 0.5, "b": 0.0}
    assert u["acc_only"] == {"a": 1.0, "b": 0.5}  # only a left = b removed; only b left = a removed
    # the head reads b: right on half the items; b at its mean: constant logits, again half
    assert u["heads"] == [{"acc": 0.5, "acc_without": {"a": 0.5, "b": 0.5}, "u": {"a": 0.0, "b": 0.0}}]


def test_zeros_at_a_named_encoder_output_through_a_hook():
    x, y = _items()
    model = OnlyA()
    u = utilization_by_ablation(model, _source(x, y), ["a", "b"], fill="zeros", at={"a": "enc_a", "b": "enc_b"})
    assert u["acc_without"] == {"a": 0.5, "b": 1.0}
    assert not model.enc_a._forward_hooks  # hooks removed afterwards
    means = feature_means(model, _source(x, y)(), {"a": "enc_a", "b": "enc_b"})
    assert torch.allclose(means["a"], torch.zeros(2))
    u2 = utilization_by_ablation(model, _source(x, y), ["a", "b"], fill="mean", at={"a": "enc_a", "b": "enc_b"},
                                 means=means)  # fmt: skip
    assert u2["u"] == {"a": 0.5, "b": 0.0}


def test_three_modalities_only_one_left_runs_its_own_pass():
    class Sum3(nn.Module):
        def forward(self, x):
            return x["a"] + x["b"] + x["c"]

    x, y = _items()
    x["c"] = torch.zeros_like(x["a"])
    x["b"] = x["b"] * 0.1  # b alone still decides when a is gone, but never outweighs a
    means = {k: torch.zeros(2) for k in x}
    u = utilization_by_ablation(Sum3(), _source(x, y), ["a", "b", "c"], means=means)
    assert u["acc"] == 1.0 and u["acc_without"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert u["acc_only"] == {"a": 1.0, "b": 0.5, "c": 0.5}


def test_noise_at_level_zero_changes_nothing_and_large_noise_hurts():
    x, y = _items(64)
    src = _source(x, y, 16)
    model = OnlyA()
    assert noise_accuracy(model, src, "a", 0.0, 1.0) == accuracies(model, src())[0] == 1.0
    assert noise_accuracy(model, src, "a", 10.0, 1.0, seed=1) < 0.8
    assert noise_accuracy(model, src, "b", 10.0, 1.0, seed=1) == 1.0  # b is not used


def test_bad_names_are_refused_with_the_fix():
    x, y = _items()
    with pytest.raises(ValueError, match=r"no module 'enc_c'.*\['enc_a', 'enc_b'\]"):
        utilization_by_ablation(OnlyA(), _source(x, y), ["a", "b"], fill="zeros", at={"a": "enc_c", "b": "enc_b"})
    with pytest.raises(ValueError, match=r"also name one for \['b'\]"):
        utilization_by_ablation(OnlyA(), _source(x, y), ["a", "b"], fill="zeros", at={"a": "enc_a"})
    with pytest.raises(ValueError, match="fill must be one of"):
        utilization_by_ablation(OnlyA(), _source(x, y), ["a"], fill="median")
    with pytest.raises(ValueError, match="needs the training means"):
        utilization_by_ablation(OnlyA(), _source(x, y), ["a"], fill="mean")


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc_a = nn.Linear(2, 1, bias=False)
        self.enc_b = nn.Linear(2, 1, bias=False)
        self.fuse = nn.Linear(1, 1, bias=False)


def test_group_speed_sums_mu_and_gives_the_sign_of_mmtm():
    m = Two()
    with torch.no_grad():
        m.enc_a.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||w||^2 = 25
        m.enc_b.weight.copy_(torch.tensor([[1.0, 0.0]]))  # 1
        m.fuse.weight.copy_(torch.tensor([[2.0]]))  # 4
    m.enc_a.weight.grad = torch.tensor([[1.0, 0.0]])  # mu = 1 / 25
    m.enc_b.weight.grad = torch.tensor([[0.0, 1.0]])  # mu = 1
    m.fuse.weight.grad = torch.tensor([[1.0]])  # mu = 1 / 4
    speed = GroupSpeed(m, {"a": "enc_a", "b": "enc_b", "fusion": "fuse"}, {"a": "a", "b": "b"}, fusion="fusion")
    mus = speed.update()
    assert mus == pytest.approx({"a": 0.04, "b": 1.0, "fusion": 0.25})
    speed.update()
    s = speed.speeds()
    assert s["M"] == pytest.approx({"a": 0.08, "b": 2.0, "fusion": 0.5})
    assert s["s"]["a"] == pytest.approx(math.log10(0.5 / 0.08))
    assert s["s"]["b"] == pytest.approx(math.log10(0.5 / 2.0))
    # d_speed = s_a - s_b = log10(M_b / M_a) > 0: a's encoder learns slower, as MMTM's sign says
    assert s["d_speed"] == pytest.approx(math.log10(2.0 / 0.08)) and s["d_speed"] > 0
    assert s["steps"] == 2


def test_group_speed_refuses_unknown_shared_or_empty_groups():
    m = Two()
    with pytest.raises(ValueError, match="no module 'enc_x'"):
        GroupSpeed(m, {"a": "enc_x"}, {"a": "a"})
    with pytest.raises(ValueError, match="share parameters"):
        GroupSpeed(m, {"a": "enc_a", "both": ["enc_a", "enc_b"]}, {"a": "a"})
    with pytest.raises(ValueError, match=r"modality 'b': no speed group 'b'"):
        GroupSpeed(m, {"a": "enc_a"}, {"a": "a", "b": "b"})
    m.fuse.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="holds no trainable parameters"):
        GroupSpeed(m, {"f": "fuse"}, {})
