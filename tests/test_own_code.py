"""greedymm in the user's own code: the step API, models from user encoders, the examples, TensorBoard, Lightning.

The acceptance check: a user's loop (examples/own_loop.py), a model trained through greedymm.fit with the user's
own network object (examples/own_model.py's path) and the Lightning callback all give the d_speed of every step
and the d_util of every epoch that ``greedymm train`` gives on the same model, data, seed and schedule.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import greedymm
from conftest import tiny_colored_data
from greedymm import Balancer, Batches, TrainConfig, fit
from greedymm.data import epoch_order
from greedymm.models import build_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CFG = TrainConfig(dataset="tiny", method="guided", epochs=2, batch_size=16, optimizer="adam", lr=1e-3, width=0.25,
                  warmup_epochs=0.5, device="cpu")  # fmt: skip


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the example look their module up
    spec.loader.exec_module(module)
    return module


def _model(data, seed: int = 0):
    torch.manual_seed(seed)  # what greedymm train does before building the model
    return build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=CFG.width)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``greedymm train`` on the tiny data: (steps.csv rows, results.jsonl records)."""
    data = tiny_colored_data()
    out = fit(CFG, tmp_path_factory.mktemp("ref") / "run", progress=False, data=data)
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return data, rows, recs, out


def _same_steps(rows, logs) -> None:
    assert len(rows) == len(logs) > 0
    assert [r["mode"] for r in rows] == [s.mode for s in logs]
    assert any(r["mode"] != "regular" for r in rows)  # guided did re-balance: the decisions are compared too
    for r, s in zip(rows, logs, strict=True):
        assert float(r["d_speed"]) == pytest.approx(s.d_speed, rel=1e-5, abs=1e-9)
        assert float(r["loss"]) == pytest.approx(s.loss, rel=1e-5)


def test_own_loop_gives_greedymm_trains_numbers(reference):
    data, rows, recs, _ = reference
    own_loop = _example("own_loop")
    steps_per_epoch = len(epoch_order(len(data.train), CFG.batch_size, CFG.seed, 0))
    logs, evals = own_loop.train(
        _model(data),
        lambda epoch: Batches(data.train, CFG.batch_size, seed=CFG.seed, epoch=epoch),
        Batches(data.val, 256, shuffle=False),
        CFG.epochs,
        method="guided",
        lr=CFG.lr,
        warmup_steps=round(CFG.warmup_epochs * steps_per_epoch),
        seed=CFG.seed,
        report=lambda line: None,
    )
    _same_steps(rows, logs)
    assert [e["d_util"] for e in evals] == [r["val"]["d_util"] for r in recs]
    assert [e["acc"] for e in evals] == [r["val"]["acc"] for r in recs]


@pytest.mark.slow
def test_fit_with_the_users_model_object_equals_greedymm_train(reference, tmp_path):
    data, rows, recs, _ = reference
    out = fit(CFG, tmp_path / "run", progress=False, data=data, model=_model(data))
    assert (out / "steps.csv").read_text().splitlines()[1:] == [",".join(r.values()) for r in rows] or list(
        csv.DictReader(open(out / "steps.csv"))
    ) == rows
    mine = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["val"]["d_util"] for r in mine] == [r["val"]["d_util"] for r in recs]
    assert [r["speed"] for r in mine] == [r["speed"] for r in recs]


@pytest.mark.slow
def test_lightning_callback_gives_greedymm_trains_numbers(reference):
    lightning = pytest.importorskip("lightning.pytorch")
    from greedymm.lightning import GreedyMMCallback

    data, rows, recs, _ = reference

    class Module(lightning.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.greedymm.loss(self.greedymm.forward(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.model.parameters(), lr=CFG.lr)

    cb = GreedyMMCallback("guided", warmup_epochs=CFG.warmup_epochs, seed=CFG.seed, val=Batches(data.val, 256, False))
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    trainer = lightning.Trainer(max_epochs=CFG.epochs, accelerator="cpu", devices=1, logger=False, callbacks=[cb],
                                **quiet)  # fmt: skip
    trainer.fit(Module(_model(data)), train_dataloaders=Batches(data.train, CFG.batch_size, seed=CFG.seed))
    _same_steps(rows, cb.steps)
    assert [e["val"]["d_util"] for e in cb.epochs] == [r["val"]["d_util"] for r in recs]
    assert [e["speed"] for e in cb.epochs] == [r["speed"] for r in recs]
    assert cb.state_dict()["step"] == len(rows)


def test_lightning_callback_refuses_what_it_cannot_run():
    pytest.importorskip("lightning.pytorch")
    from greedymm.lightning import GreedyMMCallback

    with pytest.raises(ValueError, match="forms its gradients itself"):
        GreedyMMCallback("mmpareto")
    with pytest.raises(ValueError, match="unknown method"):
        GreedyMMCallback("guidd")


@pytest.mark.process
@pytest.mark.parametrize("name", ["own_loop", "own_model"])
def test_examples_run_quick(name, tmp_path):
    extra = ["--out", str(tmp_path / "run")] if name == "own_model" else []
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", *extra], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and all("d_util" in ln and "d_speed" in ln for ln in lines)
    assert "test acc" in r.stdout


@pytest.mark.slow
def test_own_model_with_1d_and_2d_encoders_resumes_exactly(tmp_path):
    own_model = _example("own_model")
    data = own_model.make_data(quick=True)
    x, _ = data.train.batch(torch.arange(3))
    assert x["m0"].shape == (3, 1, 16, 16) and x["m1"].shape == (3, 16, 16)  # an image and a 1-D signal
    cfg = TrainConfig(dataset="synthetic", method="guided", epochs=2, batch_size=64, optimizer="adam", lr=1e-3,
                      warmup_epochs=0.5)  # fmt: skip
    straight = fit(cfg, tmp_path / "a", progress=False, data=data, model=own_model.make_model(data, 0))
    fit(cfg.replace(epochs=1), tmp_path / "b", progress=False, data=data, model=own_model.make_model(data, 0))
    fit(cfg, tmp_path / "b", resume=True, progress=False, data=data, model=own_model.make_model(data, 0))
    assert (straight / "steps.csv").read_text() == (tmp_path / "b" / "steps.csv").read_text()


# -- the step API's contract --------------------------------------------------------------------------------
def test_models_from_user_stages_read_channels_off_an_example():
    stages = {"a": [nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3)], "b": [nn.Conv1d(2, 5, 3), nn.Conv1d(5, 7, 3)]}
    example = {"a": torch.randn(2, 1, 12, 12), "b": torch.randn(2, 2, 20)}
    net = greedymm.intermediate_fusion(stages, 3, example=example)
    assert net.fuse_after == (1,) and [b.channels for b in net.branches] == [(4, 6), (5, 7)]
    out = net(example)
    assert out.logits.shape == (2, 3) and len(out.heads) == 2
    late = greedymm.late_fusion(
        {"a": [nn.Conv2d(1, 4, 3)], "b": [nn.Conv1d(2, 5, 3)]}, 3, channels={"a": [4], "b": [5]}
    )
    assert late(example).logits.shape == (2, 3) and late.fusion == "concat"
    with pytest.raises(ValueError, match="pass example="):
        greedymm.late_fusion({"a": [nn.Conv2d(1, 4, 3)]}, 3)
    with pytest.raises(ValueError, match="one each"):
        greedymm.late_fusion({"a": [nn.Conv2d(1, 4, 3)]}, 3, channels={"a": [4, 8]})
    with pytest.raises(ValueError, match="unknown late fusion"):
        greedymm.late_fusion({"a": [nn.Conv2d(1, 4, 3)]}, 3, channels={"a": [4]}, fusion="mmtm")


def test_balancer_refusals_name_the_fix(tmp_path):
    with pytest.raises(TypeError, match="intermediate_fusion"):
        Balancer(nn.Linear(2, 2))
    data = tiny_colored_data()
    model = _model(data)
    bal = Balancer(model, "guided")
    with pytest.raises(RuntimeError, match=r"before Balancer.forward\(\)"):
        bal.loss(None, torch.zeros(2, dtype=torch.long))
    late = build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion="concat")
    with pytest.raises(ValueError, match="--fusion mmtm"):
        Balancer(late, "guided")
    with pytest.raises(ValueError, match="modalities"):
        fit(CFG.replace(method="vanilla"), tmp_path / "run", progress=False, data=data,
            model=greedymm.late_fusion({"x": [nn.Conv2d(3, 4, 3)]}, 4, channels={"x": [4]}))  # fmt: skip


def test_batches_follow_greedymm_order():
    data = tiny_colored_data()
    b = Batches(data.train, 16, seed=3)
    first, second = [y for _, y in b], [y for _, y in b]  # two passes: epochs 0 and 1
    for epoch, ys in enumerate((first, second)):
        order = epoch_order(len(data.train), 16, 3, epoch)
        assert [y.tolist() for y in ys] == [data.train.batch(i)[1].tolist() for i in order]
    assert len(b) == len(first) and [y.tolist() for y in first] != [y.tolist() for y in second]
    assert torch.cat([y for _, y in Batches(data.val, 5, shuffle=False)]).tolist() == data.val.labels.tolist()


# -- TensorBoard ----------------------------------------------------------------------------------------------
def test_tensorboard_logs_every_number_and_resume_does_not_repeat(tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    data = tiny_colored_data()
    fit(CFG.replace(epochs=1), tmp_path / "run", progress=False, data=data, log=["tensorboard"])
    fit(CFG, tmp_path / "run", resume=True, progress=False, data=data, log=["tensorboard"])
    acc = ea.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    recs = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    with open(tmp_path / "run" / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [e.value for e in acc.Scalars("val/d_util")] == pytest.approx([r["val"]["d_util"] for r in recs])
    assert [e.step for e in acc.Scalars("val/d_util")] == [r["step"] - 1 for r in recs]  # each epoch's last step
    d_speed = acc.Scalars("step/d_speed")
    assert [e.step for e in d_speed] == [int(r["step"]) for r in rows if r["d_speed"] != "nan"]
    assert [e.value for e in d_speed] == pytest.approx([float(r["d_speed"]) for r in rows if r["d_speed"] != "nan"])
    for tag in ("test/acc", "train/loss", "speed/d_speed", "lr", "step/rebalance", "step/loss"):
        assert tag in acc.Tags()["scalars"], tag


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(RuntimeError, match=r"pip install 'greedymm\[tensorboard\]'"):
        fit(CFG, tmp_path / "run", progress=False, data=tiny_colored_data(), log=["tensorboard"])
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="unknown --log"):
        fit(CFG, tmp_path / "run", progress=False, data=tiny_colored_data(), log=["wandb"])


# -- misuse of the step calls: refused, never a number ----------------------------------------------------------
def _one_step(bal, data, opt=None, backward=True):
    x, y = data.train.batch(torch.arange(16), train=True)
    out = bal.forward(x)
    loss = bal.loss(out, y)
    if backward:
        bal.backward(loss, opt)
    return loss


def test_evaluate_before_the_first_epoch_end_is_refused():
    data = tiny_colored_data()
    for fusion in ("mmtm", "concat"):
        torch.manual_seed(0)
        model = build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion=fusion)
        bal = Balancer(model, "vanilla")
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        bal.epoch_start()
        # before: u = 0 and d_util = 0 (read as "balanced") from means that were never recorded
        with pytest.raises(ValueError, match=r"no train-split means yet.*Balancer.epoch_end\(\)"):
            bal.evaluate(data.val)
        assert bal.evaluate(data.val, utilization=False)["n"] == len(data.val)  # accuracy alone is fine
        _one_step(bal, data)
        bal.end_step()
        opt.step()
        with pytest.raises(ValueError, match="no train-split means yet"):  # mid-epoch: still none committed
            bal.evaluate(data.val)
        bal.epoch_end()
        m = bal.evaluate(data.val)
        assert "d_util" in m and m["n"] == len(data.val)


def test_end_step_without_backward_and_after_backward_twice_are_refused():
    data = tiny_colored_data()
    model = _model(data)
    bal = Balancer(model, "guided")
    bal.epoch_start()
    before = {k: v.clone() for k, v in model.named_buffers()}
    _one_step(bal, data, backward=False)
    with pytest.raises(RuntimeError, match=r"end_step\(\) without backward.*skip_step\(\)"):
        bal.end_step()
    bal.skip_step()  # a dropped step: not counted, and the forward's statistics are put back
    assert bal.step == 0
    assert all(torch.equal(v, before[k]) for k, v in model.named_buffers())
    _one_step(bal, data)
    with pytest.raises(RuntimeError, match=r"after_backward\(\) a second time in step 0"):
        bal.after_backward()
    sums = bal.speed.sums.clone()
    log = bal.end_step()
    assert log.step == 0 and bal.step == 1 and torch.equal(bal.speed.sums, sums)  # counted once
    _one_step(bal, data, backward=False)
    loss = bal._loss
    loss.backward()
    bal.after_backward()  # something else ran backward: after_backward once is the way
    with pytest.raises(RuntimeError, match=r"backward\(\) a second time"):
        bal.backward(loss)
    assert bal.end_step().step == 1


def test_a_grad_scaler_needs_every_optimizer_and_then_gives_true_speeds():
    data = tiny_colored_data()

    def run(split_optimizers: bool, scaled: bool):
        model = _model(data)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16) if scaled else None
        bal = Balancer(model, "vanilla", scaler=scaler)
        first = list(model.branches[0].parameters())
        ids = {id(p) for p in first}
        rest = [p for p in model.parameters() if id(p) not in ids]
        opts = [torch.optim.SGD(first, lr=0.05), torch.optim.SGD(rest, lr=0.05)]
        _one_step(bal, data, opts if split_optimizers else None)
        return bal, model, opts

    ref, _, _ = run(True, scaled=False)
    ref_log = ref.end_step()
    with pytest.raises(
        ValueError, match=r"in no optimizer given \(branches\.1\..*bal.backward\(loss, \[opt_a, opt_b\]\)"
    ):
        model = _model(data)
        bal = Balancer(model, "vanilla", scaler=torch.amp.GradScaler("cpu"))
        first = list(model.branches[0].parameters())
        _one_step(bal, data, torch.optim.SGD(first, lr=0.05))  # branch 1 and the MMTMs are in no optimizer
    with pytest.raises(ValueError, match="need the optimizer"):
        run(False, scaled=True)
    bal, _, _ = run(True, scaled=True)
    log = bal.end_step()
    for k, v in ref_log.speeds.items():
        assert log.speeds[k] == pytest.approx(v, rel=1e-6), k  # the scale (2^16, squared: 9.6 in log10) is gone
    assert log.d_speed == pytest.approx(ref_log.d_speed, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("method", ["pmr", "gblending"])
def test_methods_with_epoch_work_on_data_name_the_split_they_need(method):
    data = tiny_colored_data()
    model = _model(data)
    bal = Balancer(model, method, hparams={"super_epoch": 1} if method == "gblending" else {})
    # before: TypeError "object of type 'NoneType' has no len()"
    with pytest.raises(ValueError, match=rf"{method} .*training split.*bal.epoch_start\(train="):
        bal.epoch_start()
    bal.epoch_start(data.train, data.val, batch_size=16)  # with the splits it runs
    _one_step(bal, data)
    assert bal.end_step().finite


# -- Lightning: a step is one batch, a skipped batch is no step, a second fit continues ----------------------------
def _lightning_module(lightning, model, *, manual: bool = False, skip: set[int] = frozenset(),
                      skip_after_forward: set[int] = frozenset(), optimizer=None):  # fmt: skip
    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.automatic_optimization = not manual

        def training_step(self, batch, batch_idx):
            if batch_idx in skip:
                return None  # Lightning's way to skip a batch, before any forward
            x, y = batch
            loss = self.greedymm.loss(self.greedymm.forward(x), y)
            if batch_idx in skip_after_forward:
                return None  # decided after the forward (e.g. on the loss): no step either
            if not manual:
                return loss
            opts = self.optimizers()
            for opt in opts:
                opt.zero_grad()
            self.manual_backward(loss)
            for opt in opts:
                opt.step()
            return loss

        def configure_optimizers(self):
            if optimizer is not None:
                return optimizer(self.model.parameters())
            first = list(self.model.branches[0].parameters())
            ids = {id(p) for p in first}
            rest = [p for p in self.model.parameters() if id(p) not in ids]
            if manual:
                return [torch.optim.SGD(first, lr=0.05), torch.optim.SGD(rest, lr=0.05)]
            return torch.optim.SGD(self.model.parameters(), lr=0.05)

    return Module()


def _trainer(lightning, cb, epochs: int):
    quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    return lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=[cb], **quiet)


def test_lightning_two_optimizers_count_one_step_per_batch():
    lightning = pytest.importorskip("lightning.pytorch")
    from greedymm.lightning import GreedyMMCallback

    data = tiny_colored_data()
    cb = GreedyMMCallback("guided", hparams={"alpha": 0.0, "Q": 1}, warmup_epochs=1)
    batches = Batches(data.train, 16)  # 72 items: P = 4 batches an epoch
    _trainer(lightning, cb, 2).fit(_lightning_module(lightning, _model(data), manual=True), batches)
    # before: 0, 2, 4, ... (Lightning's global step counts both optimizers' steps) and warm-up ended at batch 2
    assert [s.step for s in cb.steps] == list(range(8))
    # the warm-up is one epoch of batches: steps 0..P regular, the first re-balancing step is P + 1 (DESIGN 9)
    assert [str(s.mode) for s in cb.steps[:5]] == ["regular"] * 5 and str(cb.steps[5].mode) != "regular"


def test_lightning_batch_skipped_before_forward_is_no_step_and_a_second_fit_continues():
    lightning = pytest.importorskip("lightning.pytorch")
    from greedymm.lightning import GreedyMMCallback

    data = tiny_colored_data()
    cb = GreedyMMCallback("vanilla", warmup_epochs=0)
    module = _lightning_module(lightning, _model(data), skip={1})
    _trainer(lightning, cb, 1).fit(module, Batches(data.train, 16))  # before: RuntimeError from end_step
    assert [s.step for s in cb.steps] == [0, 1, 2]  # batches 0, 2, 3: the skipped one is no step
    bal, sums = cb.balancer, cb.balancer.speed.sums.clone()
    assert bal.epoch == 1 and bool((sums > 0).all())
    _trainer(lightning, cb, 1).fit(module, Batches(data.train, 16, epoch=1))  # again, with a new Trainer
    # before: a new Balancer, the speed sums and the step ids from zero again
    assert cb.balancer is bal and module.greedymm is bal
    assert [s.step for s in cb.steps] == [0, 1, 2, 3, 4, 5] and bal.epoch == 2
    assert bool((bal.speed.sums > sums).all())
    after = _lightning_module(lightning, _model(data), skip_after_forward={2})
    cb2 = GreedyMMCallback("vanilla", warmup_epochs=0)
    _trainer(lightning, cb2, 1).fit(after, Batches(data.train, 16))
    assert [s.step for s in cb2.steps] == [0, 1, 2] and after.model.branches[0].stages[0][0].num_batches_tracked == 3
    other = _lightning_module(lightning, _model(data))
    with pytest.raises(ValueError, match="new GreedyMMCallback"):  # another network: its own callback
        _trainer(lightning, cb, 1).fit(other, Batches(data.train, 16))


def test_lightning_16_mixed_speeds_come_from_unscaled_gradients():
    lightning = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.plugins.precision import MixedPrecision

    from greedymm.lightning import GreedyMMCallback

    data = tiny_colored_data()
    sums = {}
    for init in (1.0, 2.0**10):  # the scale doubles every step: 1, 2, 4, 8 and 1024, ..., 8192
        cb = GreedyMMCallback("vanilla", warmup_epochs=0)
        scaler = torch.amp.GradScaler("cpu", init_scale=init, growth_interval=1)
        quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
        trainer = lightning.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[cb],
                                    plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], **quiet)  # fmt: skip
        trainer.fit(_lightning_module(lightning, _model(data)), Batches(data.train, 16))
        sums[init] = cb.balancer.speed.sums
    # before: Lightning unscales after on_after_backward, so the sums were 2^20 (the scale squared) times larger
    assert sums[2.0**10].tolist() == pytest.approx(sums[1.0].tolist(), rel=1e-3)


def test_after_backward_divides_a_known_loss_scale_out_of_the_speeds():
    data = tiny_colored_data()
    logs = []
    for scale in (None, 2.0**12):
        bal = Balancer(_model(data), "vanilla")
        for _ in range(2):
            loss = _one_step(bal, data, backward=False)
            (loss * (scale or 1.0)).backward()
            bal.after_backward(grad_scale=scale)  # gradients still multiplied by the scale (Lightning's 16-mixed)
            logs.append(bal.end_step())
        logs.append(bal.speed.sums.tolist())
    assert logs[:3] == logs[3:]  # a power of two divides out exactly


def test_lightning_warns_when_a_gradient_scaling_method_meets_the_modules_adamw():
    lightning = pytest.importorskip("lightning.pytorch")
    import warnings

    from greedymm.lightning import GreedyMMCallback

    data = tiny_colored_data()
    torch.manual_seed(0)
    model = build_model(data.arch, data.modalities, data.in_channels, data.num_classes, width=0.25, fusion="concat")
    module = _lightning_module(lightning, model, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    for method, expected in (("ogm-ge", 1), ("vanilla", 0)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _trainer(lightning, GreedyMMCallback(method), 1).fit(module, Batches(data.train, 16))
        found = [str(w.message) for w in record if "multiplying their gradients" in str(w.message)]
        assert len(found) == expected and all("AdamW" in f and f"'{method}'" in f for f in found)
