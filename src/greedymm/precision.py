"""Mixed precision and channels-last memory format, for training and evaluation.

``--precision bf16|fp16`` runs forwards and losses under ``torch.autocast``; parameters, gradients and the
optimizer stay float32, and everything greedymm measures (speed sums, gate and squeeze means, utilization counts)
stays float32/float64. fp16 scales the loss (a ``GradScaler``) and unscales the gradients before the method's
gradient changes and the speed, so both see true gradients. fp32, the default, runs exactly as before.
``--channels-last`` stores 4-D weights and inputs channels-last (5-D ones, I3D's, channels-last-3d). On the CPU,
modules that set ``stays_contiguous = True`` are the exception: their weights stay contiguous and they make their
input contiguous themselves. ResNet-18's last stage does so: on its 4x4 to 7x7 maps (112-224 px images, batch 8)
the CPU's convolutions and weight casts cost less in the contiguous layout, in bf16 as in fp32. On a GPU every
4-D weight goes channels-last.

The float64 accumulators (MMTM's gate means and squeeze sums, late fusion's feature means, the speed sums) live on
modules that derive from ``KeepsFloat64``: a user's ``model.float()``, ``.half()``, ``.to(torch.bfloat16)`` or
``.to(device, dtype)`` casts the parameters as asked and moves those buffers to the new device, but leaves them
float64.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from .choices import PRECISIONS

__all__ = [
    "PRECISIONS",
    "KeepsFloat64",
    "autocast",
    "grad_scaler",
    "inputs_channels_last",
    "stays_contiguous",
    "to_channels_last",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class KeepsFloat64(nn.Module):
    """A module whose own float64 buffers stay float64 under every dtype cast (``.float()``, ``.half()``,
    ``.bfloat16()``, ``.to(dtype)``, ``.to(device, dtype)``); device moves still apply to them. Its parameters,
    and its children's parameters and buffers, are cast as usual."""

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        kept = {k: b for k, b in self._buffers.items() if b is not None and b.dtype == torch.float64}
        super()._apply(fn, recurse)
        for k, old in kept.items():
            new = self._buffers[k]
            if new is not None and new.dtype != torch.float64:  # cast from old, not new: no precision lost
                self._buffers[k] = old.to(device=new.device)
        return self


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


def stays_contiguous(module: nn.Module, x: Tensor | None = None) -> bool:
    """Whether ``module`` asks to stay contiguous under channels-last (``stays_contiguous = True``), for its
    input ``x`` when given: only CPU tensors do. Such a module calls this in its forward and makes ``x``
    contiguous when it says yes; ``to_channels_last`` leaves its CPU weights (and its children's) contiguous."""
    return bool(getattr(module, "stays_contiguous", False)) and (x is None or x.device.type == "cpu")


@torch.no_grad()
def to_channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter channels-last, every 5-D one channels-last-3d, except the CPU weights of modules that
    stay contiguous (``stays_contiguous``); the rest unchanged."""
    kept = {id(p) for m in model.modules() if stays_contiguous(m) for p in m.parameters() if p.device.type == "cpu"}
    for p in model.parameters():
        fmt = _format(p)
        if fmt is not None and id(p) not in kept:
            p.data = p.data.contiguous(memory_format=fmt)
    return model


def inputs_channels_last(x: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.contiguous(memory_format=_format(v)) if _format(v) else v for k, v in x.items()}
