"""``greedymm diagnose``: is the model greedy, should it be balanced, and with what (docs/DIAGNOSE.md).

``greedymm.diagnose(data, model=None, ...)`` (this module is callable: it calls ``diagnose`` below) runs the
protocol (``protocol``), applies the rules (``rules``) and writes ``diagnosis.json`` and the report page
(``page``: markdown and HTML) into ``out``.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import (
    DEFAULT_CURES,
    NOISE_LEVELS,
    USER_DEFAULT_CURES,
    Engine,
    GreedymmEngine,
    ModelEngine,
    ModelSettings,
    check_cure_sets,
    clean_json,
    plan_protocol,
    run_protocol,
)
from .rules import CURE_HELPS, GREEDY_CANNOT_JUDGE, NO_CURE_HELPS, NOT_GREEDY, VERDICTS, diagnose_records

__all__ = [
    "CURE_HELPS",
    "DEFAULT_CURES",
    "USER_DEFAULT_CURES",
    "NOISE_LEVELS",
    "GREEDY_CANNOT_JUDGE",
    "NOT_GREEDY",
    "NO_CURE_HELPS",
    "VERDICTS",
    "Diagnosis",
    "diagnose",
    "diagnose_records",
    "plan",
]


@dataclass(frozen=True)
class Diagnosis:
    """What ``diagnose`` found: the verdict, the under-used modalities (your names), the recommendation (or None),
    every number the rules used (``numbers``: the content of diagnosis.json), the run records, and the files."""

    verdict: str
    under_used: list[str]
    recommendation: dict[str, Any] | None
    numbers: dict[str, Any]
    records: list[dict[str, Any]]
    json_path: Path
    markdown_path: Path
    html_path: Path


def diagnose(
    data: Any = "synthetic",
    model: Callable[[], Any] | None = None,
    *,
    out: str | Path = "diagnose",
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int | None = None,
    max_minutes: float | None = None,
    cures: Sequence[str] | None = DEFAULT_CURES,
    fusion: str = "mmtm",
    sets: Sequence[str] = (),
    device: str = "auto",
    groups: Mapping[str, str | Sequence[str]] | None = None,
    encoders: Mapping[str, str] | None = None,
    fusion_group: str | None = None,
    at: Mapping[str, str] | None = None,
    fill: str = "mean",
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    name: str | None = None,
    loss: Callable[[Any, Any], Any] | None = None,
    echo: Callable[[str], None] | None = print,
    reuse: Sequence[str | Path] = (),
    cure_anyway: bool = False,
    **overrides: Any,
) -> Diagnosis:
    """Diagnose greedy learning on ``data`` and write the results into ``out``.

    ``data``: a data set name (``"synthetic"``, ``"npz:PATH"``, ...) or a ``MultiModalData``.

    ``model``: None for greedymm's network (``fusion``, ``sets`` and ``overrides``: any ``TrainConfig`` setting,
    e.g. ``width=0.5``, as for ``greedymm train``; ``lr``, ``weight_decay`` and ``batch_size`` too); or a function
    that builds your own ``nn.Module`` taking a dict of modalities, trained with Adam (``lr`` default 1e-3,
    ``batch_size`` 64, ``weight_decay`` 0). For your model: ``groups``, speed groups {name: module name(s)};
    ``encoders``, {modality: group} (default: the groups named like the modalities); ``fusion_group``; ``at``,
    {modality: encoder module} to ablate there instead of at the input; ``fill``, "mean" or "zeros"; ``name``, the
    model's name in run hashes (default its repr); ``loss(out, y)`` instead of cross-entropy; ``sets``, the cures'
    hyper-parameters (``["gamma=2.0"]``: each to every cure that has it; with a data set name, ``data.*`` items
    load the data).

    ``seeds``, ``epochs`` (per run), ``max_minutes``: the budget. ``cures``: methods tried when a modality is
    under-used (``method`` or ``method@fusion``; None or empty: none; not given: ``DEFAULT_CURES`` for greedymm's
    network, ``USER_DEFAULT_CURES`` for your model); ``cure_anyway``: try them even when no modality is under-used
    (the verdict stays ``not-greedy``; a cure that beats vanilla is named in the ``helps-anyway`` warning).
    ``echo``: where progress lines go.
    ``reuse``: folders (e.g. an earlier ``greedymm sweep --out``) whose finished runs with exactly the settings a run
    of the protocol needs are copied in instead of trained (greedymm's network on a named data set only)."""
    say = echo or (lambda s: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup = {k: v for k, v in locals().items() if k in _SETUP}
    engine, joint_fusion, cures = _prepare(data, model, out, cures, setup, overrides)
    diag, records = run_protocol(
        engine,
        seeds=list(seeds),
        cures=list(cures or []),
        max_minutes=max_minutes,
        echo=say,
        joint_fusion=joint_fusion,
        cure_anyway=cure_anyway,
    )
    diag["setup"] = {
        **engine.describe(),
        "seeds": list(seeds),
        "epochs": engine.epochs,
        "max_minutes": max_minutes,
        "cures": list(cures or []),
        "cure_anyway": bool(cure_anyway),
        "data": engine.data.name,
        "modalities": list(engine.modalities),
        "noise_levels": list(NOISE_LEVELS),
    }
    diag["runs"] = [{k: v for k, v in r.items() if k != "heads"} for r in records]
    from .page import write_page

    md, page = write_page(diag, records, out)
    path = out / "diagnosis.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(clean_json(diag), indent=1))
    tmp.replace(path)
    say(f"diagnose: {diag['verdict']}; {path}, {md}, {page}")
    return Diagnosis(diag["verdict"], list(diag["under_used"]), diag["recommendation"], diag, records, path, md, page)


# diagnose's arguments that say how the runs are set up (read by _prepare; plan takes their defaults from diagnose)
_SETUP = ("epochs", "fusion", "sets", "device", "groups", "encoders", "fusion_group", "at", "fill", "lr",
          "weight_decay", "batch_size", "name", "loss", "reuse")  # fmt: skip


def _prepare(
    data: Any, model: Callable[[], Any] | None, out: Path, cures: Sequence[str] | None, setup: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> tuple[Engine, str | None, Sequence[str] | None]:  # fmt: skip
    """The engine that trains and scores the runs (greedymm's network or your model), the joint model's fusion
    (None for your model) and the cures (the defaults for your model when none were named). ``setup``: diagnose's
    arguments named in ``_SETUP``; ``overrides``: its other keyword arguments (settings of greedymm's network)."""
    from ..data import MultiModalData
    from ..methods import list_methods, method_class

    fusion, epochs, sets, device, reuse = (setup[k] for k in ("fusion", "epochs", "sets", "device", "reuse"))
    training = {k: setup[k] for k in ("lr", "weight_decay", "batch_size") if setup[k] is not None}
    if model is None:
        overrides = {**(overrides or {}), **training}  # greedymm's network: TrainConfig settings like any other
        if isinstance(data, MultiModalData):
            engine = GreedymmEngine(
                data.name,
                out,
                data=data,
                fusion=fusion,
                epochs=epochs,
                sets=sets,
                overrides=overrides,
                device=device,
                reuse=reuse,
            )
        elif isinstance(data, str):
            engine = GreedymmEngine(
                data, out, fusion=fusion, epochs=epochs, sets=sets, overrides=overrides, device=device, reuse=reuse
            )
        else:
            raise TypeError(f"data must be a data set name or a greedymm MultiModalData, got {type(data).__name__}")
        joint_fusion: str | None = fusion
    else:
        if reuse:
            raise ValueError(
                "reuse= copies runs of greedymm's network; your model's finished runs are reused from out= itself "
                "(run the same call again with the same out=)"
            )
        if isinstance(data, str):
            from ..config import resolve_config
            from ..run import load_data

            # the data set's settings (data.size=...) load it; the methods' hyper-parameters go to the cures
            hyper = {k for m in list_methods() for k in method_class(m).hparams}
            cure_sets = tuple(item for item in sets if item.split("=", 1)[0] in hyper)
            data = load_data(resolve_config(data, sets=[x for x in sets if x not in cure_sets], **overrides))
        elif overrides:
            raise ValueError(
                f"settings {sorted(overrides)} configure greedymm's network; your model takes lr, weight_decay, "
                "batch_size, epochs, and the cures' hyper-parameters as sets=['alpha=0.5', ...]"
            )
        else:
            cure_sets = tuple(sets)
        check_cure_sets(cure_sets)
        if not isinstance(data, MultiModalData):
            raise TypeError(f"data must be a data set name or a greedymm MultiModalData, got {type(data).__name__}")
        settings = ModelSettings(
            **training,
            epochs=epochs or 10,
            **{k: setup[k] for k in ("groups", "encoders", "fusion_group", "at", "fill", "name", "loss")},
            cure_sets=cure_sets,
        )
        engine = ModelEngine(model, data, out, settings, device=device)
        joint_fusion = None
        if cures is DEFAULT_CURES:  # not named: the defaults that can run on a model greedymm did not build
            cures = USER_DEFAULT_CURES
    return engine, joint_fusion, cures


def plan(
    data: Any = "synthetic",
    model: Callable[[], Any] | None = None,
    *,
    out: str | Path = "diagnose",
    seeds: Sequence[int] = (0, 1, 2),
    max_minutes: float | None = None,
    cures: Sequence[str] | None = DEFAULT_CURES,
    cure_anyway: bool = False,
    echo: Callable[[str], None] | None = print,
    **settings: Any,
) -> dict[str, Any]:
    """What ``diagnose`` with the same arguments would do, and nothing else: nothing is trained, copied or written
    (``greedymm diagnose --dry-run``). Every run with its state (``finished`` in ``out``, ``reuse`` from a
    ``reuse=`` folder, or ``train``); the cures' runs, which ``diagnose`` trains only when a modality turns out
    under-used (or with ``cure_anyway``); the cures refused; the time to expect, from the training times that the
    finished and reusable runs recorded. ``settings``: the rest of ``diagnose``'s arguments (``epochs``,
    ``reuse``, ``sets``, ``groups``, ...). The text goes to ``echo``, line by line, and is kept in ``lines``."""
    defaults = inspect.signature(diagnose).parameters
    setup = {k: settings.pop(k, defaults[k].default) for k in _SETUP}
    engine, joint_fusion, cures = _prepare(data, model, Path(out), cures, setup, settings)
    result = plan_protocol(
        engine,
        seeds=list(seeds),
        cures=list(cures or []),
        max_minutes=max_minutes,
        joint_fusion=joint_fusion,
        cure_anyway=cure_anyway,
    )
    for line in result["lines"]:
        (echo or (lambda s: None))(line)
    return result


class _CallableModule(types.ModuleType):
    """``greedymm.diagnose(...)`` calls ``diagnose``; ``greedymm.diagnose.rules`` and the other submodules stay
    reachable as attributes."""

    def __call__(self, *args: Any, **kwargs: Any) -> Diagnosis:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
