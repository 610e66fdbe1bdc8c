"""Checkpoints and JSON files, written atomically (see ``atomic``)."""

from __future__ import annotations

import io
import json
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a foreign or damaged file: say which and why
        raise RuntimeError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {e}); it is damaged or not a greedymm checkpoint. "
            "Restore it, or delete the run folder and train again."
        ) from e


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
