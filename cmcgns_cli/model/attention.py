"""Local cross-attention between patches and sentences (local alignment of the CM-CGNS paper,
arXiv 2506.11674; the authors' sigmoid-weighted form), batched with masks.

Per pair (image i, report i), patches ``V (P, D)`` and sentences ``T (S, D)``:
text-to-image context per patch   = sigmoid(q(V) k(T)^T / sqrt(D)) v(T)      (P, D)
image-to-text context per sentence = sigmoid(q'(T) k'(V)^T / sqrt(D)) v'(V)   (S, D)
The authors use sigmoid weights (not softmax), so each weight is independent and padding
sentences are removed simply by zeroing their weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LocalCrossAttention(nn.Module):
    """Both directions of the sigmoid cross-attention, vectorised over the batch."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)
        self.q_t2i, self.k_t2i, self.v_t2i = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )
        self.q_i2t, self.k_i2t, self.v_i2t = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )

    def text_to_image_weights(self, patches: Tensor, sentences: Tensor, mask: Tensor) -> Tensor:
        """(B, P, S) weights of each patch over the sentences; padding sentences get 0."""
        w = torch.sigmoid(
            torch.einsum("bpd,bsd->bps", self.q_t2i(patches), self.k_t2i(sentences)) * self.scale
        )
        return w * mask[:, None, :].to(w.dtype)

    def image_to_text_weights(self, patches: Tensor, sentences: Tensor, mask: Tensor) -> Tensor:
        """(B, S, P) weights of each sentence over the patches; padding sentences' rows are 0."""
        w = torch.sigmoid(
            torch.einsum("bsd,bpd->bsp", self.q_i2t(sentences), self.k_i2t(patches)) * self.scale
        )
        return w * mask[:, :, None].to(w.dtype)

    def forward(self, patches: Tensor, sentences: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(t2i (B, P, D), i2t (B, S, D))``; i2t rows of padding sentences are zero."""
        t2i = torch.einsum(
            "bps,bsd->bpd",
            self.text_to_image_weights(patches, sentences, mask),
            self.v_t2i(sentences),
        )
        i2t = torch.einsum(
            "bsp,bpd->bsd",
            self.image_to_text_weights(patches, sentences, mask),
            self.v_i2t(patches),
        )
        return t2i, i2t
