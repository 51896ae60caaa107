"""Local image loss (local image term of the CM-CGNS paper, arXiv 2506.11674): SimSiam-style
alignment of patches and their
text-to-image context."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Predictor(nn.Module):
    """The shared predictor MLP of the local image loss, as in the authors' code:
    Linear(D, D/2) -> ReLU -> Linear(D/2, D), no normalisation layer (384 hidden units at
    D = 768). Maps (..., D) -> (..., D); each patch's output is independent of the batch.
    ``hidden`` overrides D/2 (``model.predictor_hidden``)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        h = dim // 2 if hidden is None else int(hidden)
        self.net = nn.Sequential(nn.Linear(dim, h), nn.ReLU(inplace=True), nn.Linear(h, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def local_image_loss(patches: Tensor, context: Tensor, predictor: nn.Module) -> Tensor:
    """Symmetric negative cosine (the local image term of the CM-CGNS paper, arXiv 2506.11674):
    L = -1/2 [cos(pred(v), sg(c)) + cos(pred(c), sg(v))], averaged over patches and the batch,
    with ``v`` the patch feature and ``c`` its text-to-image context (both (B, P, D)).
    Returns a float32 scalar in [-1, 1].

    With an identity predictor and a context equal to the patches both cosines are 1:

    >>> import torch
    >>> v = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    >>> round(local_image_loss(v, v, nn.Identity()).item(), 6)
    -1.0
    >>> round(local_image_loss(v, -v, nn.Identity()).item(), 6)
    1.0
    """
    pv, pc = predictor(patches), predictor(context)
    a = F.cosine_similarity(pv.float(), context.detach().float(), dim=-1)
    b = F.cosine_similarity(pc.float(), patches.detach().float(), dim=-1)
    return -0.5 * (a.mean() + b.mean())
