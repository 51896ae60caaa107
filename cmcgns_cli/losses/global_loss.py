"""Global image-report alignment (paper.md item 1) and the distributed gather hook."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# A gather hook maps this rank's rows (n, ...) to the rows of all ranks (N, ...) -- with
# gradient -- and returns the offset of this rank's rows inside the result. Identity by default.
GatherFn = Callable[[Tensor], tuple[Tensor, int]]


def identity_gather(x: Tensor) -> tuple[Tensor, int]:
    """Single-process gather: the tensor itself, offset 0."""
    return x, 0


MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: keeps exp(s) <= 100 so training stays stable


def global_infonce(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    gather: GatherFn = identity_gather,
) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetric InfoNCE between L2-normalised global embeddings, paper.md item 1.

    logits = exp(s) * cos(image_i, text_j), s learnable (initialised to log(1/0.1), clamped at
    log 100). Rows are this rank's samples; columns come from all ranks through ``gather``.
    Returns ``(loss, acc_i2t, acc_t2i)`` where loss = (CE(i->t) + CE(t->i)) / 2.
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    text_all, offset = gather(text)
    image_all, _ = gather(image)
    labels = torch.arange(image.shape[0], device=image.device) + offset
    logits_i2t = scale * image.float() @ text_all.float().t()
    logits_t2i = scale * text.float() @ image_all.float().t()
    loss = 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels))
    with torch.no_grad():
        acc_i2t = (logits_i2t.argmax(1) == labels).float().mean()
        acc_t2i = (logits_t2i.argmax(1) == labels).float().mean()
    return loss, acc_i2t, acc_t2i
