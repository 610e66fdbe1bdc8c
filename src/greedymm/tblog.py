"""TensorBoard logging (``greedymm train --log tensorboard``; needs ``pip install 'greedymm[tensorboard]'``).

Every number of the step log (per step, under ``step/``) and of the epoch records (per epoch, under ``train/``,
``val/``, ``test/``, ``speed/``, ``method/``, plus ``lr`` and ``epoch``) goes to the run folder's TensorBoard
folder (``RunDir.tensorboard``), keyed by the global step (an epoch's numbers at its last step), so epoch and
step curves share one axis. On resume, events from after the checkpoint are purged, as the step log and the
records are truncated: the curves continue exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .rundir import RESULTS, STEPS

LOGS = ("tensorboard", "console")  # destinations besides the always-written step log and epoch records; console:
# one line per epoch on stdout (`greedymm train` always prints it)


def check_logs(log: Sequence[str]) -> tuple[str, ...]:
    bad = [x for x in log if x not in LOGS]
    if bad:
        raise ValueError(f"unknown --log {bad[0]!r}; choose from {LOGS} ({STEPS} and {RESULTS} are always written)")
    if "tensorboard" in log:
        _writer_class()  # refuse before any work when the package is missing
    return tuple(dict.fromkeys(log))


def _writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's writer needs the tensorboard package
        raise RuntimeError(
            "--log tensorboard needs the tensorboard package: pip install 'greedymm[tensorboard]'"
        ) from e
    return SummaryWriter


class TensorBoardLog:
    """Writes the run's per-step and per-epoch numbers as TensorBoard scalars."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        """``folder``: where the event files go; ``purge_step``: on resume, the first step to log again."""
        self.dir = Path(folder)
        self.writer = _writer_class()(str(self.dir), purge_step=purge_step)

    def step(self, step: int, names: Sequence[str], values: Sequence[float], mode: str) -> None:
        """One training step: ``names`` and ``values`` are the step log's numeric columns (loss, speeds, d_speed)."""
        for name, v in zip(names, values, strict=True):
            if math.isfinite(v):
                self.writer.add_scalar(f"step/{name}", v, step)
        self.writer.add_scalar("step/rebalance", float(str(mode) != "regular"), step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's record, at the epoch's last step (so a resume from the epoch's end keeps it)."""
        step = record["step"] - 1
        scalars = {"epoch": record["epoch"], "lr": record["lr"]}
        for part in ("train", "val", "test", "speed"):
            scalars.update({f"{part}/{k}": v for k, v in record[part].items()})
        for k, v in record.get("method_log", {}).items():
            items = enumerate(v) if isinstance(v, (list, tuple)) else [(None, v)]
            scalars.update({f"method/{k}" + ("" if i is None else f"/{i}"): x for i, x in items})
        for name, v in scalars.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(name, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
