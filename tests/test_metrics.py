"""Conditional utilization rate and learning speed against hand computation (docs/PAPER.md sections 3 and 4)."""

import math

import pytest
import torch
from torch import nn

from greedymm.metrics import (
    SpeedTracker,
    d_speed,
    group_speed,
    pairwise_utilization,
    sum_sq,
    util_names,
    utilization_rate,
    utilization_summary,
)


def _u(acc, cut):
    return [utilization_rate(a, c) for a, c in zip(acc, cut, strict=True)]


def test_utilization_from_given_accuracies():
    u = _u([0.8, 0.5], [0.6, 0.45])
    assert u == pytest.approx([0.25, 0.1])  # (0.8 - 0.6) / 0.8, (0.5 - 0.45) / 0.5
    summary = utilization_summary(u, of_others=True)
    assert summary["d_util"] == pytest.approx(0.15)
    assert summary["least_used"] == 0  # head 0 leans more on m1 than head 1 on m0: m0 is under-used
    assert util_names(2, "intermediate") == ("u_m1_given_m0", "u_m0_given_m1")  # the paper's names


def test_negative_utilization_is_not_clipped():
    u = _u([0.4, 0.9], [0.6, 0.0])
    assert u == pytest.approx([-0.5, 1.0])  # (0.4 - 0.6) / 0.4
    assert utilization_summary(u, of_others=True)["d_util"] == pytest.approx(-1.5)  # outside [-1, 1], as is


def test_three_modality_summary_spread_and_least_used():
    u = _u([0.9, 0.6, 0.5], [0.45, 0.54, 0.5])  # 0.5, 0.1, 0.0
    s = utilization_summary(u, of_others=True)
    assert "d_util" not in s and s["util_spread"] == pytest.approx(0.5) and s["least_used"] == 0
    assert util_names(3, "intermediate") == ("u_others_given_m0", "u_others_given_m1", "u_others_given_m2")
    # late fusion: u(m_j) is how much the prediction needs m_j; the least used has the smallest
    late = _u([0.8, 0.8, 0.8], [0.2, 0.8, 0.7])  # 0.75, 0.0, 0.125
    s = utilization_summary(late, of_others=False)
    assert s["least_used"] == 1 and s["util_spread"] == pytest.approx(0.75)
    # N = 2 late fusion: d_util = u(m1) - u(m0) > 0 means m0 is under-used, as for MMTM
    assert utilization_summary([0.1, 0.6], of_others=False)["d_util"] == pytest.approx(0.5)
    nan = utilization_summary([math.nan, 0.2, 0.1], of_others=True)
    assert nan["least_used"] is None and math.isnan(nan["util_spread"])


def test_pairwise_utilization():
    # acc_removed[j][k] = A(f_k) with m_j removed; heads 0.8, 0.5, 0.4
    removed = [[0.8, 0.25, 0.4], [0.4, 0.5, 0.2], [0.8, 0.5, 0.4]]
    u = pairwise_utilization([0.8, 0.5, 0.4], removed)
    assert u["u_m0_given_m1"] == pytest.approx(0.5) and u["u_m1_given_m0"] == pytest.approx(0.5)
    assert u["u_m1_given_m2"] == pytest.approx(0.5) and u["u_m2_given_m0"] == 0.0
    assert len(u) == 6


def test_d_speed_signed_for_two_spread_for_more():
    assert d_speed([0.3, -0.2]) == pytest.approx(0.5)
    assert d_speed([-0.2, 0.3]) == pytest.approx(-0.5)
    assert d_speed([0.1, 0.7, -0.4]) == pytest.approx(1.1)
    assert math.isnan(d_speed([0.1, math.nan, 0.2])) and math.isnan(d_speed([0.3]))


def test_sum_of_squares_is_accurate_in_float64():
    torch.manual_seed(0)
    t = [torch.randn(2_400_000) * 0.01, torch.randn(1000)]
    exact = sum(float(x.double().square().sum()) for x in t)
    got = sum_sq(t)
    assert got.dtype == torch.float64
    # torch._foreach_norm in float32 was 6e-5 off here; per-tensor sums with float64 accumulation ~1e-8
    assert abs(float(got) - exact) / exact < 1e-6


def test_utilization_undefined_at_zero_accuracy():
    assert math.isnan(utilization_rate(0.0, 0.1))


def _param(values, grad):
    p = nn.Parameter(torch.tensor(values))
    p.grad = torch.tensor(grad)
    return p


def test_group_speed_sums_then_divides():
    p1 = _param([3.0, 4.0], [1.0, 0.0])  # ||p||^2 = 25, ||g||^2 = 1
    p2 = _param([0.0, 0.0, 5.0], [2.0, 2.0, 1.0])  # 25, 9
    assert group_speed([p1, p2]).item() == pytest.approx(10 / 50)  # not mean(1/25, 9/25) by accident
    p3 = _param([1.0], [3.0])  # 1, 9
    assert group_speed([p1, p3]).item() == pytest.approx(10 / 26)  # a ratio of sums, not a mean of ratios


def test_speed_tracker_cumulative_log10_and_d_speed():
    theta0 = [_param([1.0, 0.0], [0.1, 0.0])]  # mu = 0.01
    theta1 = [_param([2.0, 0.0], [0.6, 0.2])]  # mu = 0.4 / 4 = 0.1: the thetas differ, so a psi_k divided by
    psi0 = [_param([1.0], [1.0])]  # mu = 1                                          the other branch's theta shows
    psi1 = [_param([1.0], [0.1])]  # mu = 0.01
    t = SpeedTracker()
    t.update([theta0, theta1, psi0, psi1])
    t.update([theta0, theta1, psi0, psi1])
    assert t.sums.tolist() == pytest.approx([0.02, 0.2, 2.0, 0.02])
    (s10, s01), d = t.speeds()
    assert s10 == pytest.approx(2.0)  # log10(M_psi0 / M_theta0) = log10(2 / 0.02); swapped thetas would give 1
    assert s01 == pytest.approx(-1.0)  # log10(M_psi1 / M_theta1) = log10(0.02 / 0.2); swapped: 0
    assert d == pytest.approx(3.0)  # 2 - (-1); swapped: 1


def test_speed_tracker_three_branches():
    thetas = [[_param([1.0, 0.0], [0.1, 0.0])], [_param([2.0, 0.0], [0.6, 0.2])], [_param([1.0], [1.0])]]
    psis = [[_param([1.0], [g])] for g in (1.0, 0.1, 0.01)]  # mu = 1, 0.01, 1e-4; the thetas' mu = 0.01, 0.1, 1
    t = SpeedTracker(6)
    t.update(thetas + psis)
    s, d = t.speeds()
    assert s == pytest.approx([2.0, -1.0, -4.0])  # log10(1 / 0.01), log10(0.01 / 0.1), log10(1e-4 / 1)
    assert d == pytest.approx(6.0)  # max - min


def test_speed_tracker_is_nan_before_any_step():
    s, d = SpeedTracker().speeds()
    assert all(math.isnan(v) for v in s) and math.isnan(d)


def test_group_speed_matches_model_gradients(tiny_model):
    import torch.nn.functional as F

    from conftest import tiny_inputs

    m = tiny_model.train()
    l0, l1 = m(tiny_inputs(4)).heads
    y = torch.tensor([0, 1, 2, 3])
    (F.cross_entropy(l0, y) + F.cross_entropy(l1, y)).backward()
    for group in (m.theta(0), m.psi(1)):
        g2 = sum(float((p.grad.double() ** 2).sum()) for p in group)
        w2 = sum(float((p.detach().double() ** 2).sum()) for p in group)
        assert group_speed(group).item() == pytest.approx(g2 / w2, rel=1e-5)
