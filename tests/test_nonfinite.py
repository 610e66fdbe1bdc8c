"""Non-finite values: a skipped NaN step leaves no trace in any running statistic, and evaluation never reports a
number computed from NaN or infinite logits."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_colored_data
from greedymm import Balancer
from greedymm.evaluate import evaluate, evaluate_batches, record_train_means
from greedymm.models import build_model


def _model(data, fusion: str = "mmtm"):
    torch.manual_seed(0)
    return build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion=fusion)


def _step(bal: Balancer, opt: torch.optim.Optimizer, x, y):
    """One step of the documented loop: the optimizer step is skipped when the loss is not finite."""
    out = bal.forward(x)
    loss = bal.loss(out, y)
    opt.zero_grad()
    bal.backward(loss)
    log = bal.end_step(loss)
    if log.finite:
        opt.step()
    return log


def _statistics(model, bal) -> dict[str, torch.Tensor]:
    return {**{k: v.clone() for k, v in model.named_buffers()}, "speed.sums": bal.speed.sums.clone()}


@pytest.mark.parametrize("fusion", ["mmtm", "concat"])
def test_a_skipped_nan_step_changes_no_running_statistic(fusion):
    data = tiny_colored_data()
    model = _model(data, fusion)
    bal = Balancer(
        model, "guided" if fusion == "mmtm" else "vanilla", hparams={"alpha": 0.0} if fusion == "mmtm" else {}
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    bal.epoch_start()
    x, y = data.train.batch(torch.arange(16), train=True)
    assert _step(bal, opt, x, y).finite
    before = _statistics(model, bal)
    assert any(k.endswith("running_mean") for k in before)  # the model has BatchNorm
    bad = {k: v.clone() for k, v in x.items()}
    bad[data.modalities[0]][0] = float("nan")  # one NaN pixel in one item
    log = _step(bal, opt, bad, y)
    assert not log.finite and log.step == 1
    if fusion == "concat":  # late fusion logs each step's own mu: nothing from NaN gradients, not the last step's
        assert list(log.speeds.values()) == [0.0, 0.0]
    after = _statistics(model, bal)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"a skipped NaN step changed {changed}"
    # the run goes on exactly as if the NaN batch had never come: the next step equals a run without it
    log = _step(bal, opt, x, y)
    assert log.finite and math.isfinite(log.loss)
    twin = _model(data, fusion)
    tbal = Balancer(
        twin, "guided" if fusion == "mmtm" else "vanilla", hparams={"alpha": 0.0} if fusion == "mmtm" else {}
    )
    topt = torch.optim.SGD(twin.parameters(), lr=0.05)
    tbal.epoch_start()
    _step(tbal, topt, x, y)
    tlog = _step(tbal, topt, x, y)
    assert tlog.loss == log.loss and str(tlog.mode) == str(log.mode)
    assert tlog.d_speed == log.d_speed or (fusion == "concat" and math.isnan(tlog.d_speed) and math.isnan(log.d_speed))
    assert tlog.speeds == log.speeds
    for (k, a), b in zip(model.named_buffers(), twin.buffers(), strict=True):
        assert torch.equal(a, b), k
    for (k, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(bal.speed.sums, tbal.speed.sums)


def test_guided_leaves_no_nan_in_its_gate_means_and_keeps_deciding():
    data = tiny_colored_data()
    model = _model(data)
    bal = Balancer(model, "guided", hparams={"alpha": 0.0, "Q": 1})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    bal.epoch_start()
    order = torch.arange(len(data.train)).split(16)
    for i, idx in enumerate(order):
        x, y = data.train.batch(idx, train=True)
        if i == 2:
            x = {k: torch.full_like(v, float("inf")) for k, v in x.items()}
        _step(bal, opt, x, y)
    gates = [b for k, b in model.named_buffers() if "gate_mean" in k]
    assert all(torch.isfinite(g).all() for g in gates)
    logs = []
    for idx in order:  # a second pass: every step finite, and guided re-balances (alpha = 0)
        x, y = data.train.batch(idx, train=True)
        logs.append(_step(bal, opt, x, y))
    assert all(log.finite for log in logs)
    assert any(str(log.mode) != "regular" for log in logs) and any(str(log.mode) == "regular" for log in logs)


def _trained(data):
    model = _model(data)
    model.train()
    record_train_means(model, data.train, batch_size=32)
    return model


def test_evaluation_refuses_nan_logits_naming_the_split_and_the_count():
    data = tiny_colored_data()
    model = _trained(data)
    good = evaluate(model, data.val, batch_size=8, name="val")
    assert math.isfinite(good["acc"]) and "d_util" in good

    class Poisoned:
        def __init__(self, split, bad):
            self.split, self.bad = split, set(bad)

        def __len__(self):
            return len(self.split)

        def batch(self, idx, train=False):
            x, y = self.split.batch(idx, train)
            for row, i in enumerate(idx.tolist()):
                if i in self.bad:
                    x = {k: v.clone() for k, v in x.items()}
                    x[next(iter(x))][row] = float("nan")
            return x, y

    with pytest.raises(FloatingPointError, match=r"test: 3 of 32 items give non-finite logits"):
        evaluate(model, Poisoned(data.test, [0, 5, 17]), batch_size=8, name="test")
    # infinite inputs too, and any iterable of batches
    x, y = data.val.batch(torch.arange(8))
    inf = {k: v.clone() for k, v in x.items()}
    inf[next(iter(inf))][2] = float("inf")
    with pytest.raises(FloatingPointError, match=r"1 of 16 items give non-finite logits"):
        evaluate_batches(model, [(x, y), (inf, y)])


def test_evaluation_refuses_nan_weights():
    data = tiny_colored_data()
    model = _trained(data)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        evaluate(model, data.val, batch_size=8)


def test_evaluating_no_items_is_refused():
    data = tiny_colored_data()
    model = _trained(data)
    # before: acc 0.0 and loss 0.0 reported for nothing evaluated
    with pytest.raises(ValueError, match="no items to evaluate"):
        evaluate_batches(model, iter(()), utilization=False)
    with pytest.raises(ValueError, match=r"val: no items to evaluate"):
        evaluate_batches(model, [], name="val")


@pytest.mark.parametrize("method", ["agm", "ogm-ge", "mmpareto", "pmr"])
def test_a_skipped_nan_step_leaves_the_methods_state_as_it_was(method):
    data = tiny_colored_data()
    torch.manual_seed(0)
    model = build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion="concat",
                        unimodal_heads=method == "mmpareto")  # fmt: skip
    bal = Balancer(model, method)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    bal.epoch_start(data.train, data.val, batch_size=16)
    x, y = data.train.batch(torch.arange(16), train=True)
    assert _step(bal, opt, x, y).finite
    before = repr(bal.method.state_dict())
    nan = {k: torch.full_like(v, float("nan")) for k, v in x.items()}
    assert not _step(bal, opt, nan, y).finite
    # before: AGM's running scores and scales became NaN (every later loss NaN), OGM-GE's k sums and MMPareto's
    # logged weights NaN
    assert repr(bal.method.state_dict()) == before
    assert _step(bal, opt, x, y).finite
