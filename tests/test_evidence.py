"""greedymm.report.evidence: the verdict rule, on numbers worked out by hand.

t quantiles used below (printed tables): t(0.975, 2) = 4.302653, t(0.975, 4) = 2.776445."""

import math

import pytest

from greedymm.report.evidence import CANNOT_JUDGE, DOES_NOT_HOLD, HOLDS, against, compare, t_quantile


def test_t_quantiles_match_the_printed_tables():
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)


def test_paired_interval_by_hand_and_holds():
    # d = (0.10, 0.11, 0.09): mean 0.10, sd 0.01, se 0.01 / sqrt(3) = 0.0057735; half = 4.302653 * se = 0.0248414
    c = compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.75])
    assert c.verdict == HOLDS and c.holds is True
    assert c.mean_diff == pytest.approx(0.10)
    assert c.ci == pytest.approx((0.0751586, 0.1248414), abs=1e-6)
    assert (c.n, c.wins, c.losses, c.ties) == (3, 3, 0, 0)
    assert c.reasons == ()


def test_the_opposite_side_does_not_hold_and_direction_less_flips_it():
    c = compare([0.70, 0.71, 0.75], [0.80, 0.82, 0.84])
    assert c.verdict == DOES_NOT_HOLD and c.holds is False
    assert c.ci == pytest.approx((-0.1248414, -0.0751586), abs=1e-6)
    assert (c.wins, c.losses) == (0, 3)
    less = compare([0.70, 0.71, 0.75], [0.80, 0.82, 0.84], direction="less")
    assert less.verdict == HOLDS and (less.wins, less.losses) == (3, 0)


def test_an_interval_that_contains_zero_cannot_judge():
    # d = (0.05, -0.05, 0.15): mean 0.05, sd 0.1, half = 4.302653 * 0.1 / sqrt(3) = 0.248414
    c = compare([0.80, 0.70, 0.90], [0.75, 0.75, 0.75])
    assert c.verdict == CANNOT_JUDGE and c.holds is None
    assert c.ci == pytest.approx((-0.198414, 0.298414), abs=1e-6)
    assert (c.wins, c.losses, c.ties) == (2, 1, 0)
    assert any("contains 0" in r for r in c.reasons)


def test_two_seeds_near_chance_cannot_judge_and_names_both_reasons():
    # the case a report once called "HOLDS": 0.119 vs 0.109 at chance (ten classes), n = 2
    c = compare([0.119, 0.121], [0.109, 0.111], chance=0.1)
    assert c.verdict == CANNOT_JUDGE
    assert c.mean_diff == pytest.approx(0.01)
    assert "n=2 < 3 seeds" in c.reasons
    assert any(r.startswith("accuracy within 0.05 of chance (0.1)") for r in c.reasons)
    # the same gap well above chance and with three seeds: only the interval decides
    ok = compare([0.919, 0.921, 0.920], [0.909, 0.911, 0.910], chance=0.1)
    assert ok.verdict == HOLDS


def test_too_few_epochs_cannot_judge():
    c = compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.75], epochs=2, min_epochs=5)
    assert c.verdict == CANNOT_JUDGE and c.reasons == ("2 epochs trained < 5",)
    assert compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.75], epochs=5, min_epochs=5).verdict == HOLDS


def test_welch_interval_by_hand():
    # means 2 and 5, variances 1 and 1: se^2 = 1/3 + 1/3, df = (2/3)^2 / ((1/3)^2 / 2 * 2) = 4
    c = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], paired=False)
    assert c.mean_diff == pytest.approx(-3.0)
    half = 2.776445 * math.sqrt(2 / 3)
    assert c.ci == pytest.approx((-3 - half, -3 + half), abs=1e-5)
    assert c.verdict == DOES_NOT_HOLD and (c.wins, c.losses) == (0, 0)


def test_non_finite_pairs_are_left_out_and_said():
    c = compare([0.80, 0.82, 0.84, math.nan], [0.70, 0.71, 0.75, 0.5])
    assert c.n == 3 and c.verdict == HOLDS
    assert c.notes == ("1 of 4 seeds left out (a value is not finite)",)
    assert "left out" in c.text()
    # all values NaN: nothing to compare, never a verdict
    empty = compare([math.nan] * 3, [0.1] * 3)
    assert empty.verdict == CANNOT_JUDGE and "nothing to compare" in empty.reasons and "n=0 < 3 seeds" in empty.reasons


def test_against_a_fixed_value():
    # |d_util| (0.5, 0.6, 0.7) against 0.2: d = (0.3, 0.4, 0.5), mean 0.4, sd 0.1
    c = against([0.5, 0.6, 0.7], 0.2)
    assert c.verdict == HOLDS
    assert c.ci == pytest.approx((0.4 - 0.248414, 0.4 + 0.248414), abs=1e-6)


def test_unequal_paired_lengths_are_refused():
    with pytest.raises(ValueError, match="one value per seed on each side; got 3 and 2"):
        compare([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="direction"):
        compare([1.0], [1.0], direction="up")


def test_text_says_the_interval_and_the_seeds():
    c = compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.75])
    assert c.text() == "difference +0.100, 95% CI [+0.075, +0.125], n=3; per seed 3 better, 0 worse, 0 tied"


def test_the_chance_gate_reads_the_better_side():
    # one method collapsed to chance, the other far above: a firm "does not hold", not "cannot judge"
    # d = (-0.69, -0.73, -0.76): mean -0.726667, sd sqrt(0.0024667 / 2) = 0.035119, half 4.302653 * 0.035119 / sqrt 3
    c = compare([0.11, 0.12, 0.14], [0.80, 0.85, 0.90], chance=0.1)
    assert c.verdict == DOES_NOT_HOLD and c.reasons == ()
    assert c.ci == pytest.approx((-0.813907, -0.639427), abs=1e-6)
    # exactly at the margin counts as near chance ("more than" the margin is needed): best mean 0.5, 0.5 - 0.25
    # = 0.25 (binary fractions, no rounding)
    at = compare([0.25, 0.5, 0.75], [0.0, 0.25, 0.5], chance=0.25, chance_margin=0.25)
    assert at.verdict == CANNOT_JUDGE and at.reasons == ("accuracy within 0.25 of chance (0.25): best mean 0.500",)
    assert compare([0.25, 0.5, 0.75], [0.0, 0.25, 0.5], chance=0.25, chance_margin=0.125).verdict == HOLDS


def test_identical_methods_never_hold_either_way():
    # d = 0 in every seed: the interval [0, 0] touches 0, which is not excluded
    for direction in ("greater", "less"):
        c = compare([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], direction=direction)
        assert c.verdict == CANNOT_JUDGE and c.ci == (0.0, 0.0) and c.ties == 3
        assert c.reasons == ("the 95% interval [+0.000, +0.000] contains 0",)


def test_welch_with_unequal_sizes_and_variances_and_another_confidence():
    # a: mean 2, var 1, n 3; b: mean 8, var 10, n 5. se^2 = 1/3 + 10/5 = 7/3;
    # df = (7/3)^2 / ((1/3)^2 / 2 + 2^2 / 4) = 98/19 = 5.1579; t(0.975, 5.1579) = 2.547093; half = 2.547093 * 1.527525
    c = compare([1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0, 12.0], paired=False)
    assert c.mean_diff == pytest.approx(-6.0) and c.n == 3
    assert c.ci == pytest.approx((-9.890748, -2.109252), abs=1e-5)  # pooled variances would give +-4.727883
    # 90%: t(0.95, 2) = 2.919986, se 0.01 / sqrt(3): half 0.016859 around the paired mean 0.10
    ninety = compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.75], confidence=0.9)
    assert ninety.ci == pytest.approx((0.083141, 0.116859), abs=1e-6)
    assert "90% CI [+0.083, +0.117]" in ninety.text()
