"""The "uniform baseline": the fused loss plus every uni-modal loss, equal weights (MMPareto, Wei & Hu, ICML 2024).

docs/BASELINES.md section 6, from GeWu-Lab/MMPareto_ICML2024 ``uniform_baseline.py``: L = CE(o, y) + sum_m CE(o_m, y),
where o is the fused prediction and o_m the logits of a separate uni-modal head per modality (for two modalities
the paper's CE(o) + CE(o_a) + CE(o_v)). Gradients are the plain gradient of L; the prediction is unchanged.

    late fusion (concat, sum, FiLM, gated)  o = the fusion head; o_m = a separate Linear(d_m -> C) head on z_m
                                            (``model.unimodal_heads``, which ``needs_unimodal_heads`` asks for)
    MMTM                                    [our reading]: o = the mean of the branch heads' logits (the model's
                                            prediction) and o_m = branch head m, so L = CE(mean of heads) +
                                            sum_m CE(head m). The family's default loss is already sum_m CE(head m);
                                            the uniform baseline adds the fused term.

Any number of modalities (the sum runs over all of them). No state, no extra pass (the heads are one Linear each,
in the same forward); evaluation reports each uni-modal head's accuracy (acc_head<k>) besides the prediction's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..models.network import MultiModalNet, heads_loss
from .base import Method, StepContext, register_method


@register_method("uniform")
class Uniform(Method):
    needs_unimodal_heads = True  # late fusion: one Linear head per modality
    extra_cost = {"forward": 0, "backward": 0}

    def check(self, model: MultiModalNet) -> None:
        super().check(model)
        if not model.has_unimodal_heads:
            raise ValueError(
                f"method {self.name!r} trains a uni-modal head per modality, and this model has none; "
                "build it with build_model(..., unimodal_heads=True) (greedymm train does so for this method)"
            )

    def loss(self, ctx: StepContext) -> Tensor:
        out, y = ctx.out, ctx.y
        return F.cross_entropy(out.logits, y) + heads_loss(out.heads, y)
