"""A text encoder for short token sequences (questions, captions): a token embedding, then masked 1-D convolutions.

Input: (B, V + 1, L) float. Column t of an item is token t as a one-hot vector over the vocabulary's V entries
(``one_hot_tokens`` builds it from token ids); the last channel is the mask (1 = a token, 0 = padding after a
shorter text, where every other channel is 0 too). So a batch of texts of different lengths is padded, never
truncated, and the mask tells the encoder where each text ends. ``in_channels`` is V + 1.

Four stages, MMTM after the last three (as the small CNN), so the same encoder serves both model families:

0. the token embedding: each one-hot column times an (E x V) matrix (E = 32 at width 1), that is the lookup of the
   token's E-vector (a bias-free 1x1 convolution; initialized N(0, 1) as ``nn.Embedding``), giving (B, E + 1, L);
1. conv k3 (64) + ReLU, 2. conv k3 (64) + ReLU: (B, 65, L) maps over the tokens;
3. conv k3 (64) + ReLU and a mean over the real tokens: a (B, 64) vector.

The maps of stages 0-2 use the layout of the ``seq1d`` encoder (models/seq1d.py): the mask is the last channel,
padded positions are zero and the real positions are scaled by L / (real tokens), so a plain mean over L (MMTM's
squeeze) equals the mean over the real tokens only, and a padded text gives the same output as the text alone.
``width`` scales E and the convolution channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .branch import Branch
from .seq1d import MaskedConvStage, _mask, _real


class TokenEmbedding(nn.Module):
    """(B, V + 1, L) one-hot tokens with the mask last -> (B, E + 1, L) embeddings in the masked, scaled layout."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(vocab, dim, 1, bias=False)
        nn.init.normal_(self.embed.weight)

    def forward(self, x: Tensor) -> Tensor:
        mask = _mask(x)
        h = self.embed(x[:, :-1] * mask) * mask
        return torch.cat([h, mask], dim=1) * (x.shape[-1] / _real(mask))


def text(in_channels: int, num_classes: int | None, width: float = 1.0) -> Branch:
    """``in_channels`` is the vocabulary size plus the mask channel."""
    if in_channels < 2:
        raise ValueError(f"the text encoder needs a vocabulary (>= 1 token) plus a mask channel, got {in_channels}")
    e, c = max(1, round(32 * width)), max(1, round(64 * width))
    stages = [
        TokenEmbedding(in_channels - 1, e),
        MaskedConvStage(e, c, 3),
        MaskedConvStage(c, c, 3),
        MaskedConvStage(c, c, 3, pool_out=True),
    ]
    return Branch(stages, channels=[e + 1, c + 1, c + 1, c], num_classes=num_classes)


# MMTM after the last three stages (the embedding alone is not fused)
TEXT_FUSE_AFTER = (1, 2, 3)


def one_hot_tokens(ids: Tensor | Sequence[Sequence[int]], vocab: int, length: int | None = None) -> Tensor:
    """Token ids -> the encoder's input (B, vocab + 1, L).

    ``ids``: a (B, L) integer tensor where -1 marks padding after the end of a text, or a list of id lists (padded
    here to the longest, or to ``length``). Every id must be in 0..vocab-1."""
    if not isinstance(ids, Tensor):
        seqs = [list(s) for s in ids]
        longest = max((len(s) for s in seqs), default=0)
        length = longest if length is None else length
        if longest > length:
            raise ValueError(f"a text of {longest} tokens does not fit length {length}; pass a larger length")
        ids = torch.full((len(seqs), length), -1, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    if ids.dim() != 2 or ids.dtype.is_floating_point:
        raise ValueError(f"token ids must be a (B, L) integer tensor, got {tuple(ids.shape)} {ids.dtype}")
    if ids.numel() and (int(ids.max()) >= vocab or int(ids.min()) < -1):
        got = f"{int(ids.min())}..{int(ids.max())}"
        raise ValueError(f"token ids must be in 0..{vocab - 1} (or -1 for padding), got {got}")
    real = ids >= 0
    out = torch.zeros(ids.shape[0], vocab + 1, ids.shape[1])
    out.scatter_(1, ids.clamp(min=0).unsqueeze(1), real.unsqueeze(1).float())
    out[:, -1] = real.float()
    return out
