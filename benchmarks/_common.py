"""What the benchmarks share: a split of random two-view images shaped as the ModelNet40 network reads them."""

from __future__ import annotations

import torch


class NoiseViews:
    """``n`` random two-view images (view0, view6) of ``size`` px and 40 classes; only the step time matters."""

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = {v: torch.rand(n, 3, size, size, generator=g) for v in ("view0", "view6")}
        self.y = torch.randint(0, 40, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx, train=False):
        return {k: v[idx] for k, v in self.x.items()}, self.y[idx]
