"""The diagnose protocol: which runs, in which order, within a budget, and what each finished run contributes.

1. Per seed: each modality alone, then the joint model as built (vanilla). 2. The diagnosis (``rules``). 3. If a
modality is under-used: the cures, on the same seeds (vanilla on a cure's own fusion beside it when that differs).
Runs go seed by seed, so a budget that runs out leaves whole seeds. Every run has its own folder named by a hash of
what it computes (``sweep.run_hash`` for greedymm's networks), so the same command with a larger budget (more
seeds, more cures) reuses every finished run. Validation selects the epoch; test is carried along, never used.

Two engines train the runs: ``GreedymmEngine`` (greedymm's networks through ``greedymm.fit``: run folders that
``greedymm report`` reads) and ``ModelEngine`` (any ``nn.Module`` taking a dict of modalities, a plain Adam loop).
After training, each run's best checkpoint is scored on validation with every modality at its training mean
(utilization by ablation, ``metrics.ablation``) and, for the joint model, with each modality noised.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_write_text
from ..checkpoint import save_checkpoint
from ..data import MultiModalData, epoch_order, eval_order, select_modalities
from ..methods import create_method, method_class
from ..metrics.ablation import (
    GroupSpeed,
    accuracies,
    feature_means,
    heads_of,
    input_means,
    input_stds,
    logits_of,
    noise_accuracy,
    utilization_by_ablation,
)
from ..rundir import BEST
from . import rules
from .user_cures import UserCure, UserNet, probe_model, refusal

DEFAULT_CURES = ("guided", "uniform@concat", "mmpareto@concat")
# a model greedymm did not build: the cures that can run on one (uniform and mmpareto need its heads; agm does not)
USER_DEFAULT_CURES = ("uniform", "mmpareto", "agm")
NOISE_LEVELS = (0.5, 1.0, 2.0)  # noise std in units of the modality's own spread over the training split
ANALYSIS = "analysis"  # out/analysis/<run folder>.json: each run's ablation numbers, computed once
RUNS = "runs"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunSpec:
    """One run of the protocol."""

    role: str  # alone | joint | reference (vanilla on a cure's fusion) | cure
    method: str
    fusion: str | None
    modalities: tuple[str, ...]
    seed: int

    def label(self) -> str:
        what = f"{self.method}@{self.fusion}" if self.fusion else self.method
        on = self.modalities[0] if self.role == "alone" else "all"
        return f"{self.role} {what} on {on}, seed {self.seed}"


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _split_batches(split: Any, batch_size: int, fill: Mapping[str, Tensor] | None = None) -> Callable[[], Any]:
    """A fresh pass over ``split`` in order; ``fill``: modalities replaced by a constant item (alone runs)."""

    def gen():
        for idx in eval_order(len(split), batch_size):
            x, y = split.batch(idx)
            if fill:
                x = {**x, **{m: v.expand_as(x[m]).clone() for m, v in fill.items()}}
            yield x, y

    return gen


def data_fingerprint(data: MultiModalData) -> str:
    """A short hash of what a data set holds (run.data_fingerprint, the record a run folder keeps of its data, and
    the data's source): run folders of one data set are not reused for another that only shares its name."""
    from ..run import data_fingerprint as record

    text = json.dumps([record(data), data.source], default=str, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def clean_json(obj: Any) -> Any:
    """NaN and infinities as null (strict JSON), tuples as lists, tensors as numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Tensor):
        return clean_json(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


class Engine:
    """Trains and scores the protocol's runs on one data set. Subclasses: ``GreedymmEngine``, ``ModelEngine``."""

    data: MultiModalData
    out: Path
    epochs: int
    batch_size: int
    device: torch.device

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.data.modalities

    def folder(self, spec: RunSpec) -> Path:
        raise NotImplementedError

    def finished(self, spec: RunSpec) -> bool:
        raise NotImplementedError

    def train(self, spec: RunSpec, echo: Echo) -> None:
        raise NotImplementedError

    def record(self, spec: RunSpec) -> dict[str, Any]:
        raise NotImplementedError

    def recorded_seconds(self, folder: Path) -> float | None:
        """The training time the finished run in ``folder`` recorded (seconds, resumes included), or None: the
        budget's estimate before anything is trained here."""
        return None

    def reusable(self, spec: RunSpec) -> Path | None:
        """A finished run of exactly ``spec`` elsewhere (``reuse=``) that ``adopt`` would copy, or None."""
        return None

    def refuses(self, spec: RunSpec) -> str | None:
        """Why this engine cannot run ``spec`` (a cure that does not apply), or None."""
        return None

    def cure_fusion(self, fusion: str) -> str | None:
        """The fusion a cure named ``method@fusion`` trains on here (a user's model keeps its own: None)."""
        return fusion

    def adopt(self, spec: RunSpec) -> Path | None:
        """Copy a finished run of exactly ``spec`` from elsewhere (``reuse=``) into this diagnosis; the folder it
        came from, or None."""
        return None

    def describe(self) -> dict[str, Any]:
        return {}

    def validation_hint(self) -> str | None:
        """The ``--set`` item that would draw this data set's validation split like its test split (a data set that
        declares one, e.g. the CG sets' random validation colours), or None."""
        from ..data.base import validation_like_test

        return validation_like_test(getattr(self.data, "name", ""))

    def validation_is_like_test(self) -> bool:
        """Whether this diagnosis set the data set's declared setting that draws validation like test."""
        return False

    # -- shared: the analysis of a trained joint or cure model -----------------------------------------------
    def _means(self) -> dict[str, Tensor]:
        if not hasattr(self, "_input_means"):
            self._input_means = input_means(_split_batches(self.data.train, self.batch_size)(), self.modalities)
            self._input_stds = input_stds(
                _split_batches(self.data.train, self.batch_size)(), self.modalities, self._input_means
            )
        return self._input_means

    def _analyse(
        self,
        model: nn.Module,
        spec: RunSpec,
        at: Mapping[str, str] | None = None,
        fill: str = "mean",
    ) -> dict[str, Any]:
        """Utilization by ablation on validation and test; robustness (missing, noised) on validation."""
        means = self._means()
        if at is not None and fill == "mean":
            means = feature_means(model, _split_batches(self.data.train, self.batch_size)(), at, self.device)
        mods = list(spec.modalities)
        out: dict[str, Any] = {}
        for split in ("val", "test"):
            src = _split_batches(getattr(self.data, split), self.batch_size)
            u = utilization_by_ablation(model, src, mods, fill=fill, at=at, means=means, device=self.device)
            out[split] = u
        result = {
            "util": out["val"]["u"],
            "acc_without": out["val"]["acc_without"],
            "acc_only": out["val"]["acc_only"],
            "util_test": out["test"]["u"],
            "heads": out["val"]["heads"],
            "ablation": {"fill": fill, "at": dict(at) if at else "input"},
        }
        if spec.role == "joint":
            src = _split_batches(self.data.val, self.batch_size)
            noise = {
                m: {
                    str(lv): noise_accuracy(model, src, m, lv, self._input_stds[m], seed=spec.seed, device=self.device)
                    for lv in NOISE_LEVELS
                }
                for m in mods
            }
            missing = (
                out["val"]["acc_without"]
                if at is None and fill == "mean"
                else utilization_by_ablation(model, src, mods, fill="mean", means=self._means(), device=self.device)[
                    "acc_without"
                ]
            )
            result["robustness"] = {"missing": missing, "noise": noise}
        return result

    def _cached(self, spec: RunSpec, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.out / ANALYSIS / f"{self.folder(spec).name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        result = clean_json(compute())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
        return result


def _restore_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


# -- greedymm's networks ----------------------------------------------------------------------------------------
class GreedymmEngine(Engine):
    """greedymm's networks on a greedymm data set (or your MultiModalData), trained by ``greedymm.fit`` into run
    folders ``out/runs/<data>_<role>_<method>-<fusion>_<modalities>_s<seed>_<hash>``."""

    def __init__(
        self,
        dataset: str,
        out: Path,
        *,
        data: MultiModalData | None = None,
        fusion: str = "mmtm",
        epochs: int | None = None,
        sets: Sequence[str] = (),
        overrides: Mapping[str, Any] | None = None,
        device: str = "auto",
        reuse: Sequence[str | Path] = (),
    ) -> None:
        from ..run import load_data

        self.dataset, self.out, self.fusion = dataset, Path(out), fusion
        self.reuse = [Path(r) for r in reuse]
        for r in self.reuse:
            if not r.is_dir():
                raise FileNotFoundError(
                    f"reuse: {r} is not a folder; give sweep folders (greedymm sweep --out) or run folders"
                )
        self.sets, self.overrides, self.device_name = tuple(sets), dict(overrides or {}), device
        base = self.config(RunSpec("joint", "vanilla", fusion, (), 0), epochs=epochs)
        self.epochs = base.epochs
        self.batch_size = base.batch_size
        self.data = select_modalities(data, base.modalities) if data is not None else load_data(base)
        self.fingerprint = data_fingerprint(self.data) if data is not None else None
        if len(self.data.modalities) < 2:
            raise ValueError(
                f"diagnose needs two or more modalities; {self.data.name} has {list(self.data.modalities)}"
            )
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        )

    def config(self, spec: RunSpec, epochs: int | None = None) -> Any:
        from ..config import resolve_config
        from ..sweep import sets_for_method

        given: dict[str, Any] = {**self.overrides, "method": spec.method, "seed": spec.seed}
        given["fusion"] = spec.fusion or self.fusion
        if epochs or getattr(self, "epochs", None):
            given["epochs"] = epochs or self.epochs
        if spec.role == "alone":
            given["modalities"] = list(spec.modalities)
        given["device"] = self.device_name
        return resolve_config(self.dataset, sets=sets_for_method(self.sets, spec.method), **given)

    def folder(self, spec: RunSpec) -> Path:
        from ..data.base import dataset_label
        from ..sweep import run_hash

        cfg = self.config(spec)
        what = f"{spec.method}-{spec.fusion or self.fusion}"
        on = spec.modalities[0] if spec.role == "alone" else "all"
        tag = run_hash(cfg)
        if self.fingerprint:  # your MultiModalData: its name alone does not say what it holds
            tag = hashlib.sha1(f"{tag} {self.fingerprint}".encode()).hexdigest()[:8]
        name = f"{dataset_label(self.dataset)}_{spec.role}_{what}_{on}_s{spec.seed}_{tag}"
        return self.out / RUNS / _safe(name)

    def finished(self, spec: RunSpec) -> bool:
        from ..rundir import DONE, RunDir

        return RunDir(self.folder(spec)).state() == DONE

    def validation_hint(self) -> str | None:
        hint = super().validation_hint()
        given = {item.split("=", 1)[0] for item in self.sets}
        return None if hint is None or hint.split("=", 1)[0] in given else hint

    def validation_is_like_test(self) -> bool:
        declared = super().validation_hint()
        return declared is not None and any(_same_item(item, declared) for item in self.sets)

    def recorded_seconds(self, folder: Path) -> float | None:
        from ..rundir import RunDir

        recs = RunDir(folder).records()
        return float(recs[-1]["elapsed_s"]) if recs and "elapsed_s" in recs[-1] else None

    def reusable(self, spec: RunSpec) -> Path | None:
        """A finished run under a ``reuse`` folder (the folder itself or one level down, as ``greedymm sweep``
        lays them out) whose name ends in this spec's config hash and whose config.json resolves to the same
        config. Your own MultiModalData is never matched (a run folder's hash does not say which arrays it
        trained on)."""
        from ..config import TrainConfig
        from ..rundir import CONFIG, DONE, RunDir, read_json
        from ..sweep import run_hash

        if not self.reuse or self.fingerprint or self.finished(spec):
            return None
        tag = run_hash(self.config(spec))
        for root in self.reuse:
            for cand in sorted([root, *root.glob(f"*_{tag}")]):
                if not (cand.is_dir() and cand.name.endswith(f"_{tag}") and (cand / CONFIG).is_file()):
                    continue
                saved = read_json(cand / CONFIG, "leave this folder out of reuse").get("config")
                if RunDir(cand).state() != DONE or not isinstance(saved, dict):
                    continue
                if run_hash(TrainConfig.from_dict(saved)) == tag:
                    return cand
        return None

    def adopt(self, spec: RunSpec) -> Path | None:
        """The ``reusable`` run of ``spec``, copied into this diagnosis so that it is not trained again."""
        from ..rundir import LOCK

        cand = self.reusable(spec)
        if cand is None:
            return None
        target = self.folder(spec)
        tmp = target.with_name(target.name + ".adopting")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(cand, tmp, ignore=shutil.ignore_patterns(LOCK))
        tmp.replace(target)
        return cand

    def refuses(self, spec: RunSpec) -> str | None:
        from ..methods import create_method
        from ..run import model_from_config

        cfg = self.config(spec)
        try:
            method = create_method(cfg.method, seed=0, **cfg.hparams)
            method.check(model_from_config(cfg, self.data))
        except (ValueError, TypeError) as e:
            return str(e)
        return None

    def train(self, spec: RunSpec, echo: Echo) -> None:
        from ..rundir import BROKEN, RESUMABLE, RunDir
        from ..train import fit

        folder = self.folder(spec)
        rd = RunDir(folder)
        state = rd.state()
        if state == BROKEN:
            rd.clean()
        cfg = self.config(spec)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(rd, cfg.epochs, echo, stop), daemon=True)
        watcher.start()
        try:
            fit(cfg, folder, resume=state == RESUMABLE, progress=False, data=self.data)
        finally:
            stop.set()
            watcher.join()

    def record(self, spec: RunSpec) -> dict[str, Any]:
        from ..rundir import RunDir, best_record

        rd = RunDir(self.folder(spec))
        recs = rd.records()
        best, last = best_record(recs), recs[-1]
        cfg = self.config(spec)
        out = _base_record(spec, cfg.epochs, best, last, rd.path)
        out["seconds"] = float(last.get("elapsed_s", math.nan))
        out["settings"] = {"fusion": best.get("fusion"), **dict(best.get("hparams", {}))}
        if spec.method in rules.WARMUP_METHODS:
            out["warmup_epochs"] = cfg.warmup_epochs
        if spec.role != "alone":
            out["speed"] = _speed_of_records(recs, spec.modalities)
            # the network's own utilization at the selected epoch (MMTM: u(others|m_k), d_util; late fusion: u(m_j))
            out["model_util"] = {
                "family": best.get("family"),
                **{k: v for k, v in best["val"].items() if k.startswith("u_") or k in ("d_util", "util_spread")},
            }
            out.update(self._cached(spec, lambda: self._analyse(self._load(spec, "best"), spec)))
        return out

    def _load(self, spec: RunSpec, which: str) -> nn.Module:
        from ..checkpoint import load_checkpoint
        from ..run import model_from_config
        from ..rundir import RunDir

        cfg = self.config(spec)
        state = load_checkpoint(RunDir(self.folder(spec)).checkpoint(which))
        model = model_from_config(cfg, select_modalities(self.data, cfg.modalities))
        model.load_state_dict(state["model"])
        return model.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "greedymm",
            "dataset": self.dataset,
            "fusion": self.fusion,
            "sets": list(self.sets),
            "overrides": clean_json(self.overrides),
        }


def _watch(rd: Any, epochs: int, echo: Echo, stop: threading.Event, every: float = 2.0) -> None:
    """Print each epoch a training run finishes (its validation accuracy), by reading its log as it grows."""
    seen = len(rd.records()) if rd.results_file.is_file() else 0
    while True:
        last = stop.wait(every)  # one more read after the run ends: its last epoch
        try:
            recs = rd.records() if rd.results_file.is_file() else []
        except (OSError, ValueError):
            recs = []
        for r in recs[seen:]:
            echo(f"    epoch {r['epoch'] + 1}/{epochs}: val {r['val']['acc']:.3f}")
        seen = max(seen, len(recs))
        if last:
            return


def _base_record(spec: RunSpec, epochs: int, best: Mapping[str, Any], last: Mapping[str, Any], folder: Path) -> dict:
    return {
        "role": spec.role,
        "method": spec.method,
        "fusion": spec.fusion,
        "modalities": list(spec.modalities),
        "seed": spec.seed,
        "epochs": epochs,
        "selected_epoch": int(best["epoch"]),
        "last_epoch": int(last["epoch"]),
        "val_acc": float(best["val"]["acc"]),
        "test_acc": float(best["test"]["acc"]),
        "last_val_acc": float(last["val"]["acc"]),
        "last_test_acc": float(last["test"]["acc"]),
        "folder": str(folder),
    }


def _speed_of_records(recs: Sequence[Mapping[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """The speeds a greedymm run logged, per modality name: MMTM's s_k (largest: the branch that learns slowest
    relative to its fusion input), or late fusion's cumulative mu of each encoder (smallest: slowest)."""
    n = len(modalities)
    last = recs[-1].get("speed", {})
    s_names = [k for k in last if k.startswith("s_")]
    if len(s_names) == n:
        order = ("s_m1_given_m0", "s_m0_given_m1") if n == 2 else tuple(f"s_others_given_m{k}" for k in range(n))
        keys, pick, definition = order, max, "mmtm: s_k = log10(M_psi_k / M_theta_k)"
    else:
        keys = tuple(f"M_theta_m{k}" for k in range(n))
        pick, definition = min, "late fusion: M_theta_k, the summed mu of encoder k"
    values = {m: _restore_nan(last.get(k)) for m, k in zip(modalities, keys, strict=True)}
    defined = {m: v for m, v in values.items() if math.isfinite(v)}
    return {
        "definition": definition,
        "values": values,
        "d_speed": _restore_nan(last.get("d_speed")),
        "slowest": pick(defined, key=defined.get) if len(defined) == n else None,
        "curve": {
            m: [_restore_nan(r.get("speed", {}).get(k)) for r in recs] for m, k in zip(modalities, keys, strict=True)
        },
    }


# -- any nn.Module ------------------------------------------------------------------------------------------------
@dataclass
class ModelSettings:
    """How ``ModelEngine`` trains and measures a user's model."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    groups: Mapping[str, str | Sequence[str]] | None = None  # speed groups: name -> module name(s)
    encoders: Mapping[str, str] | None = None  # modality -> its group (default: the group named like it)
    fusion_group: str | None = None
    at: Mapping[str, str] | None = None  # modality -> encoder module whose output is ablated (default: the input)
    fill: str = "mean"
    name: str | None = None  # names the model in run folder hashes (default: its repr)
    loss: Callable[[Any, Tensor], Tensor] | None = None
    cure_sets: tuple[str, ...] = ()  # the cures' hyper-parameters, KEY=VALUE, each applied to the methods that have it


def cure_hparams(sets: Sequence[str], method: str) -> dict[str, Any]:
    """The hyper-parameters of ``method`` among ``sets`` (``KEY=VALUE``), converted and checked by the method's
    own specs; items naming another method's hyper-parameter are left to that method."""
    from ..config import parse_set

    cls = method_class(method)
    mine = [item for item in sets if item.split("=", 1)[0] in cls.hparams]
    hparams = parse_set(mine, cls.hparams)[1]
    cls.check_hparams(hparams)  # ranges, choices and the method's rules, with what a valid value is
    return hparams


def check_cure_sets(sets: Sequence[str]) -> None:
    """Every item is ``KEY=VALUE`` with KEY a hyper-parameter of some method, and a valid value for each method
    that has it; otherwise a ValueError that names the item."""
    from ..methods import list_methods

    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key = item.split("=", 1)[0]
        having = [m for m in list_methods() if key in method_class(m).hparams]
        if not having:
            raise ValueError(
                f"setting {item!r} is not a method's hyper-parameter: on your model the settings are the cures' "
                "hyper-parameters (`greedymm list` names them); train it with lr, weight_decay, batch_size, epochs"
            )
        for m in having:
            cure_hparams([item], m)


class ModelEngine(Engine):
    """Any ``nn.Module`` that takes a dict of modalities: ``make_model()`` builds a fresh one (called after
    ``torch.manual_seed(seed)``). A modality alone is the same model with every other modality at its training
    mean, in training and evaluation. Adam. Vanilla (alone and joint runs): the user's ``loss``, or cross-entropy on
    the logits, with the output's heads (if any) trained as probes: each head's cross-entropy reaches only the
    parameters the prediction's loss does not (the heads' own layers), so the heads read the encoders without
    shaping them. A cure: the method as greedymm defines it, run by ``user_cures.UserCure`` (uniform and mmpareto
    on a model whose output has one head per modality, agm on any; the others are refused with the reason)."""

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        data: MultiModalData,
        out: Path,
        settings: ModelSettings,
        device: str = "auto",
    ) -> None:
        if not callable(make_model) or isinstance(make_model, nn.Module):
            raise TypeError(
                "model must be a function that builds a fresh model (e.g. lambda: MyNet()), not a built module: "
                "every run starts from its own seed"
            )
        if inspect.signature(make_model).parameters and all(
            p.default is inspect.Parameter.empty for p in inspect.signature(make_model).parameters.values()
        ):
            raise TypeError("model must build a model without arguments: model=lambda: MyNet(...)")
        if len(data.modalities) < 2:
            raise ValueError(f"diagnose needs two or more modalities; {data.name} has {list(data.modalities)}")
        self.make_model, self.data, self.out, self.s = make_model, data, Path(out), settings
        self.fingerprint = data_fingerprint(data)
        self.epochs, self.batch_size = settings.epochs, settings.batch_size
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        )
        probe = make_model()
        self.model_name = settings.name or repr(probe)
        self.encoders: dict[str, str] = {}
        if settings.groups is not None:
            encoders = dict(settings.encoders or {m: m for m in data.modalities})
            GroupSpeed(probe, settings.groups, encoders, settings.fusion_group)  # names checked now, not after training
            self.encoders = encoders
        # what the output carries (heads), which layer gives the logits, what the at modules output: what the
        # cures can use
        x, _ = data.train.batch(torch.arange(min(2, len(data.train))))
        self.probe = probe_model(probe, x, settings.at)
        self.n_heads = self.probe.n_heads
        if settings.at is not None:
            from ..metrics.ablation import _module

            for m in data.modalities:
                if m not in settings.at:
                    raise ValueError(f"at names encoder modules for {sorted(settings.at)}; also name one for {m!r}")
                _module(probe, settings.at[m])

    def _hash(self, spec: RunSpec) -> str:
        ident = {
            "model": self.model_name,
            "data": self.fingerprint,
            "role": spec.role,
            "method": spec.method,
            "modalities": spec.modalities,
            "seed": spec.seed,
            "lr": self.s.lr,
            "weight_decay": self.s.weight_decay,
            "batch_size": self.s.batch_size,
            "epochs": self.s.epochs,
        }
        if spec.role == "cure":
            ident["hparams"] = self._settings(spec.method)
        elif self.n_heads and self.s.loss is None:
            ident["heads"] = "probes"  # vanilla trains the heads as probes (earlier: their loss reached the model)
        return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def folder(self, spec: RunSpec) -> Path:
        on = spec.modalities[0] if spec.role == "alone" else "all"
        return self.out / RUNS / _safe(f"{self.data.name}_model_{spec.role}_{on}_s{spec.seed}_{self._hash(spec)}")

    def finished(self, spec: RunSpec) -> bool:
        return (self.folder(spec) / "run.json").is_file() and (self.folder(spec) / BEST).is_file()

    def recorded_seconds(self, folder: Path) -> float | None:
        recs = json.loads((folder / "run.json").read_text())["epochs"]
        return float(recs[-1]["elapsed_s"]) if recs else None

    def cure_fusion(self, fusion: str) -> str | None:
        return None  # a cure trains the user's model as built: its own fusion

    def _encoder_modules(self) -> dict[str, list[str]]:
        groups = self.s.groups or {}
        out = {}
        for m, g in self.encoders.items():
            names = groups[g]
            out[m] = [names] if isinstance(names, str) else list(names)
        return out

    def _net(self, model: nn.Module) -> UserNet:
        return UserNet(
            model,
            self.modalities,
            encoders=self._encoder_modules(),
            n_heads=self.n_heads,
            output_layer=self.probe.output_layer,
            features=self.s.at,
        )

    def _hparams(self, method: str) -> dict[str, Any]:
        """A cure's settings beside its defaults: gblending's copies train with this run's optimizer and lr, as the
        method asks (its est_optimizer / est_lr); then the ``cure_sets`` that name one of its hyper-parameters."""
        base = {"est_optimizer": "adam", "est_lr": self.s.lr} if method == "gblending" else {}
        return {**base, **cure_hparams(self.s.cure_sets, method)}

    def _settings(self, method: str) -> dict[str, Any]:
        return {**method_class(method).defaults(), **self._hparams(method)}

    def refuses(self, spec: RunSpec) -> str | None:
        if spec.role == "reference":
            return "a model greedymm did not build has one fusion, its own: its vanilla run is the joint run"
        if spec.role != "cure":
            return None
        why = refusal(spec.method, modalities=self.modalities, probe=self.probe, encoders_named=bool(self.encoders))
        if why:
            return why
        try:  # the method's own check, on the model as the method will see it
            create_method(spec.method, seed=0, **self._hparams(spec.method)).check(self._net(self.make_model()))
        except ValueError as e:
            return str(e) if spec.method in str(e) else f"{spec.method}: {e}"
        return None

    def _fill(self, spec: RunSpec) -> dict[str, Tensor]:
        if spec.role != "alone":
            return {}
        means = self._means()
        return {m: means[m] for m in self.modalities if m not in spec.modalities}

    def _loss(self, out: Any, y: Tensor) -> Tensor:
        return self.s.loss(out, y) if self.s.loss is not None else F.cross_entropy(logits_of(out), y)

    def _vanilla_step(self, model: nn.Module, x: dict[str, Tensor], y: Tensor, opt: Any, label: str) -> None:
        """Vanilla's gradients: the loss's, and, with heads and no user loss, each head's cross-entropy on the
        parameters the loss does not reach (the heads' own layers: probes that do not shape the model)."""
        out = model(x)
        loss = self._loss(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{label}: loss is {float(loss)}; lower lr")
        heads = heads_of(out) if self.s.loss is None else []
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=bool(heads))
        if heads:
            own = [p for p in model.parameters() if p.requires_grad and p.grad is None]
            probe = sum(F.cross_entropy(h, y) for h in heads)
            if own and probe.requires_grad:
                grads = torch.autograd.grad(probe, own, allow_unused=True)
                for p, g in zip(own, grads, strict=True):
                    p.grad = g

    def train(self, spec: RunSpec, echo: Echo) -> None:
        torch.manual_seed(spec.seed)
        model = self.make_model().to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.s.lr, weight_decay=self.s.weight_decay)
        speed = None
        if self.s.groups is not None and spec.role != "alone":
            speed = GroupSpeed(model, self.s.groups, self.encoders, self.s.fusion_group)
        fill = {m: v.to(self.device) for m, v in self._fill(spec).items()}
        cure = None
        if spec.role == "cure":
            cure = UserCure(self._net(model), spec.method, spec.seed, self._hparams(spec.method))
        train, val = self.data.train, self.data.val
        epochs, best, best_state = [], -1.0, None
        t0 = time.time()
        for epoch in range(self.s.epochs):
            model.train()
            if cure is not None:
                cure.epoch_start(train, val, self.s.batch_size)
            for idx in epoch_order(len(train), self.s.batch_size, spec.seed, epoch):
                x, y = train.batch(idx, train=True)
                x = {m: v.to(self.device) for m, v in x.items()}
                x.update({m: v.expand_as(x[m]).clone() for m, v in fill.items()})
                y = y.to(self.device)
                if cure is None:
                    self._vanilla_step(model, x, y, opt, f"{spec.label()} at epoch {epoch}")
                else:
                    opt.zero_grad(set_to_none=True)
                    loss = cure.step(x, y)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"{spec.label()}: loss is {loss} at epoch {epoch}; lower lr")
                if speed is not None:
                    speed.update()
                opt.step()
            method_log = cure.epoch_end(train, val, self.s.batch_size) if cure is not None else None
            val = accuracies(
                model, _split_batches(self.data.val, self.batch_size, self._fill(spec))(), device=self.device
            )
            test = accuracies(
                model, _split_batches(self.data.test, self.batch_size, self._fill(spec))(), device=self.device
            )
            rec = {"epoch": epoch, "val": {"acc": val[0]}, "test": {"acc": test[0]}, "elapsed_s": time.time() - t0}
            if speed is not None:
                rec["speed"] = speed.speeds()
            if method_log is not None:
                rec["method_log"] = method_log
            epochs.append(rec)
            echo(f"    epoch {epoch + 1}/{self.s.epochs}: val {val[0]:.3f}")
            if val[0] > best:
                best, best_state = val[0], copy.deepcopy(model.state_dict())
        folder = self.folder(spec)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / BEST, best_state)
        info = {"spec": spec.__dict__, "model": self.model_name, "epochs": epochs}
        atomic_write_text(folder / "run.json", json.dumps(clean_json(info), indent=1))  # last: marks it finished

    def _load(self, spec: RunSpec) -> nn.Module:
        torch.manual_seed(spec.seed)
        model = self.make_model()
        model.load_state_dict(torch.load(self.folder(spec) / BEST, weights_only=True))
        return model.to(self.device).eval()

    def record(self, spec: RunSpec) -> dict[str, Any]:
        info = json.loads((self.folder(spec) / "run.json").read_text())
        recs = info["epochs"]
        best = max(recs, key=lambda r: r["val"]["acc"])  # the first on ties
        best = next(r for r in recs if r["val"]["acc"] == best["val"]["acc"])
        out = _base_record(spec, self.s.epochs, best, recs[-1], self.folder(spec))
        out["seconds"] = float(recs[-1]["elapsed_s"])
        out["settings"] = self._settings(spec.method) if spec.role == "cure" else {}
        if spec.role != "alone":
            out.update(self._cached(spec, lambda: self._analyse(self._load(spec), spec, self.s.at, self.s.fill)))
            if "speed" in recs[-1]:
                out["speed"] = _speed_of_groups(recs, self.encoders, self.s.fusion_group)
        return out

    def describe(self) -> dict[str, Any]:
        s = self.s
        return {
            "engine": "model",
            "model": self.model_name[:2000],
            "lr": s.lr,
            "batch_size": s.batch_size,
            "epochs": s.epochs,
            "groups": clean_json(s.groups),
            "fusion_group": s.fusion_group,
            "at": clean_json(s.at),
            "fill": s.fill,
        }


def _speed_of_groups(recs: Sequence[Mapping[str, Any]], encoders: Mapping[str, str], fusion: str | None) -> dict:
    last = recs[-1]["speed"]
    values = {m: _restore_nan(last["M"].get(g)) for m, g in encoders.items()}
    defined = {m: v for m, v in values.items() if math.isfinite(v) and v > 0}
    return {
        "definition": "generic: M_k, the summed mu of the encoder group of modality k"
        + (f"; s_k = log10(M_{fusion} / M_k)" if fusion else ""),
        "values": values,
        "s": {m: _restore_nan(v) for m, v in last.get("s", {}).items()},
        "d_speed": _restore_nan(last.get("d_speed")),
        "slowest": min(defined, key=defined.get) if len(defined) == len(values) else None,
        "curve": {m: [_restore_nan(r["speed"]["M"].get(g)) for r in recs] for m, g in encoders.items()},
    }


# -- the protocol ---------------------------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Budget:
    """The time budget (minutes, or None) and the estimate of a run's time: the mean of the runs trained here so
    far; before the first, the mean of the times that the finished runs (reused, or trained by an earlier call)
    recorded; before any, none, and the first run starts whatever the budget."""

    def __init__(self, minutes: float | None) -> None:
        if minutes is not None and not minutes > 0:
            raise ValueError(f"--max-minutes must be > 0, got {minutes}")
        self.limit = None if minutes is None else minutes * 60.0
        self.start = time.time()
        self.trained: list[float] = []
        self.recorded: list[float] = []

    def elapsed(self) -> float:
        return time.time() - self.start

    def per_run(self) -> float | None:
        times = self.trained or self.recorded
        return sum(times) / len(times) if times else None

    def allows(self) -> bool:
        if self.limit is None:
            return True
        est = self.per_run() or 0.0
        return self.elapsed() + est <= self.limit

    def left(self, runs: int) -> str:
        per = self.per_run()
        return "unknown" if per is None else _clock(per * runs)


# the warnings whose advice is a validation split drawn like the test data: a data set that has one names it
HINTED = ("validation-like-training", "test-differs", "saturated")


def _same_item(a: str, b: str) -> bool:
    """Two ``--set`` items with one key and one value (``x=true`` and ``x=True`` alike)."""
    (ka, _, va), (kb, _, vb) = a.partition("="), b.partition("=")
    return ka == kb and va.strip().lower() == vb.strip().lower()


def _usable_time(t: float | None) -> bool:
    return t is not None and math.isfinite(t) and t > 0


def execute(engine: Engine, specs: Sequence[RunSpec], budget: Budget, echo: Echo) -> tuple[list[RunSpec], list[str]]:
    """Train what is not finished, in order, while the budget allows; returns (finished specs, skipped labels)."""
    done, skipped = [], []
    for spec in specs:
        source = engine.adopt(spec)
        if source is not None:
            echo(f"diagnose: {spec.label()}: reused the finished run {source}")
    todo = [s for s in specs if not engine.finished(s)]
    recorded = (engine.recorded_seconds(engine.folder(s)) for s in specs if s not in todo)
    budget.recorded += [t for t in recorded if _usable_time(t)]
    echo(f"diagnose: {len(specs)} runs, {len(specs) - len(todo)} finished earlier, {len(todo)} to train")
    k = 0
    for spec in specs:
        if engine.finished(spec):
            done.append(spec)
            continue
        if not budget.allows():
            skipped.append(spec.label())
            continue
        k += 1
        echo(
            f"[{k}/{len(todo)}] {spec.label()}: {engine.epochs} epochs; {_clock(budget.elapsed())} elapsed, "
            f"about {budget.left(len(todo) - k + 1)} left"
        )
        t0 = time.time()
        engine.train(spec, echo)
        budget.trained.append(time.time() - t0)
        echo(f"[{k}/{len(todo)}] {spec.label()}: done in {time.time() - t0:.0f} s; {engine.folder(spec)}")
        done.append(spec)
    if skipped:
        echo(f"diagnose: the budget left out {len(skipped)} run{'s' * (len(skipped) != 1)}: {', '.join(skipped)}")
    return done, skipped


def parse_cure(spec: str, default_fusion: str) -> tuple[str, str]:
    from ..sweep import split_method

    name, fusion = split_method(spec)
    return name, fusion or default_fusion


def _check_request(seeds: Sequence[int], cures: Sequence[str] | None, joint_fusion: str | None) -> None:
    """At least one seed, and every cure a known method on a known fusion: refused before any run trains."""
    if not seeds:
        raise ValueError("diagnose needs at least one seed (--seeds 0 1 2)")
    for c in cures or ():
        parse_cure(c, joint_fusion or "mmtm")


def first_runs(engine: Engine, seeds: Sequence[int], joint_fusion: str | None) -> list[RunSpec]:
    """The runs before the verdict, seed by seed: each modality alone, then the joint model (vanilla)."""
    mods = engine.modalities
    return [
        x
        for s in seeds
        for x in [*(RunSpec("alone", "vanilla", joint_fusion, (m,), s) for m in mods),
                  RunSpec("joint", "vanilla", joint_fusion, mods, s)]
    ]  # fmt: skip


def cure_runs(
    engine: Engine, seeds: Sequence[int], cures: Sequence[str], joint_fusion: str | None
) -> tuple[list[RunSpec], list[tuple[str, str | None]], list[dict[str, str]]]:
    """The runs of the cures, seed by seed (vanilla on each other fusion a cure trains on, as its reference, then
    the cures); returns (runs, the cures that apply as (method, fusion), the refused ones with the reason)."""
    chosen: list[tuple[str, str | None]] = []
    refused: list[dict[str, str]] = []
    for c in cures:
        name, fusion = parse_cure(c, joint_fusion or "mmtm")
        on = engine.cure_fusion(fusion)
        if (name, on) in chosen:  # on a user's model "uniform@concat" and "uniform@sum" are one cure
            continue
        why = engine.refuses(RunSpec("cure", name, on, engine.modalities, seeds[0]))
        if why:
            refused.append({"cure": c, "reason": why})
        else:
            chosen.append((name, on))
    refs = sorted({f for _, f in chosen if f != joint_fusion and f is not None})
    plan = [
        x
        for s in seeds
        for x in [*(RunSpec("reference", "vanilla", f, engine.modalities, s) for f in refs),
                  *(RunSpec("cure", n, f, engine.modalities, s) for n, f in chosen)]
    ]  # fmt: skip
    return plan, chosen, refused


def plan_protocol(
    engine: Engine,
    *,
    seeds: Sequence[int],
    cures: Sequence[str] | None,
    max_minutes: float | None,
    joint_fusion: str | None,
    cure_anyway: bool = False,
) -> dict[str, Any]:
    """What ``run_protocol`` would do, without training, copying or writing anything: every run with its state
    (``finished`` here, ``reuse`` from a ``reuse=`` folder, or ``train``), the cures' runs (trained only when a
    modality turns out under-used, or with ``cure_anyway``), the cures refused, and the time to expect from the
    training times the finished and reusable runs recorded. ``lines``: the same as text."""
    _check_request(seeds, cures, joint_fusion)
    first = first_runs(engine, seeds, joint_fusion)
    later, chosen, refused = cure_runs(engine, seeds, cures, joint_fusion) if cures else ([], [], [])
    times: list[float] = []

    def state(spec: RunSpec) -> dict[str, Any]:
        if engine.finished(spec):
            where, what = engine.folder(spec), "finished"
        elif (where := engine.reusable(spec)) is not None:
            what = "reuse"
        else:
            return {"run": spec.label(), "state": "train", "folder": str(engine.folder(spec))}
        t = engine.recorded_seconds(where)
        if _usable_time(t):
            times.append(t)
        return {"run": spec.label(), "state": what, "folder": str(where)}

    runs, cure_states = [state(x) for x in first], [state(x) for x in later]
    per = sum(times) / len(times) if times else None
    n1 = sum(r["state"] == "train" for r in runs)
    n2 = sum(r["state"] == "train" for r in cure_states)

    def clock(n: int) -> str:
        return "time unknown (no finished run recorded one)" if per is None else f"about {_clock(per * n)}"

    width = max((len(r["run"]) for r in runs + cure_states), default=0)

    def row(r: dict[str, Any]) -> str:  # the run, its state, and the folder it would be taken from
        return f"  {r['run']:<{width}}  {r['state']:<8}  {r['folder'] if r['state'] != 'train' else ''}".rstrip()

    epochs = f"{engine.epochs} epoch{'s' * (engine.epochs != 1)}"
    lines = [f"diagnose plan ({engine.data.name}; {epochs} a run; seeds "
             f"{' '.join(map(str, seeds))}): nothing is trained, copied or written"]  # fmt: skip
    lines += [row(r) for r in runs]
    lines.append(f"first: {n1} of {len(runs)} runs to train, {clock(n1)}")
    if later:
        when = "always (--cure-anyway)" if cure_anyway else "only if a modality turns out under-used"
        names = ", ".join(f"{n}@{f}" if f else n for n, f in chosen)
        refs = (
            " and vanilla on each other fusion as their reference" if any(x.role == "reference" for x in later) else ""
        )
        lines.append(f"then, {when}, the cures ({names}){refs}:")
        lines += [row(r) for r in cure_states]
        lines.append(f"then: {n2} of {len(cure_states)} runs to train, {clock(n2)}")
    elif not cures:
        lines.append("no cures (--cures none)")
    lines += [f"refused: {r['cure']}: {r['reason']}" for r in refused]
    if per is not None:
        lines.append(f"time per run: {_clock(per)}, the mean of the {len(times)} finished or reusable runs' records")
    if max_minutes is not None and per is not None:
        fit = int(max_minutes * 60 // per)
        runs_word = "run" if fit == 1 else "runs"
        lines.append(f"--max-minutes {max_minutes:g}: about {fit} {runs_word} fit; the rest would be left out")
    return {
        "runs": runs,
        "cure_runs": cure_states,
        "cures_refused": refused,
        "seconds_per_run": per,
        "to_train": [n1, n2],
        "lines": lines,
    }


def run_protocol(
    engine: Engine,
    *,
    seeds: Sequence[int],
    cures: Sequence[str] | None,
    max_minutes: float | None,
    echo: Echo,
    joint_fusion: str | None,
    cure_anyway: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the protocol; returns (the diagnosis, the run records). ``cure_anyway``: try the cures even when no
    modality is under-used (the verdict stays ``not-greedy``; a cure that beats vanilla is named in a warning)."""
    _check_request(seeds, cures, joint_fusion)
    budget = Budget(max_minutes)
    mods = engine.modalities
    first = first_runs(engine, seeds, joint_fusion)
    done, skipped = execute(engine, first, budget, echo)
    records = [engine.record(s) for s in done]
    diag = rules.diagnose_records(records, mods, engine.data.num_classes, skipped=skipped)
    refused: list[dict[str, str]] = []
    if (diag["balancing_warranted"] or cure_anyway) and cures:
        plan, chosen, refused = cure_runs(engine, seeds, cures, joint_fusion)
        for r in refused:
            echo(f"diagnose: {r['cure']} does not apply here: {r['reason']}")
        if plan:
            why = f"{', '.join(diag['under_used'])} under-used" if diag["under_used"] else "no modality under-used"
            echo(f"diagnose: {why}; trying {len(chosen)} cures{'' if diag['under_used'] else ' anyway'}")
            done2, skipped2 = execute(engine, plan, budget, echo)
            skipped += skipped2
            records += [engine.record(s) for s in done2]
            diag = rules.diagnose_records(records, mods, engine.data.num_classes, skipped=skipped)
    diag["cures_refused"] = refused
    if diag["balancing_warranted"] and not cures:
        diag["warnings"].append({"kind": "no-cures", "text": "no cures were asked for (--cures none)"})
    if refused and diag["balancing_warranted"] and not diag["cures"]:
        diag["warnings"].append(
            {
                "kind": "no-cures",
                "text": "no cure applies to this model: " + "; ".join(f"{r['cure']}: {r['reason']}" for r in refused),
            }
        )
    if engine.validation_is_like_test():  # the one warning that would not be true here
        diag["warnings"] = [w for w in diag["warnings"] if w["kind"] != "validation-like-training"]
    hint = engine.validation_hint()
    for w in diag["warnings"]:
        if hint and w["kind"] in HINTED:
            w["text"] += f" (this data set: --set {hint} draws its validation split as its test split is drawn)"
    diag["elapsed_s"] = budget.elapsed()
    return diag, records
