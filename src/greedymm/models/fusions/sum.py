"""sum: sum_k Linear_k(d_k -> C)(z_k), any N. Modality m's logits are Linear_m(z_m), its full bias included."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Fusion, ParamSlice, register_fusion


@register_fusion("sum")
class SumFusion(Fusion):
    splits = True

    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fcs = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        outs = [fc(z) for fc, z in zip(self.fcs, zs, strict=True)]
        return sum(outs[1:], start=outs[0])

    def modality_logits(self, zs: Sequence[Tensor]) -> list[Tensor]:
        return [fc(z) for fc, z in zip(self.fcs, zs, strict=True)]

    def modality_slices(self, k: int) -> list[ParamSlice]:
        return [ParamSlice(p, ...) for p in self.fcs[k].parameters()]

    def output_weights(self) -> list[Tensor]:
        return [fc.weight for fc in self.fcs]
