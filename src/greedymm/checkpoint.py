"""Checkpoints and JSON files, written atomically (see ``atomic``); checkpoints loaded without running code and
checked to hold what a greedymm checkpoint always holds."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_bytes, atomic_write_text


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        kept = f"the previous {Path(path).name} is intact" if Path(path).exists() else "no earlier checkpoint exists"
        raise RuntimeError(
            f"could not write checkpoint {path} ({e.strerror or e}); {kept}. Free space or fix the folder, then resume."
        ) from e


def _allowed():
    """Checkpoints written before 0.2 stored torch's version as a ``TorchVersion`` (a str subclass): allow it."""
    from contextlib import nullcontext

    from torch.torch_version import TorchVersion

    safe = getattr(torch.serialization, "safe_globals", None)
    return safe([TorchVersion]) if safe else nullcontext()


def load_checkpoint(path: Path, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint without running code: ``weights_only`` unpickling accepts tensors, numbers, strings and
    containers (all a greedymm checkpoint holds) and refuses anything else, so a crafted file cannot execute.
    ``require``: the keys it must hold (e.g. ("config", "model", "epoch") to evaluate it); a file without them, or
    with a model, config, epoch or step of the wrong type, is refused naming it and what is wrong."""
    from .rundir import RunFolderError, file_problem

    if problem := file_problem(Path(path)):
        raise RunFolderError(problem)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with _allowed():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:  # something besides tensors and plain data is inside: a crafted or foreign file
            raise RuntimeError(
                f"refusing checkpoint {path}: it asks for {found.group(1)}, which a greedymm checkpoint never holds; "
                "it was not written by greedymm, or was altered. Nothing in it ran. Restore the file or train again."
            ) from None
        raise RuntimeError(
            f"cannot read checkpoint {path} (not a checkpoint pickle: {str(e).splitlines()[-1][:200]}); it is damaged "
            "or not a greedymm checkpoint. Restore it, or delete the run folder and train again."
        ) from None
    except Exception as e:  # a foreign or damaged file: say which and why
        raise RuntimeError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {e}); it is damaged or not a greedymm checkpoint. "
            "Restore it, or delete the run folder and train again."
        ) from e
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path} is not a greedymm checkpoint (no model state); restore it or train again")
    missing = [k for k in require if k not in state]
    wrong = [k for k in ("model", "config") if k in state and not isinstance(state[k], dict)]
    wrong += [k for k in ("epoch", "step") if k in state and not isinstance(state[k], int)]
    if missing or wrong:
        what = ", ".join([*(f"no {k!r}" for k in missing), *(f"{k!r} of the wrong type" for k in wrong)])
        raise RunFolderError(
            f"{path} is not a complete greedymm checkpoint ({what}): it is damaged or was written by something "
            "else. Restore it from a copy, or train again in a new folder"
        )
    return state


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
