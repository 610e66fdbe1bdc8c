"""Methods that balance by scaling gradients (OGM-GE, AGM, MSLR) warn under an optimizer that normalizes gradients.

Adam's update is m / sqrt(v), two running means of the same gradient: a factor c on a parameter's gradient that
lasts gives c m / (c sqrt(v)) and cancels. The first test shows that this is true of greedymm's MSLR (a factor held
for the whole run); the others that every way of training warns, once, and that nothing else does (Lightning:
tests/test_own_code.py).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import tiny_colored_data
from greedymm import Balancer, Batches, TrainConfig, fit
from greedymm.checkpoint import load_checkpoint
from greedymm.cli import main
from greedymm.methods import create_method, list_methods, method_class, optimizer_warning
from greedymm.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WARNS = "balances the modalities by multiplying their gradients"


def _greedymm_warnings(record) -> list[str]:
    return [str(w.message) for w in record if WARNS in str(w.message)]


def _train(tmp_path, method, optimizer, lr, hparams):
    cfg = TrainConfig(dataset="tiny", method=method, fusion="concat", epochs=2, batch_size=16, optimizer=optimizer,
                      lr=lr, width=0.25, hparams=hparams, device="cpu")  # fmt: skip
    out = tmp_path / f"{optimizer}_{method}"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(cfg, out, progress=False, data=tiny_colored_data())
    return load_checkpoint(out / "last.pt")["model"], _greedymm_warnings(record)


def _largest_relative_difference(a, b) -> float:
    return max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 3e-3), ("sgd", 0.05)])
def test_mslr_factor_cancels_under_adam_and_acts_under_sgd_and_only_adam_warns(tmp_path, optimizer, lr):
    # c0 = (0.3, 1): colored's gradients x 0.3 for both epochs (the ratio needs 5 epochs of memory: it stays 1)
    plain, plain_warned = _train(tmp_path, "vanilla", optimizer, lr, {})
    scaled, scaled_warned = _train(tmp_path, "mslr", optimizer, lr, {"c0": [0.3, 1.0]})
    difference = _largest_relative_difference(plain, scaled)
    assert not plain_warned
    if optimizer == "adam":
        # measured: 0.003 (Adam's eps and the order of float sums); the factor itself is divided out
        assert difference < 0.02
        assert len(scaled_warned) == 1 and "'mslr'" in scaled_warned[0] and "--set optimizer=sgd" in scaled_warned[0]
    else:
        assert difference > 0.2  # measured: 0.70
        assert not scaled_warned


def test_which_methods_and_optimizers_warn():
    params = [torch.nn.Parameter(torch.zeros(2))]
    scaling = {name for name in list_methods() if method_class(name).scales_gradients}
    assert scaling == {"agm", "mslr", "ogm-ge"}
    for name in list_methods():
        if name == "gblending":  # compares the run's optimizer with its copies' (below)
            continue
        method = create_method(name)
        adam = optimizer_warning(method, torch.optim.Adam(params))
        assert (adam is not None) == (name in scaling), name
        assert optimizer_warning(method, torch.optim.SGD(params, lr=0.1, momentum=0.9)) is None
    ogm = create_method("ogm-ge")
    for kind in (torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad):
        assert kind.__name__ in optimizer_warning(ogm, kind(params))
    # a list with one normalizing optimizer names that one
    both = optimizer_warning(ogm, [torch.optim.SGD(params, lr=0.1), torch.optim.Adam(params)])
    assert "and Adam divides" in both and "SGD" not in both.split("official")[0]


def test_own_loop_warns_once_when_the_optimizer_is_given():
    data = tiny_colored_data()
    torch.manual_seed(0)
    model = build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion="concat")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bal = Balancer(model, "ogm-ge")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _, (x, y) in zip(range(3), Batches(data.train, 16), strict=False):
            loss = bal.loss(bal.forward(x), y)
            opt.zero_grad()
            bal.backward(loss, opt)
            opt.step()
            bal.end_step()
    assert len(_greedymm_warnings(record)) == 1


def test_command_line_prints_the_warning_like_an_error(tmp_path, capsys):
    args = ["train", "--dataset", "synthetic", "--method", "mslr", "--fusion", "concat", "--epochs", "1"]
    small = ["--set", "data.size=64", "--set", "data.test_size=16", "--set", "data.image_size=12", "--width", "0.25"]
    assert main([*args, *small, "--out", str(tmp_path / "r"), "--no-progress"]) == 0  # the synthetic config: Adam
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if WARNS in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: method 'mslr'")
    assert "UserWarning" not in err


def test_gblending_warns_when_its_copies_would_not_learn_as_the_run_does():
    params = [torch.nn.Parameter(torch.zeros(2))]
    default = create_method("gblending")  # copies: SGD (momentum 0.9) at 0.01
    assert optimizer_warning(default, torch.optim.SGD(params, lr=0.01, momentum=0.9)) is None
    text = optimizer_warning(default, torch.optim.Adam(params, lr=1e-3))
    assert text == (
        "gblending estimates its blend weights from copies trained with sgd at lr 0.01, while the run trains with "
        "adam at lr 0.001: the copies' loss trends are then not the model's. Set them to the run's: --set "
        "est_optimizer=adam est_lr=0.001"
    )
    assert "est_lr=0.05" in optimizer_warning(default, torch.optim.SGD(params, lr=0.05))  # same kind, other lr
    matched = create_method("gblending", est_optimizer="adam", est_lr=1e-3)
    assert optimizer_warning(matched, torch.optim.Adam(params, lr=1e-3)) is None
    assert optimizer_warning(matched, torch.optim.RMSprop(params)) is None  # the copies cannot take it: no comparison
