"""Utilization and learning speed for any ``nn.Module`` that takes a dict of modalities (docs/DIAGNOSE.md).

greedymm's own networks measure utilization with their MMTM or late-fusion passes (``MultiModalNet.eval_passes``).
A model greedymm did not build (its own fusion: cross-attention, a transformer over tokens, pretrained heads) gets
the late-fusion (family b) definitions, computed from outside the model:

- utilization by ablation: u(m_j) = (A(f) - A(f^{-j})) / A(f), where f^{-j} is the model with modality j
  replaced by a constant that carries no information about the item: its training mean (``fill="mean"``) or
  zeros (``fill="zeros"``), either at the input or at the output of an encoder module the user names (a forward
  hook replaces that module's output). A model whose output has several heads gets the rate of every head too.
- conditional learning speed from parameter groups the user names (module names: one group per modality's
  encoder, and optionally the fusion part): mu(P) = sum ||grad||^2 / sum ||p||^2 after each backward, summed
  over steps into M_P. With a fusion group F, s_k = log10(M_F / M_theta_k) and, for two modalities,
  d_speed = s_0 - s_1 = log10(M_theta_1 / M_theta_0): positive when modality 0's encoder learns slower, the
  same sign convention as the MMTM speeds (d_speed > 0: m0 lags).

The model's output may be a logits tensor, a tuple or NamedTuple whose first item (or ``logits`` field) holds the
logits, or a dict with ``"logits"``; heads are read from a ``heads`` field or key (a list of logits tensors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .speed import group_speed, log_speed
from .utilization import utilization_rate

FILLS = ("mean", "zeros")
Batch = tuple[Mapping[str, Tensor], Tensor]
BatchSource = Callable[[], Iterable[Batch]]  # a fresh pass over the items each call


def logits_of(out: Any) -> Tensor:
    """The logits of a model's output (a tensor, ``.logits``, ``["logits"]``, or a tuple's first item)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]
        raise TypeError(f"the model returned a dict without 'logits' (keys {sorted(out)}); return the logits tensor")
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(
        f"cannot find logits in the model's output ({type(out).__name__}); return a (batch, classes) tensor, or a "
        "tuple, NamedTuple or dict whose first item / 'logits' entry is one"
    )


def heads_of(out: Any) -> list[Tensor]:
    """The output's extra heads (``.heads`` or ``["heads"]``), or an empty list."""
    heads = out.get("heads") if isinstance(out, Mapping) else getattr(out, "heads", None)
    if heads is None or isinstance(heads, Tensor):
        return []
    return [h for h in heads if isinstance(h, Tensor)]


def _check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")


def _move(x: Mapping[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in x.items()}


@torch.no_grad()
def input_means(batches: Iterable[Batch], modalities: Sequence[str]) -> dict[str, Tensor]:
    """Each modality's mean item (float64 sums) over ``batches`` (the training split): the constant that replaces a
    modality at the input."""
    sums: dict[str, Tensor] = {}
    count = 0
    for x, _ in batches:
        for m in modalities:
            if m not in x:
                raise KeyError(f"a batch has no modality {m!r}; it has {sorted(x)}")
            s = x[m].double().sum(0)
            sums[m] = sums[m] + s if m in sums else s
        count += len(next(iter(x.values())))
    if not count:
        raise ValueError("no training items to take the means of")
    return {m: (s / count).float() for m, s in sums.items()}


@torch.no_grad()
def input_stds(batches: Iterable[Batch], modalities: Sequence[str], means: Mapping[str, Tensor]) -> dict[str, float]:
    """Each modality's overall standard deviation around its mean item (one number: the noise scale)."""
    sq = dict.fromkeys(modalities, 0.0)
    n = dict.fromkeys(modalities, 0)
    for x, _ in batches:
        for m in modalities:
            d = x[m].double() - means[m].double().to(x[m].device)
            sq[m] += float(d.square().sum())
            n[m] += d.numel()
    return {m: math.sqrt(sq[m] / max(n[m], 1)) for m in modalities}


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise ValueError(
            f"the model has no module {name!r}; name a module of model.named_modules(), e.g. one of {children}"
        ) from None


@contextmanager
def _hooks(model: nn.Module, replace: Mapping[str, Callable[[Any], Any]]):
    handles = [_module(model, name).register_forward_hook(lambda mod, i, o, f=f: f(o)) for name, f in replace.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def feature_means(
    model: nn.Module, batches: Iterable[Batch], modules: Mapping[str, str], device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """The mean output item of each named module (modality -> module name) over ``batches``, model in eval mode."""
    sums: dict[str, Tensor] = {}
    counts = dict.fromkeys(modules, 0)

    def grab(m: str) -> Callable[[Any], Any]:
        def f(o: Any) -> Any:
            if not isinstance(o, Tensor):
                raise TypeError(f"module {modules[m]!r} (modality {m}) returns {type(o).__name__}, not a tensor")
            s = o.detach().double().sum(0)
            sums[m] = sums[m] + s if m in sums else s
            counts[m] += len(o)
            return o

        return f

    was = model.training
    model.eval()
    try:
        with _hooks(model, {name: grab(m) for m, name in modules.items()}):
            for x, _ in batches:
                model(_move(x, device))
    finally:
        model.train(was)
    return {m: (s / max(counts[m], 1)).float() for m, s in sums.items()}


@torch.no_grad()
def accuracies(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device | str = "cpu",
    inputs: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    hooks: Mapping[str, Callable[[Any], Any]] | None = None,
) -> tuple[float, list[float]]:
    """(accuracy, [accuracy of each head]) of ``model`` in eval mode; ``inputs`` changes each batch's inputs,
    ``hooks`` (module name -> function of its output) change module outputs."""
    correct, heads, seen = 0, [], 0
    was = model.training
    model.eval()
    try:
        with _hooks(model, hooks or {}):
            for x, y in batches:
                x = _move(x, device)
                if inputs is not None:
                    x = inputs(x)
                y = y.to(device)
                out = model(x)
                correct += int((logits_of(out).argmax(1) == y).sum())
                hs = heads_of(out)
                if not heads:
                    heads = [0] * len(hs)
                for k, h in enumerate(hs):
                    heads[k] += int((h.argmax(1) == y).sum())
                seen += len(y)
    finally:
        model.train(was)
    if not seen:
        raise ValueError("no items to evaluate")
    return correct / seen, [h / seen for h in heads]


def _filled(value: Tensor, fill: str, like: Tensor) -> Tensor:
    base = torch.zeros_like(like) if fill == "zeros" else value.to(like.device, like.dtype).expand_as(like)
    return base.clone()


def utilization_by_ablation(
    model: nn.Module,
    batches: BatchSource,
    modalities: Sequence[str],
    *,
    fill: str = "mean",
    at: Mapping[str, str] | None = None,
    means: Mapping[str, Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Family-(b)-style utilization of every modality: u(m_j) = (A(f) - A(f^{-j})) / A(f).

    ``batches()`` gives the items to score (validation). ``at``: modality -> the name of an encoder module whose
    output is replaced (a forward hook); without it the modality is replaced at the input. ``means``: the
    replacement of each modality (its training mean input, or its encoder output's: ``input_means`` /
    ``feature_means``); needed for ``fill="mean"``, unused for zeros. Returns {"acc", "acc_without": {m: A},
    "acc_only": {m: A with every other modality replaced}, "u": {m: u}, "heads": [{"acc", "acc_without", "u"}
    per head]} (heads: empty for a single-output model)."""
    _check_fill(fill)
    if fill == "mean" and means is None:
        raise ValueError("fill='mean' needs the training means (input_means or feature_means of the training split)")
    if at is not None and (missing := sorted(set(modalities) - set(at))):
        raise ValueError(f"at names an encoder module for {sorted(at)}; also name one for {missing}")
    for m in modalities:
        if fill == "mean" and m not in means:
            raise ValueError(f"no training mean for modality {m!r}")

    def ablated(removed: Sequence[str]) -> tuple[float, list[float]]:
        if at is None:

            def inputs(x: dict[str, Tensor]) -> dict[str, Tensor]:
                return {**x, **{m: _filled(means[m] if means else None, fill, x[m]) for m in removed}}

            return accuracies(model, batches(), device=device, inputs=inputs)
        hooks = {at[m]: (lambda o, m=m: _filled(means[m] if means else None, fill, o)) for m in removed}
        return accuracies(model, batches(), device=device, hooks=hooks)

    acc, head_acc = accuracies(model, batches(), device=device)
    without: dict[str, float] = {}
    only: dict[str, float] = {}
    head_without: list[dict[str, float]] = [{} for _ in head_acc]
    for m in modalities:
        without[m], hs = ablated([m])
        for k, h in enumerate(hs):
            head_without[k][m] = h
    for m in modalities:
        others = [k for k in modalities if k != m]
        only[m] = without[others[0]] if len(others) == 1 else ablated(others)[0]
    return {
        "acc": acc,
        "acc_without": without,
        "acc_only": only,
        "u": {m: utilization_rate(acc, without[m]) for m in modalities},
        "heads": [
            {
                "acc": head_acc[k],
                "acc_without": head_without[k],
                "u": {m: utilization_rate(head_acc[k], head_without[k][m]) for m in modalities},
            }
            for k in range(len(head_acc))
        ],
    }


def noise_accuracy(
    model: nn.Module,
    batches: BatchSource,
    modality: str,
    level: float,
    std: float,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy with Gaussian noise of std ``level * std`` added to ``modality``'s input (``std``: the modality's
    spread over the training split, ``input_stds``); the noise is fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def inputs(x: dict[str, Tensor]) -> dict[str, Tensor]:
        noise = torch.randn(x[modality].shape, generator=gen).to(x[modality].device, x[modality].dtype)
        return {**x, modality: x[modality] + level * std * noise}

    return accuracies(model, batches(), device=device, inputs=inputs)[0]


class GroupSpeed:
    """Cumulative mu of named parameter groups, for any model.

    ``groups``: group name -> a module name (or several) of ``model``; the group holds those modules' parameters.
    ``encoders``: group name of each modality's encoder (modality -> group; default: the groups named like the
    modalities). ``fusion``: the group of the fusion part, or None. Call ``update()`` after each backward and
    before the optimizer step (the gradients the optimizer will use)."""

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[str, str | Sequence[str]],
        encoders: Mapping[str, str],
        fusion: str | None = None,
    ) -> None:
        if not groups:
            raise ValueError("name at least one parameter group: {group name: module name}")
        self.params: dict[str, list[nn.Parameter]] = {}
        owner: dict[int, str] = {}
        for g, names in groups.items():
            names = [names] if isinstance(names, str) else list(names)
            params = [p for n in names for p in _module(model, n).parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"speed group {g!r} ({names}) holds no trainable parameters")
            for p in params:
                if id(p) in owner and owner[id(p)] != g:
                    raise ValueError(f"speed groups {owner[id(p)]!r} and {g!r} share parameters; make them disjoint")
                owner[id(p)] = g
            self.params[g] = params
        for m, g in encoders.items():
            if g not in self.params:
                raise ValueError(f"modality {m!r}: no speed group {g!r}; groups are {sorted(self.params)}")
        if fusion is not None and fusion not in self.params:
            raise ValueError(f"fusion group {fusion!r} is not among the groups {sorted(self.params)}")
        self.encoders, self.fusion = dict(encoders), fusion
        self.sums = dict.fromkeys(self.params, 0.0)
        self.steps = 0

    def update(self) -> dict[str, float]:
        """Add this step's mu of every group; returns them."""
        mus = {g: float(group_speed(p)) for g, p in self.params.items()}
        for g, v in mus.items():
            if math.isfinite(v):
                self.sums[g] += v
        self.steps += 1
        return mus

    def speeds(self) -> dict[str, Any]:
        """{"M": {group: cumulative mu}, "s": {modality: log10(M_fusion / M_encoder)} (with a fusion group),
        "d_speed": s_0 - s_1 for two modalities (NaN otherwise, or without a fusion group: then
        log10(M_theta_1 / M_theta_0), the same number)}."""
        enc = {m: self.sums[g] for m, g in self.encoders.items()}
        s = {m: log_speed(self.sums[self.fusion], v) for m, v in enc.items()} if self.fusion else {}
        names = list(enc)
        d = math.nan
        if len(names) == 2:
            d = log_speed(enc[names[1]], enc[names[0]])
        return {"M": dict(self.sums), "s": s, "d_speed": d, "steps": self.steps}
