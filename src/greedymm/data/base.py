"""The shared data interface: a data set is one or more modalities, three splits, and where it came from.

An item is (dict[modality, Tensor], label). Splits hand out whole batches by index, so the training loop can
fix the data order from (seed, epoch) alone and a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor


class Split(Protocol):
    def __len__(self) -> int: ...

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        """Inputs keyed by modality, each (B, C, ...), and labels (B,) for the items ``idx``."""
        ...


@dataclass(frozen=True)
class MultiModalData:
    name: str
    modalities: tuple[str, ...]  # (m0, m1, ...): branch k reads modalities[k]
    in_channels: tuple[int, ...]  # channels of each modality, in the same order
    num_classes: int
    arch: str | tuple[str, ...]  # the backbone of each branch (models.ARCHITECTURES), or one per modality
    train: Split
    val: Split
    test: Split
    source: dict[str, Any] = field(default_factory=dict)  # {"real_data": bool, "source": str, "note": str}

    @property
    def is_standin(self) -> bool:
        return not self.source.get("real_data", False)


Loader = Callable[..., MultiModalData]
_DATASETS: dict[str, tuple[Loader, str]] = {}
_VALIDATION_LIKE_TEST: dict[str, str] = {}


def register_dataset(
    name: str, description: str, *, validation_like_test: str | None = None
) -> Callable[[Loader], Loader]:
    """Register a loader under ``name``. ``validation_like_test``: the ``--set`` item that draws this data set's
    validation split as its test split is drawn (where the two differ by design), for diagnose to point at."""

    def wrap(fn: Loader) -> Loader:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        _DATASETS[name] = (fn, description)
        if validation_like_test:
            _VALIDATION_LIKE_TEST[name] = validation_like_test
        return fn

    return wrap


def validation_like_test(name: str) -> str | None:
    """The ``--set`` item that draws the validation split of data set ``name`` like its test split, or None."""
    return _VALIDATION_LIKE_TEST.get(dataset_base(name))


def list_datasets(pattern: str = "*") -> dict[str, str]:
    return {n: d for n, (_, d) in sorted(_DATASETS.items()) if fnmatch(n, pattern)}


def dataset_base(name: str) -> str:
    """The registered loader of a data set name: ``"npz:PATH"`` -> ``"npz"`` (the part after the colon is the
    loader's ``path``); any other name is itself."""
    base, sep, _ = name.partition(":")
    return base if sep and base in _DATASETS else name


def dataset_label(name: str) -> str:
    """A data set name fit for a folder name: ``"npz:/data/my set.npz"`` -> ``"npz-my_set"``."""
    base, sep, arg = name.partition(":")
    if not sep:
        return name
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(arg.rstrip("/")).stem) or "data"
    return f"{base}-{stem}"


def dataset_options(name: str) -> tuple[str, ...] | None:
    """The options (``--set data.<option>=...``) the loader of data set ``name`` takes: its named keyword
    parameters besides the split settings every loader takes from the config (data_dir, val_fraction, data_seed).
    A loader lists each option it takes by name (a trailing ``**unknown`` only collects names to refuse them).
    None for a name no loader is registered under."""
    import inspect

    base = dataset_base(name)
    if base not in _DATASETS:
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(_DATASETS[base][0]).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds and p.name not in ("data_dir", "val_fraction", "data_seed"))


def load_dataset(name: str, **kwargs: Any) -> MultiModalData:
    if (base := dataset_base(name)) != name:  # "npz:PATH": a loader that reads the path after the colon
        return _DATASETS[base][0](path=name.partition(":")[2], **kwargs)
    if name not in _DATASETS:
        close = difflib.get_close_matches(name, list(_DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(_DATASETS)}.{hint}")
    return _DATASETS[name][0](**kwargs)


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (kept, held_out): ``fraction`` of every class held out, deterministic for ``seed``."""
    if not 0 <= fraction < 1:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = True) -> list[Tensor]:
    """The batches of one training epoch: a permutation fixed by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    batches = list(perm.split(batch_size))
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()  # BatchNorm needs more than one item; a ragged last batch also skews the speeds
    return batches


def eval_order(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[Tensor]:
    """Evaluation batches in order; with several ranks, rank r takes the r-th contiguous shard."""
    return list(torch.arange(n).tensor_split(world)[rank].split(batch_size))


@dataclass(frozen=True)
class _Subset:
    """A split that hands out only some modalities (in a given order) of another split."""

    split: Split
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        x, y = self.split.batch(idx, train=train)
        return {m: x[m] for m in self.names}, y

    def __getattr__(self, name: str) -> Any:  # labels and other extras of the wrapped split
        if name in ("split", "names") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.split, name)


def select_modalities(data: MultiModalData, names: Sequence[str] | None) -> MultiModalData:
    """The data set restricted to ``names`` (in that order: branch k reads names[k]); ``None`` keeps them all."""
    if names is None or tuple(names) == data.modalities:
        return data
    unknown = [m for m in names if m not in data.modalities]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"--modalities {','.join(names)}: data set {data.name} has modalities {','.join(data.modalities)}; "
            "give distinct names from that list, e.g. --modalities " + data.modalities[-1] + "; a modality the loader "
            "computes on request must be asked of it first (NVGesture's flow: --set data.modalities=rgb,depth,flow)"
        )
    names = tuple(names)
    channels = tuple(data.in_channels[data.modalities.index(m)] for m in names)
    arch = data.arch if isinstance(data.arch, str) else tuple(data.arch[data.modalities.index(m)] for m in names)
    splits = {s: _Subset(getattr(data, s), names) for s in ("train", "val", "test")}
    return dataclasses.replace(data, modalities=names, in_channels=channels, arch=arch, **splits)


def check_labels(data: MultiModalData) -> list[str]:
    """Refuse labels a model cannot learn (outside 0..num_classes-1, one class only, an empty split); return
    warnings for legal but suspicious data (a class absent from a split). Splits without ``labels`` are skipped."""
    warnings = []
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if len(split) == 0:
            raise ValueError(f"{data.name}: the {name} split is empty; check the data files and val_fraction")
        labels = getattr(split, "labels", None)
        if labels is None:
            continue
        labels = torch.as_tensor(labels if not isinstance(labels, tuple) else list(labels))
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= data.num_classes:
            raise ValueError(
                f"{data.name}: {name} labels run from {lo} to {hi}, outside the {data.num_classes} classes 0.."
                f"{data.num_classes - 1}; fix the label files (labels must be 0-based class indices)"
            )
        present = torch.unique(labels).numel()
        if name == "train" and present < 2:
            raise ValueError(f"{data.name}: the training split holds a single class; there is nothing to learn")
        if present < data.num_classes:
            warnings.append(f"{data.name}: the {name} split holds {present} of the {data.num_classes} classes")
    return warnings
