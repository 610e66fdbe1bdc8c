"""The cures on a model greedymm did not build: the registered methods themselves, run through ``UserNet``, a thin
view of the user's module as the model interface the method contract asks for (docs/DIAGNOSE.md section 2).

What a user's model can supply, and which methods that lets run exactly as docs/BASELINES.md defines them:

    the output's ``heads`` (one logits tensor per modality, in the data's modality order, each reading its own
    modality's encoder only)
        ``uniform``    L = CE(o, y) + sum_m CE(o_m, y)  (o: the model's logits, o_m: head m)
        ``mmpareto``   L_mm = CE(o), L_m = CE(o_m); encoder m's gradient by the Pareto rule (needs ``groups`` too)
        ``gblending``  L = sum_k w_k CE_k, the weights estimated by training copies on one head each; a uni-modal
                       head's logits from the whole forward equal those from its modality alone
                       (``unimodal_logits``), so the copies train what the method's own copies train
    ``groups`` + ``encoders`` (each modality's encoder modules): ``encoder(k)`` for mmpareto
    ``at`` (each modality's encoder output module), when those outputs are (batch, d): the pooled features z_m
        ``pmr``        class prototypes of z_m and the prototype loss on them (fusion-agnostic by definition)
    nothing more than a dict of inputs, and logits returned straight from one layer with a weight
        ``agm``        the responses from coalitions of zeroed inputs (the construction wraps any network); the
                       clip reads that output layer's weight gradient

The methods' own code computes every number (loss, gradients, coefficients): ``UserCure`` drives one through
``greedymm.Balancer``, the step API greedymm's own loop uses. The methods that read a part of greedymm's networks a
user's model does not declare are refused with what is missing (``refusal``): guided and random (MMTM gates),
OGM-GE and MSLR (per-modality logits read off the fusion head's weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics.ablation import heads_of, logits_of
from ..models.modes import REGULAR, Mode
from ..models.network import MultiModalNet, Output, SpeedLayout

APPLIES = ("uniform", "mmpareto", "gblending", "pmr", "agm")  # what a user's model can run, given what it supplies
NEEDS_HEADS = ("uniform", "mmpareto", "gblending")
NEEDS_ENCODERS = ("mmpareto",)


@dataclass(frozen=True)
class Probe:
    """What one forward of a user's model shows: the number of heads in its output, the module whose output is the
    logits (innermost, with a ``weight``; None if none), and the per-item shape of each ``at`` module's output."""

    n_heads: int = 0
    output_layer: str | None = None
    features: dict[str, tuple[int, ...]] = field(default_factory=dict)


def refusal(
    method: str,
    *,
    modalities: Sequence[str],
    probe: Probe,
    encoders_named: bool,
) -> str | None:
    """Why ``method`` cannot run on a user's model that supplies what the arguments say (None: it can): what the
    model lacks and how to add it. ``probe``: what its output holds (``probe_model``); ``encoders_named``: ``groups``
    name an encoder per modality."""
    mods = list(modalities)
    n = len(mods)
    n_heads, output_layer = probe.n_heads, probe.output_layer
    if method in ("guided", "random"):
        return (
            f"{method} re-balances by freezing the MMTM gates between greedymm's branches, which a model greedymm did "
            "not build does not have; build it from your encoders with greedymm.intermediate_fusion (MMTM), or use "
            "greedymm.late_fusion for the late-fusion cures"
        )
    if method in ("ogm-ge", "mslr"):
        return (
            f"{method} reads each modality's logits off the fusion head (the columns of a concat head's weight that "
            "multiply z_m, or a sum head's fc_m); your model's fusion gives greedymm no such split, and a score by "
            "ablation would be another method (agm is the one whose per-modality score comes from zeroed inputs: it "
            "runs on your model). For " + method + " build the model with greedymm.late_fusion(..., fusion='concat' "
            "or 'sum') from your encoders"
        )
    if method == "vanilla":
        return "vanilla is the joint run itself, not a cure"
    if method not in APPLIES:
        return (
            f"{method} is not adapted to a model greedymm did not build; build the model from your encoders with "
            "greedymm.late_fusion or greedymm.intermediate_fusion to try it"
        )
    if method in NEEDS_HEADS and n_heads != n:
        got = "no heads" if n_heads == 0 else f"{n_heads} heads for {n} modalities"
        example = ", ".join(f"head_{m}(z_{m})" for m in mods)
        return (
            f"{method} trains one uni-modal head per modality besides your prediction, and your model's output has "
            f"{got}. Add a linear head on each modality's encoder output and return them with the logits, in the "
            f'data\'s modality order: {{"logits": ..., "heads": [{example}]}} (a dict, or a NamedTuple with a '
            "heads field); agm needs no heads"
        )
    if method == "pmr":
        if not probe.features:
            named = ", ".join(f'"{m}": "<{m} encoder module>"' for m in mods)
            return (
                "pmr computes class prototypes of each modality's pooled feature z_m (what the fusion reads) and "
                f"adds a prototype loss on it; name the module that outputs it with at={{{named}}} (a (batch, d) "
                "output)"
            )
        flat = {m: shape for m, shape in probe.features.items() if len(shape) != 1}
        if flat:
            m, shape = next(iter(flat.items()))
            return (
                f"pmr needs one (batch, d) feature per modality, and the at module of {m!r} outputs (batch, "
                f"{', '.join(map(str, shape))}); name a module whose output is pooled (one vector per item)"
            )
    if method in NEEDS_ENCODERS and not encoders_named:
        named = ", ".join(f'"{m}": "<{m} encoder module>"' for m in mods)
        return (
            f"{method} changes the gradient of each modality's encoder (its parameters without the head), and no "
            f"encoder is named; pass groups={{{named}}} (module names of your model, heads left out)"
        )
    if method == "agm":
        if n not in (2, 3):
            return (
                f"agm is defined by its authors' code for 2 or 3 modalities (the coefficient's cap is 10 and 7), "
                f"not {n}"
            )
        if output_layer is None:
            return (
                "agm clips every gradient when an entry of the output layer's weight gradient leaves [-b, b], and "
                "your model's logits are not the output of one module with a weight; return the logits straight from "
                "a layer (e.g. return self.head(z), an nn.Linear), not from arithmetic after it"
            )
    return None


def probe_model(model: nn.Module, x: Mapping[str, Tensor], at: Mapping[str, str] | None = None) -> Probe:
    """What the output holds (``Probe``) from one eval-mode forward on ``x`` without gradients: the heads, the
    innermost module with a ``weight`` whose forward output is the logits tensor itself, the ``at`` outputs' shapes."""
    seen: list[tuple[str, Any]] = []
    handles = [
        mod.register_forward_hook(lambda _m, _i, o, name=name: seen.append((name, o)))
        for name, mod in model.named_modules()
        if name
    ]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(dict(x))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    logits = logits_of(out)
    layer = next(
        (
            name
            for name, o in seen  # hooks fire as modules finish: inner modules first
            if o is logits and isinstance(getattr(model.get_submodule(name), "weight", None), nn.Parameter)
        ),
        None,
    )
    outputs = dict(seen)
    features = {
        m: tuple(outputs[name].shape[1:]) if isinstance(outputs.get(name), Tensor) else ()
        for m, name in (at or {}).items()
    }
    return Probe(len(heads_of(out)), layer, features)


class UserNet(MultiModalNet):
    """A user's ``nn.Module`` (dict of modalities in, logits and optional ``heads`` out) seen as a greedymm network
    by the method contract: the forward gives ``Output(logits, heads, features)``, the features being the outputs of
    the ``features`` modules (one per modality; none when not named); ``loss`` is CE of the logits (the
    prediction); ``encoder(k)`` holds the modules named for modality k; ``unimodal_logits(x, k)`` is head k of the
    forward (a uni-modal head reads modality k only); ``output_weights`` the weight of the layer whose output is
    the logits. It adds no parameters: ``inner`` is the user's module, saved and loaded as is."""

    family = "user"
    fusion = "own"

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[str],
        *,
        encoders: Mapping[str, Sequence[str]] | None = None,
        n_heads: int = 0,
        output_layer: str | None = None,
        features: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(modalities)
        self.inner = model
        self._encoders = {m: list(v) for m, v in (encoders or {}).items()}
        self._n_heads = n_heads
        self._output = output_layer
        self._features = dict(features or {})

    def forward(self, inputs: dict[str, Tensor], mode: Mode | str = REGULAR) -> Output:
        if Mode.parse(mode) != REGULAR:
            raise ValueError(f"a model greedymm did not build runs in mode 'regular' only, not {str(mode)!r}")
        if not self._features:
            out = self.inner(dict(inputs))
            return Output(logits_of(out), tuple(heads_of(out)), ())
        grabbed: dict[str, Tensor] = {}
        handles = [
            self.inner.get_submodule(name).register_forward_hook(lambda _m, _i, o, m=m: grabbed.__setitem__(m, o))
            for m, name in self._features.items()
        ]
        try:
            out = self.inner(dict(inputs))
        finally:
            for h in handles:
                h.remove()
        return Output(logits_of(out), tuple(heads_of(out)), tuple(grabbed[m] for m in self.modalities))

    def loss(self, out: Output, y: Tensor) -> Tensor:
        return F.cross_entropy(out.logits, y)

    def utilization_modes(self, pairwise: bool = False) -> tuple[Mode, ...]:
        return ()

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """Each named encoder's parameters (all the model's when none is named); the Balancer's own tracker reads
        them, diagnose's speeds come from ``GroupSpeed``."""
        if not self._encoders:
            return [[p for p in self.inner.parameters() if p.requires_grad]]
        return [[p for p in self.encoder(k).parameters() if p.requires_grad] for k in range(self.n_modalities)]

    def speed_layout(self) -> SpeedLayout:
        names = tuple(f"mu_{m}" for m in self.modalities) if self._encoders else ("mu_model",)
        return SpeedLayout(False, names, names)

    def encoder(self, k: int) -> nn.Module:
        m = self.modalities[k]
        if m not in self._encoders:
            raise ValueError(f"no encoder is named for modality {m!r}; name it in groups={{{m!r}: '<module name>'}}")
        return nn.ModuleList(self.inner.get_submodule(name) for name in self._encoders[m])

    @property
    def has_unimodal_heads(self) -> bool:
        return self._n_heads == self.n_modalities

    def unimodal_logits(self, inputs: dict[str, Tensor], k: int) -> Tensor:
        if not self.has_unimodal_heads:
            raise ValueError("the model's output has no heads, one per modality")
        return self.forward(inputs).heads[k]

    def cannot_split(self) -> str:
        return "a model greedymm did not build declares no per-modality logits of its fusion head"

    def output_weights(self) -> list[Tensor]:
        if self._output is None:
            raise NotImplementedError("the logits are not the output of one layer with a weight")
        return [self.inner.get_submodule(self._output).weight]

    def _mean_holders(self) -> list[nn.Module]:
        return []


class UserCure:
    """One method training a ``UserNet`` through ``greedymm.Balancer``: ``step(x, y)`` runs forward, the method's
    loss, its backward (and gradient changes) and ends the step (the optimizer step is the caller's); the epoch
    calls pass the training and validation splits to the method's epoch work."""

    def __init__(self, net: UserNet, method: str, seed: int, hparams: Mapping[str, Any] | None = None) -> None:
        from ..api import Balancer

        self.net = net
        self.balancer = Balancer(net, method, seed=seed, hparams=dict(hparams or {}))

    def step(self, x: Mapping[str, Tensor], y: Tensor) -> float:
        """One step's gradients; the logged loss (not finite: the step must not be taken)."""
        bal = self.balancer
        out = bal.forward(x)
        loss = bal.loss(out, y)
        bal.backward(loss)
        return bal.end_step().loss

    def epoch_start(self, train: Any, val: Any, batch_size: int) -> None:
        self.balancer.epoch_start(train, val, batch_size)

    def epoch_end(self, train: Any, val: Any, batch_size: int) -> dict[str, Any]:
        """The method's epoch work; then its epoch log (coefficients worth watching), as greedymm's loop reads it."""
        self.balancer.epoch_end(train, val, batch_size)
        return self.balancer.method.epoch_log()
