"""A 1-D convolutional encoder for padded, variable-length signals (inertial sensors, feature sequences).

Input: (B, C + 1, T), the signal's C channels and, last, a mask (1 = a real sample, 0 = padding after the end of
a shorter item). Nothing is truncated: every item keeps all its samples and the mask says where they end.

Three stages: conv k7 (32) + ReLU + max-pool 2, conv k5 (64) + ReLU + max-pool 2, conv k3 (64) + ReLU and a mean
over the real samples, giving a (B, 64) vector. The first two stages output (B, channels + 1, T') with the mask
(pooled alongside) as the last channel, zeros at padded positions, and the real positions (mask included)
scaled by T' / (real samples), so that a plain mean over time, which MMTM's squeeze takes, equals the mean over
the real samples only (the mask channel's mean is then 1 whatever the padding); the next stage undoes the scale
before its convolution. A padded item thus gives the same output as the item alone, in both families. MMTM's
gates multiply each channel by a positive number, which keeps the mask's zeros and non-zeros where they are.
MMTM can follow each stage, so the encoder serves both model families. ``width`` scales the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .branch import Branch


def _mask(x: Tensor) -> Tensor:
    return (x[:, -1:] > 0).to(x.dtype)  # (B, 1, T)


def _real(mask: Tensor) -> Tensor:
    return mask.sum(dim=-1, keepdim=True).clamp(min=1.0)  # (B, 1, 1): real samples per item


class MaskedConvStage(nn.Module):
    """(B, c_in + 1, T) -> (B, c_out + 1, T / pool) with the mask last; ``pool_out``: a (B, c_out) mean over the
    real samples instead; ``scaled_input``: the input's real positions carry the scale T / real (not the data)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, pool: int = 1, scaled_input: bool = True, pool_out: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.pool, self.scaled_input, self.pool_out = pool, scaled_input, pool_out

    def forward(self, x: Tensor) -> Tensor:
        mask = _mask(x)
        h = x[:, :-1]
        if self.scaled_input:
            h = h * (_real(mask) / x.shape[-1])
        h = F.relu(self.conv(h * mask)) * mask  # zeros beyond the end: a shorter item sees what it would alone
        if self.pool > 1:  # h >= 0, so zero padding never wins a max
            h, mask = F.max_pool1d(h, self.pool, ceil_mode=True), F.max_pool1d(mask, self.pool, ceil_mode=True)
        if self.pool_out:
            return h.sum(dim=-1) / _real(mask)[:, :, 0]  # (B, c_out)
        return torch.cat([h, mask], dim=1) * (h.shape[-1] / _real(mask))


def seq1d(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """``in_channels`` counts the mask: a 3-axis sensor is 4."""
    if in_channels < 2:
        raise ValueError(f"the seq1d encoder needs signal channels plus a mask channel (>= 2), got {in_channels}")
    c1, c2 = max(1, round(32 * width)), max(1, round(64 * width))
    stages = [
        MaskedConvStage(in_channels - 1, c1, 7, pool=2, scaled_input=False),
        MaskedConvStage(c1, c2, 5, pool=2),
        MaskedConvStage(c2, c2, 3, pool_out=True),
    ]
    return Branch(stages, channels=[c1 + 1, c2 + 1, c2], num_classes=num_classes)


# MMTM after every stage (the first two fuse time-resolved maps, the last the pooled vectors)
SEQ1D_FUSE_AFTER = (0, 1, 2)
