"""Mixed precision and channels-last memory format, for training and evaluation.

``--precision bf16|fp16`` runs forwards and losses under ``torch.autocast``; parameters, gradients and the
optimizer stay float32, and everything greedymm measures (speed sums, gate and squeeze means, utilization counts)
stays float32/float64. fp16 scales the loss (a ``GradScaler``) and unscales the gradients before the method's
gradient changes and the speed, so both see true gradients. fp32, the default, runs exactly as before.
``--channels-last`` stores 4-D weights and inputs channels-last (5-D ones, I3D's, channels-last-3d).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from .choices import PRECISIONS

__all__ = ["PRECISIONS", "autocast", "grad_scaler", "inputs_channels_last", "to_channels_last"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (small gradients underflow in fp16 otherwise); None for fp32 and bf16."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _format(t: Tensor) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


@torch.no_grad()
def to_channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter channels-last, every 5-D one channels-last-3d; the rest unchanged."""
    for p in model.parameters():
        fmt = _format(p)
        if fmt is not None:
            p.data = p.data.contiguous(memory_format=fmt)
    return model


def inputs_channels_last(x: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.contiguous(memory_format=_format(v)) if _format(v) else v for k, v in x.items()}
