"""gated, two modalities: Linear(h -> C)(sigmoid(Linear(d_0 -> h)(z_0)) * Linear(d_1 -> h)(z_1)), h = d_1.

The first modality gates the second (order them with --modalities). The logits do not split per modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Fusion, register_fusion


@register_fusion("gated")
class GatedFusion(Fusion):
    n_modalities = (2,)

    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fc_x = nn.Linear(dims[0], dims[1])
        self.fc_y = nn.Linear(dims[1], dims[1])
        self.fc_out = nn.Linear(dims[1], num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        return self.fc_out(torch.sigmoid(self.fc_x(zs[0])) * self.fc_y(zs[1]))

    def output_weights(self) -> list[Tensor]:
        return [self.fc_out.weight]
