"""The method contract: one registry, and the hooks of the one training loop (docs/DESIGN.md section 4).

A method changes one or more of these, and nothing else; the loop never asks which method runs:
    next_mode(info)            the mode of the next step ("regular", "rebalance<k>": guided, random)
    loss(ctx)                  the loss from the outputs (default: the model family's own loss)
    backward(loss, ctx)        how gradients are formed (default: loss.backward())
    on_after_backward(ctx)     change gradients after backward, before the optimizer step
    on_epoch_start / on_epoch_end(info)   work at epoch boundaries
Per step the loop calls, in order: forward in ``mode`` -> ``loss`` -> ``backward`` -> ``on_after_backward`` ->
conditional learning speed (regular steps) -> ``observe`` (which calls ``next_mode``) -> optimizer step.
``ctx`` (a ``StepContext``) holds the step's inputs, labels, outputs, the model and what forward passes call.
Everything a method keeps goes through ``state_dict`` (checkpoints resume it exactly) and must be identical on
every rank under DDP (all-reduce what comes from a rank's own batch). ``extra_cost`` declares the extra forward
and backward passes a step costs beyond the plain one; ``check`` refuses a model the method cannot apply to.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..models.modes import REGULAR, Mode
from ..models.network import MultiModalNet, Output


@dataclass(frozen=True)
class StepInfo:
    """What the loop knows after the backward pass of step ``step`` (0-based, global)."""

    step: int
    mode: Mode  # the mode this step ran in
    d_speed: float  # current d_speed (NaN before the first regular step, and for late fusion)
    warmup_steps: int  # P * warmup_epochs; the first decision that may leave regular mode follows step P
    speeds: tuple[float, ...] = ()  # s_k for every branch (MMTM), in modality order
    n_modalities: int = 2

    @property
    def in_warmup(self) -> bool:
        # the authors unlock re-balancing at the start of epoch 1 and decide after its first backward, so the
        # first re-balancing step is global step P + 1 (0-based), never P
        return self.step < self.warmup_steps


@dataclass
class StepContext:
    """One training step as a method sees it."""

    x: dict[str, Tensor]  # inputs by modality, on the device
    y: Tensor  # labels (B,)
    out: Output  # the forward pass in ``mode``
    model: MultiModalNet  # the bare model: heads, encoders, parameter groups
    net: nn.Module  # what forward passes call: the model, or its DistributedDataParallel wrapper
    mode: Mode
    step: int  # global step, 0-based
    epoch: int


@dataclass(frozen=True)
class EpochInfo:
    """What a method may use at an epoch boundary: the model, the training and validation splits (never the
    test split), and the settings to read them with."""

    epoch: int
    model: MultiModalNet
    train: Any = None  # the training split (data.base.Split)
    val: Any = None  # the validation split, held out from the training split
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    seed: int = 0


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", list: "a list"}


@dataclass(frozen=True)
class HParam:
    """The declaration of one method hyper-parameter: its default, type, allowed range or choices, and what it does.

    ``type`` is bool, int, float, str or list (default: the default's type; an int is accepted where a float is
    asked); ``low`` / ``high`` bound numbers (and a list's items; ``*_open`` excludes the bound); ``choices`` lists
    the allowed values; ``items`` is a list's item type. ``Method.check_hparams`` checks every value against its
    spec (type, finite, range, choices); ``help`` is shown by `greedymm list` and ends every error message."""

    default: Any
    help: str = ""
    type: type | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    items: type | None = None

    @property
    def kind(self) -> type:
        return self.type or type(self.default)

    def _number_ok(self, v: Any, kind: type) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else kind):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return self.high is None or not (v > self.high or (self.high_open and v == self.high))

    def accepts(self, v: Any) -> bool:
        kind = self.kind
        if kind in (int, float):
            ok = self._number_ok(v, kind)
        elif kind is list:
            ok = isinstance(v, list) and (self.items is None or all(self._number_ok(x, self.items) for x in v))
        else:
            ok = isinstance(v, kind)
        return ok and (self.choices is None or v in self.choices)

    def describe(self) -> str:
        """What a valid value is, e.g. "a finite number >= 0", "an integer in [1, 10]", "one of ('sgd', 'adam')"."""
        if self.choices is not None:
            return f"one of {self.choices}"
        kind = self.kind
        what = _TYPE_WORDS.get(kind, kind.__name__)
        if kind is list and self.items is not None:
            what = f"a list of {_TYPE_WORDS[self.items].removeprefix('a ').removeprefix('an ')}s"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"{what} in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        if lo is not None:
            return f"{what} {'>' if self.low_open else '>='} {lo}"
        if hi is not None:
            return f"{what} {'<' if self.high_open else '<='} {hi}"
        return what

    def convert(self, name: str, value: Any, raw: str | None = None) -> Any:
        """A ``--set`` value (parsed as JSON) -> the declared type (an int becomes a float where a float is asked);
        a value of another type raises ValueError naming the expected type."""
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            got = raw if raw is not None else repr(value)
            raise ValueError(f"--set {name}: expected {kind.__name__} ({self.describe()}), got {got!r}")
        return value


def as_hparam(value: Any) -> HParam:
    """A declared spec as is; a plain default value becomes a spec of the default's type with no range."""
    return value if isinstance(value, HParam) else HParam(value)


@dataclass(frozen=True)
class HParamRule:
    """A condition between hyper-parameters (e.g. modulation_ends >= modulation_starts) and the message, which
    names the fix, raised when it fails. ``Method.check_hparams`` checks the rules after every single value."""

    check: Callable[[Mapping[str, Any]], bool]
    message: str  # formatted with the hyper-parameters, e.g. "modulation_ends ({modulation_ends}) must be ..."


# the epoch window of the methods that modulate only between two epochs (OGM-GE, AGM, PMR)
MODULATION_WINDOW = HParamRule(
    lambda h: h["modulation_ends"] >= h["modulation_starts"],
    "modulation_ends ({modulation_ends}) must be >= modulation_starts ({modulation_starts}); with ends < starts "
    "nothing would ever be modulated",
)


class Method:
    """Base class: vanilla training (regular steps, the model's own loss, plain gradients)."""

    name = "vanilla"
    # hyper-parameters this method reads: name -> HParam (a plain default value is read as HParam(value));
    # --set names, types and ranges are checked against these
    hparams: ClassVar[dict[str, HParam]] = {}
    # conditions between hyper-parameters, checked after each value is
    hparam_rules: ClassVar[tuple[HParamRule, ...]] = ()
    # fusions the method is defined for (None: every fusion)
    fusions: ClassVar[tuple[str, ...] | None] = None
    # how many modalities the method is defined for (None: any): ``check`` refuses others when a run starts, and a
    # sweep before any run starts where --set modalities says how many (``unsupported_modalities``)
    modality_counts: ClassVar[tuple[int, ...] | None] = None
    # extra forward / backward passes per step beyond the plain one (the benchmark measures the real cost)
    extra_cost: ClassVar[dict[str, float]] = {"forward": 0, "backward": 0}
    # whether some steps leave parameters without a gradient (DDP must then be told)
    leaves_unused_parameters = False
    # whether the method balances by multiplying modalities' gradients by factors (OGM-GE, AGM, MSLR): a
    # normalizing optimizer (Adam and kin) divides a lasting factor out of the update (``optimizer_warning``)
    scales_gradients = False
    # whether the model needs a linear head per modality besides the fused one (late fusion)
    needs_unimodal_heads = False

    def optimizer_note(self, optimizers: Sequence[torch.optim.Optimizer]) -> str | None:
        """A warning about the optimizer(s) the run trains with, or None; checked once per run (train, fit, a
        Balancer given the optimizer, Lightning). Default: a method that balances by scaling gradients
        (``scales_gradients``) under an optimizer that normalizes them. Adam's update is m / sqrt(v), both running
        means of the same gradient, so a factor c on a parameter's gradient that lasts longer than v's memory
        (1 / (1 - beta2) steps, 1,000 by default) gives c m / (c sqrt(v)): the factor cancels, only its changes act."""
        if not self.scales_gradients:
            return None
        normalizing = sorted({type(o).__name__ for o in optimizers if isinstance(o, NORMALIZING_OPTIMIZERS)})
        if not normalizing:
            return None
        return (
            f"method {self.name!r} balances the modalities by multiplying their gradients by factors, and "
            f"{' and '.join(normalizing)} divides each parameter's update by the running size of its own gradients: "
            "a factor that lasts cancels out, and only its changes (and any noise the method adds) act. The "
            "method's official code trains with SGD; for the method as published use --set optimizer=sgd (Python: "
            "optimizer='sgd') with a learning rate for SGD"
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.hparams = {k: as_hparam(v) for k, v in cls.hparams.items()}
        if "load_state_dict" in cls.__dict__:  # every method's own loader refuses another's state by name
            cls.load_state_dict = _named_state_errors(cls.__dict__["load_state_dict"])

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        self.seed = seed
        self.h = {**self.defaults(), **hparams}
        self.check_hparams(self.h)
        self.mode = REGULAR  # mode of the next step

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyper-parameter at its declared default."""
        return {k: spec.default for k, spec in cls.hparams.items()}

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Raise ValueError naming the first bad value (unknown name, type, finite, range, choices) or failed rule;
        the message says what a valid value is and what the default is."""
        for k, v in hparams.items():
            spec = cls.hparams.get(k)
            if spec is None:
                raise ValueError(
                    f"method {cls.name!r} has no hyper-parameter {k!r}; it takes {sorted(cls.hparams) or 'none'}."
                    + _suggest(k, list(cls.hparams))
                )
            if not spec.accepts(v):
                why = f"; {spec.help}" if spec.help else ""
                raise ValueError(
                    f"{cls.name}: {k} must be {spec.describe()}, got {v!r} (default {spec.default!r}: "
                    f"--set {k}={_json(spec.default)}{why})"
                )
        full = {**cls.defaults(), **hparams}
        for rule in cls.hparam_rules:
            if not rule.check(full):
                raise ValueError(f"{cls.name}: " + rule.message.format(**full))

    @classmethod
    def describe_hparams(cls) -> list[str]:
        """One line per hyper-parameter: name, default, valid values, what it does (`greedymm list`, --help)."""
        return [
            f"{k}={_json(spec.default)} ({spec.describe()}){': ' + spec.help if spec.help else ''}"
            for k, spec in cls.hparams.items()
        ]

    # -- set-up -----------------------------------------------------------------------------------------
    @classmethod
    def unsupported_modalities(cls, n: int) -> str | None:
        """Why the method cannot train on ``n`` modalities (``modality_counts``), or None when it can."""
        if cls.modality_counts is None or n in cls.modality_counts:
            return None
        return f"method {cls.name!r} is defined for {' or '.join(map(str, cls.modality_counts))} modalities, not {n}"

    def check(self, model: MultiModalNet) -> None:
        """Raise ValueError if the method cannot apply to ``model``; the message names the fix."""
        fusion = getattr(model, "fusion", "")
        if self.fusions is not None and fusion not in self.fusions:
            raise ValueError(
                f"method {self.name!r} is defined for fusion {' / '.join(self.fusions)}, not {fusion!r}; "
                f"train it with --fusion {self.fusions[0]}, or pick a method that supports {fusion!r} "
                "(`greedymm list` shows each method's fusions)"
            )
        n = getattr(model, "n_modalities", None)
        if n is not None and (why := self.unsupported_modalities(n)):
            raise ValueError(f"{why}; choose that many with --modalities, or pick another method")

    # -- per-step hooks ---------------------------------------------------------------------------------
    def next_mode(self, info: StepInfo) -> Mode:
        """Decide the mode of step ``info.step + 1``; called after each backward pass."""
        return REGULAR

    def loss(self, ctx: StepContext) -> Tensor:
        return ctx.model.loss(ctx.out, ctx.y)

    def backward(self, loss: Tensor, ctx: StepContext) -> None:
        loss.backward()

    def on_after_backward(self, ctx: StepContext) -> None:
        """Change ``p.grad`` in place before the optimizer step (default: nothing)."""

    def observe(self, info: StepInfo) -> None:
        self.mode = self.next_mode(info)

    # -- epoch hooks ------------------------------------------------------------------------------------
    def on_epoch_start(self, info: EpochInfo) -> None:
        """Before the first step of an epoch (also when a run resumes at an epoch start)."""

    def on_epoch_end(self, info: EpochInfo) -> None:
        """After the last step of an epoch, before evaluation."""

    def epoch_log(self) -> dict[str, Any]:
        """Numbers the method adds to each epoch's record (results.jsonl, key "method_log"); JSON-serializable."""
        return {}

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"mode": str(self.mode)}  # the mode's name, as checkpoints always held it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode = Mode.parse(state["mode"])


class MethodStateError(ValueError):
    """A saved method state this method cannot load (another method's, or damaged)."""


def _named_state_errors(load: Callable[[Method, dict[str, Any]], None]) -> Callable[[Method, dict[str, Any]], None]:
    """``load`` with a missing entry named (the method, what the state lacks, what it holds, the likely cause)
    instead of a bare KeyError; a state that is not a mapping is refused likewise."""

    @functools.wraps(load)
    def checked(self: Method, state: dict[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise MethodStateError(f"{self.name}: a saved method state is a mapping, got {type(state).__name__}")
        try:
            load(self, state)
        except KeyError as e:
            held = ", ".join(map(str, state)) or "nothing"
            raise MethodStateError(
                f"{self.name}: the saved method state lacks {e.args[0]!r} (it holds: {held}); it was saved by "
                "another method (each keeps its own state) or altered. Load it with the method that saved it, or "
                "start a new run"
            ) from None

    return checked


Method.load_state_dict = _named_state_errors(Method.load_state_dict)  # type: ignore[method-assign]


_METHODS: dict[str, type[Method]] = {}


# optimizers that divide each parameter's update by a running size of that parameter's own gradients
NORMALIZING_OPTIMIZERS = (
    torch.optim.Adadelta, torch.optim.Adagrad, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax,
    torch.optim.NAdam, torch.optim.RAdam, torch.optim.RMSprop,
)  # fmt: skip


def optimizer_warning(method: Method, optimizers: Any) -> str | None:
    """What ``method`` has to say about the run's optimizer(s) (one or a list), or None: ``Method.optimizer_note``."""
    opts = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers or ())
    return method.optimizer_note(opts)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def wrap(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _METHODS if fnmatch(n, pattern))


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {list_methods()}.{_suggest(name, list_methods())}")
    return _METHODS[name]


def create_method(name: str, seed: int = 0, **hparams: Any) -> Method:
    """A new ``name`` method; ``hparams`` are checked against its declared specs (``Method.check_hparams``)."""
    return method_class(name)(seed=seed, **hparams)
