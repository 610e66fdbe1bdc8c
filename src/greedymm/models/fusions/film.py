"""film, two modalities: (gamma, beta) = split(Linear(d_0 -> 2 d_1)(z_0)); Linear(d_1 -> C)(gamma * z_1 + beta).

The first modality conditions the second (order them with --modalities). The logits do not split per modality.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Fusion, register_fusion


@register_fusion("film")
class FiLMFusion(Fusion):
    n_modalities = (2,)

    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.film = nn.Linear(dims[0], 2 * dims[1])
        self.fc_out = nn.Linear(dims[1], num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        gamma, beta = self.film(zs[0]).chunk(2, dim=1)
        return self.fc_out(gamma * zs[1] + beta)

    def output_weights(self) -> list[Tensor]:
        return [self.fc_out.weight]
