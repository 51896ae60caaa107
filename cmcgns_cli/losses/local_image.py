"""Local image loss (paper.md item 3): SimSiam-style alignment of patches and their
text-to-image context."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Predictor(nn.Module):
    """The shared 2-layer predictor MLP. LayerNorm (not BatchNorm) keeps every patch's output
    independent of the rest of the batch, so batched == per-sample exactly."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def local_image_loss(patches: Tensor, context: Tensor, predictor: nn.Module) -> Tensor:
    """Symmetric negative cosine, paper.md item 3:
    L = -1/2 [cos(pred(v), sg(c)) + cos(pred(c), sg(v))], averaged over patches and the batch,
    with ``v`` the patch feature and ``c`` its text-to-image context (both (B, P, D)).
    """
    pv, pc = predictor(patches), predictor(context)
    a = F.cosine_similarity(pv.float(), context.detach().float(), dim=-1)
    b = F.cosine_similarity(pc.float(), patches.detach().float(), dim=-1)
    return -0.5 * (a.mean() + b.mean())
