"""concat: Linear(sum_k d_k -> C) on [z_0; ...; z_{N-1}], any N.

Per-modality logits (OGM-GE, MSLR): o_m = W[:, columns of z_m] z_m + b / N (the OGM-GE code's b / 2 for N = 2);
the columns of z_m in W are the part that reads modality m (the shared bias reads all of them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Fusion, ParamSlice, register_fusion


@register_fusion("concat")
class ConcatFusion(Fusion):
    splits = True

    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fc = nn.Linear(sum(dims), num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        return self.fc(torch.cat(list(zs), dim=1))

    def _columns(self, k: int) -> slice:
        start = sum(self.dims[:k])
        return slice(start, start + self.dims[k])

    def modality_logits(self, zs: Sequence[Tensor]) -> list[Tensor]:
        w, b = self.fc.weight, self.fc.bias
        bias = b / len(zs) if b is not None else None
        return [F.linear(z, w[:, self._columns(k)], bias) for k, z in enumerate(zs)]

    def modality_slices(self, k: int) -> list[ParamSlice]:
        return [ParamSlice(self.fc.weight, (slice(None), self._columns(k)))]

    def output_weights(self) -> list[Tensor]:
        return [self.fc.weight]
