"""A PyTorch Lightning callback: greedymm's methods and measurements for a LightningModule
(``pip install 'greedymm[lightning]'``).

Your LightningModule keeps a greedymm network in an attribute (default ``model``) and, in ``training_step``,
asks the callback's balancer for the forward pass and the loss:

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = greedymm.intermediate_fusion({...}, num_classes=10, example=batch)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.greedymm.loss(self.greedymm.forward(x), y)   # the method's mode and loss

    trainer = L.Trainer(callbacks=[GreedyMMCallback("guided", val=val_loader)], ...)

The callback attaches ``pl_module.greedymm`` (a ``greedymm.api.Balancer``), applies the method's gradient changes
and measures the conditional learning speed after Lightning's backward (before the optimizer step), lets the method
pick the next step's mode after each batch, and at each epoch end evaluates ``val`` with utilization. Every number
goes to Lightning's loggers (``pl_module.log``) under the names of greedymm's own logs, and into ``steps`` /
``epochs`` on the callback. Its state is saved in Lightning checkpoints.
Methods that form gradients themselves (``Method.backward``: mmpareto, agm) need greedymm's loop or your own loop
with ``Balancer.backward``; the callback refuses them, and gradient accumulation, with a message naming the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("greedymm.lightning needs Lightning: pip install 'greedymm[lightning]'") from e

from .api import Balancer, StepLog
from .data.base import Split
from .methods import Method, method_class, optimizer_warning
from .models import REGULAR


class GreedyMMCallback(pl.Callback):
    """Runs a greedymm method inside ``Trainer.fit`` and logs d_speed each step and d_util each epoch.

    ``method`` / ``hparams``: as ``greedymm list`` shows. ``warmup_epochs``: regular steps before re-balancing
    (guided, random). ``val``: what utilization is measured on each epoch (a greedymm split or any iterable of
    ``(inputs, labels)`` batches); default, the trainer's validation dataloader. ``train_split`` / ``val_split``:
    greedymm splits for methods with epoch work on data (pmr, gblending). ``model_attr``: where the module keeps
    its greedymm network.
    """

    def __init__(
        self,
        method: str = "vanilla",
        *,
        hparams: Mapping[str, Any] | None = None,
        warmup_epochs: float = 1.0,
        seed: int = 0,
        val: Split | Iterable | None = None,
        train_split: Split | None = None,
        val_split: Split | None = None,
        batch_size: int = 64,
        model_attr: str = "model",
        pairwise: bool = False,
    ) -> None:
        super().__init__()
        if method_class(method).backward is not Method.backward:
            raise ValueError(
                f"method {method!r} forms its gradients itself, which Lightning's automatic backward cannot do; "
                "train it with `greedymm train` or in your own loop with greedymm.api.Balancer.backward"
            )
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.method, self.hparams, self.seed = method, dict(hparams or {}), seed
        self.warmup_epochs, self.val, self.pairwise = warmup_epochs, val, pairwise
        self.train_split, self.val_split, self.batch_size = train_split, val_split, batch_size
        self.model_attr = model_attr
        self.balancer: Balancer | None = None
        self.steps: list[StepLog] = []  # every step's measurements
        self.epochs: list[dict[str, Any]] = []  # every epoch's evaluation of ``val`` and the cumulative speeds
        self._state: dict[str, Any] | None = None

    # -- set-up -----------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.accumulate_grad_batches != 1:
            raise ValueError("GreedyMMCallback measures every optimizer step: use accumulate_grad_batches=1")
        model = getattr(pl_module, self.model_attr, None)
        if model is None:
            raise AttributeError(
                f"the LightningModule has no attribute {self.model_attr!r}; keep the greedymm network there or pass "
                "model_attr= to GreedyMMCallback"
            )
        # under Lightning's DDP the module's own forward runs inside the wrapper's, so the bare model is what to call
        if self.balancer is None or self.balancer.model is not model:
            if self.balancer is not None and self._state is None:
                raise ValueError(
                    "this GreedyMMCallback already measured another network (its speed sums and step count belong "
                    "to that one); pass a new GreedyMMCallback to the Trainer for this module"
                )
            self.balancer = Balancer(model, self.method, seed=self.seed, hparams=self.hparams)
        # a second fit with the same network continues: the step and epoch counts and the speed sums go on
        if self._state is not None:  # resumed from a Lightning checkpoint
            self.balancer.load_state_dict(self._state)
            self._state = None
        pl_module.greedymm = self.balancer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._bal().warmup_steps = round(self.warmup_epochs * trainer.num_training_batches)
        if warning := optimizer_warning(self._bal().method, trainer.optimizers):
            warnings.warn(warning, stacklevel=2)

    def _bal(self) -> Balancer:
        if self.balancer is None:
            raise RuntimeError("GreedyMMCallback is not set up: pass it to Trainer(callbacks=[...]) before fit")
        return self.balancer

    # -- per step: one step is one batch (the balancer counts them; Lightning's global step counts optimizer steps,
    # two a batch with two optimizers) ----------------------------------------------------------------------
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # 16-mixed: Lightning's loss scaler unscales the gradients only after this hook; the speeds divide it out
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._bal().after_backward(grad_scale=scaler.get_scale() if scaler is not None else None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        bal = self._bal()
        if bal._ctx is None:  # training_step returned None before its forward: Lightning skipped the batch
            return
        if not bal._backward_done:  # it returned None after the forward: no step, the statistics put back
            bal.skip_step()
            return
        log = bal.end_step()
        self.steps.append(log)
        values = {"loss": log.loss, **log.speeds, "d_speed": log.d_speed, "rebalance": float(log.mode != REGULAR)}
        pl_module.log_dict({f"greedymm/{k}": float(v) for k, v in values.items()}, on_step=True, on_epoch=False)

    # -- per epoch --------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bal = self._bal()  # counts epochs itself (epoch_end), so a second fit goes on from where the first ended
        bal.epoch_start(self.train_split, self.val_split, self.batch_size)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bal = self._bal()
        bal.epoch_end(self.train_split, self.val_split, self.batch_size)
        data = self.val if self.val is not None else trainer.val_dataloaders
        record: dict[str, Any] = {"epoch": trainer.current_epoch, "speed": bal.speeds()}
        if data is not None:
            record["val"] = bal.evaluate(data, pairwise=self.pairwise, name="val")
        self.epochs.append(record)
        flat = {f"greedymm/speed/{k}": v for k, v in record["speed"].items()}
        flat.update({f"greedymm/val/{k}": v for k, v in record.get("val", {}).items()})
        numbers = {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        pl_module.log_dict(numbers, on_step=False, on_epoch=True)

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.balancer.state_dict() if self.balancer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = dict(state_dict) or None
