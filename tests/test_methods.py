"""The methods' state machines (docs/PAPER.md section 5, docs/DESIGN.md section 3)."""

import math

import pytest

from greedymm.methods import REGULAR, StepInfo, create_method, list_methods, rebalance_mode


def drive(method, d_speeds, warmup=0, speeds=None, n=2):
    """Feed one d_speed (and optionally the speeds s_k) per step and return the mode each step ran in."""
    modes = []
    for step, d in enumerate(d_speeds):
        mode = method.mode
        modes.append(mode)
        s = tuple(speeds[step]) if speeds else ()
        method.observe(StepInfo(step, mode, d, warmup, s, n))
    return modes


def test_registry():
    assert {"guided", "random", "vanilla"} <= set(list_methods()) and list_methods() == sorted(list_methods())
    assert list_methods("gu*") == ["guided"]
    with pytest.raises(ValueError, match="Did you mean 'guided'"):
        create_method("guidd")
    with pytest.raises(ValueError, match="Did you mean 'alpha'"):
        create_method("guided", alpa=0.1)


def test_guided_trigger_runs_exactly_q_rebalancing_steps():
    m = create_method("guided", alpha=0.1, Q=3)
    modes = drive(m, [0.0, 0.5, 9, 9, 9, 0.0, 0.0])
    # step 1 (regular) sees d_speed 0.5 > alpha -> steps 2, 3, 4 re-balance branch 0, step 5 is regular
    assert modes == [REGULAR, REGULAR, rebalance_mode(0), rebalance_mode(0), rebalance_mode(0), REGULAR, REGULAR]


def test_guided_sign_picks_the_branch():
    m = create_method("guided", alpha=0.01, Q=1)
    modes = drive(m, [-0.2, 0.0, 0.3, 0.0, 0.005])
    # d_speed < 0 -> re-balance branch 1; d_speed > 0 -> branch 0; |d_speed| <= alpha -> nothing
    assert modes == [REGULAR, rebalance_mode(1), REGULAR, rebalance_mode(0), REGULAR]


def test_guided_waits_for_warmup_and_ignores_nan():
    # P = 3 warm-up steps (0, 1, 2); as in the authors' code the first decision follows step P, so the first
    # re-balancing step is P + 1 = 4
    m = create_method("guided", alpha=0.01, Q=2)
    modes = drive(m, [1.0] * 6, warmup=3)
    assert modes == [REGULAR] * 4 + [rebalance_mode(0), rebalance_mode(0)]
    m = create_method("guided", alpha=0.01, Q=2)
    modes = drive(m, [1.0, 1.0, 1.0, math.nan, 1.0, 1.0], warmup=3)
    assert modes == [REGULAR] * 5 + [rebalance_mode(0)]
    m2 = create_method("guided")
    assert drive(m2, [math.nan] * 3) == [REGULAR] * 3


def test_guided_rejects_bad_hparams():
    with pytest.raises(ValueError, match="alpha"):
        create_method("guided", alpha=-0.1)
    with pytest.raises(ValueError, match="Q must be an integer >= 1"):
        create_method("guided", Q=0)


def test_vanilla_never_rebalances():
    assert set(drive(create_method("vanilla"), [5.0] * 20)) == {REGULAR}


def test_random_is_uniform_after_warmup_and_resumable():
    m = create_method("random", seed=3)
    modes = drive(m, [0.0] * 3010, warmup=10)
    assert set(modes[:11]) == {REGULAR}  # warm-up 10: the first draw follows step 10
    counts = {k: modes[11:].count(k) for k in (REGULAR, rebalance_mode(0), rebalance_mode(1))}
    assert all(900 < c < 1100 for c in counts.values()), counts
    a, b = create_method("random", seed=3), create_method("random", seed=3)
    drive(a, [0.0] * 50)
    drive(b, [0.0] * 20)
    state = b.state_dict()
    c = create_method("random", seed=3)
    c.load_state_dict(state)
    rest = drive(c, [0.0] * 30)
    assert drive(create_method("random", seed=3), [0.0] * 50)[20:] == rest


def test_guided_three_branches_rebalances_the_fastest():
    # N = 3: d_speed = max - min > alpha triggers; the branch with the largest s_k is re-balanced
    m = create_method("guided", alpha=0.1, Q=1)
    speeds = [(0.0, 0.5, 0.2), (0.0, 0.5, 0.2), (0.9, 0.1, 0.3), (0.9, 0.1, 0.3), (0.1, 0.12, 0.15), (0, 0, 0)]
    modes = drive(m, [0.5, 0.5, 0.8, 0.8, 0.05, 0.0], speeds=speeds, n=3)
    assert modes == [REGULAR, rebalance_mode(1), REGULAR, rebalance_mode(0), REGULAR, REGULAR]
    # a negative d_speed cannot happen for N > 2, and a small spread does not trigger
    assert drive(create_method("guided", alpha=0.1), [0.05] * 4, speeds=[(0.0, 0.05, 0.0)] * 4, n=3) == [REGULAR] * 4


def test_random_three_branches_draws_four_modes():
    modes = drive(create_method("random", seed=1), [0.0] * 4000, n=3)
    counts = {k: modes[1:].count(k) for k in (REGULAR, rebalance_mode(0), rebalance_mode(1), rebalance_mode(2))}
    assert all(900 < c < 1100 for c in counts.values()), counts


def test_rebalancing_methods_refuse_late_fusion():
    from greedymm.models import build_model

    late = build_model("small-cnn", ("a", "b"), (1, 1), 3, width=0.25, fusion="concat")
    for name in ("guided", "random"):
        with pytest.raises(ValueError, match="--fusion mmtm"):
            create_method(name).check(late)
    create_method("vanilla").check(late)  # vanilla trains any fusion
    create_method("guided").check(build_model("small-cnn", ("a", "b", "c"), (1, 1, 1), 3, width=0.25))


def test_nan_hyper_parameter_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        create_method("guided", alpha=math.nan)


def test_method_state_holds_the_mode_name_and_reads_old_checkpoints():
    m = create_method("guided", alpha=0.0, Q=2)
    m.load_state_dict({"mode": "rebalance1", "remaining": 2})  # what every checkpoint holds: the mode's name
    assert m.mode == rebalance_mode(1) and m.remaining == 2
    assert m.state_dict() == {"mode": "rebalance1", "remaining": 2}
    with pytest.raises(ValueError, match="unknown mode"):
        m.load_state_dict({"mode": "rebalanced", "remaining": 0})
