"""Conditional utilization rate and conditional learning speed against hand computation (SPEC 3, 4)."""

import math

import pytest
import torch
from torch import nn

from greedymm.metrics import SpeedTracker, Utilization, group_speed, utilization_rate


def test_utilization_from_given_accuracies():
    u = Utilization(acc_head0=0.8, acc_head1=0.5, acc_head0_cut=0.6, acc_head1_cut=0.45)
    assert u.u_m1_given_m0 == pytest.approx(0.25)  # (0.8 - 0.6) / 0.8
    assert u.u_m0_given_m1 == pytest.approx(0.1)  # (0.5 - 0.45) / 0.5
    assert u.d_util == pytest.approx(0.15)


def test_negative_utilization_is_not_clipped():
    u = Utilization(acc_head0=0.4, acc_head1=0.9, acc_head0_cut=0.6, acc_head1_cut=0.0)
    assert u.u_m1_given_m0 == pytest.approx(-0.5)  # (0.4 - 0.6) / 0.4
    assert u.u_m0_given_m1 == pytest.approx(1.0)
    assert u.d_util == pytest.approx(-1.5)  # outside [-1, 1], reported as is


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
    theta1 = [_param([2.0], [0.2])]  # mu = 0.04 / 4 = 0.01
    psi0 = [_param([1.0], [1.0])]  # mu = 1
    psi1 = [_param([1.0], [0.1])]  # mu = 0.01
    t = SpeedTracker()
    t.update([theta0, theta1, psi0, psi1])
    t.update([theta0, theta1, psi0, psi1])
    assert t.sums.tolist() == pytest.approx([0.02, 0.02, 2.0, 0.02])
    s10, s01, d = t.speeds()
    assert s10 == pytest.approx(2.0)  # log10(2 / 0.02)
    assert s01 == pytest.approx(0.0)  # log10(0.02 / 0.02)
    assert d == pytest.approx(2.0)


def test_speed_tracker_is_nan_before_any_step():
    assert all(math.isnan(v) for v in SpeedTracker().speeds())


def test_group_speed_matches_model_gradients(tiny_model):
    import torch.nn.functional as F

    from conftest import tiny_inputs

    m = tiny_model.train()
    l0, l1 = m(tiny_inputs(4))
    y = torch.tensor([0, 1, 2, 3])
    (F.cross_entropy(l0, y) + F.cross_entropy(l1, y)).backward()
    for group in (m.theta(0), m.psi(1)):
        g2 = sum(float((p.grad.double() ** 2).sum()) for p in group)
        w2 = sum(float((p.detach().double() ** 2).sum()) for p in group)
        assert group_speed(group).item() == pytest.approx(g2 / w2, rel=1e-5)
