"""Global image-report alignment (the CM-CGNS paper, arXiv 2506.11674; CLIP/ConVIRT-style
InfoNCE) and the distributed gather hook."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from cmcgns_cli.losses.precision import full_precision

# A gather hook maps this rank's rows (n, ...) to the rows of all ranks (N, ...) -- with
# gradient -- and returns the offset of this rank's rows inside the result. Identity by default.
GatherFn = Callable[[Tensor], tuple[Tensor, int]]


def identity_gather(x: Tensor) -> tuple[Tensor, int]:
    """Single-process gather: the tensor itself, offset 0."""
    return x, 0


CLIP_MAX_SCALE = 100.0  # CLIP trainers clamp exp(s) at 100; the authors' code never clamps


def global_infonce(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    gather: GatherFn = identity_gather,
    max_scale: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetric InfoNCE between L2-normalised global embeddings (arXiv 2506.11674, global
    alignment; the CLIP objective).

    logits = exp(s) * cos(image_i, text_j), s learnable (initialised to log(1/0.1)). The
    authors' code never clamps exp(s) (``max_scale = 0``, the default); ``max_scale > 0``
    clamps s at log(max_scale) as CLIP trainers do (``loss.logit_scale_max = 100``).
    ``image``, ``text``: (n, D) float; rows are this rank's samples, columns come from all
    ranks through ``gather``. Returns ``(loss, acc_i2t, acc_t2i)``, scalars, where
    loss = (CE(i->t) + CE(t->i)) / 2.

    Two orthogonal pairs at s = 0 (exp(s) = 1): each row's logits are (1, 0), so
    CE = -log(e / (e + 1)) = log(1 + 1/e) in both directions:

    >>> e = torch.eye(2)
    >>> loss, acc_i2t, acc_t2i = global_infonce(e, e, torch.tensor(0.0))
    >>> round(loss.item(), 4), acc_i2t.item(), acc_t2i.item()
    (0.3133, 1.0, 1.0)
    """
    with full_precision(image):  # bf16 autocast would quantise the logits (and the argmax)
        return _global_infonce(image, text, logit_scale, gather, max_scale)


def _global_infonce(
    image: Tensor, text: Tensor, logit_scale: Tensor, gather: GatherFn, max_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    s = logit_scale.float()
    s = s.clamp(max=math.log(max_scale)) if max_scale > 0 else s
    scale = s.exp()
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


# names of the two collapse gauges in the model's output and the step records: the mean
# pairwise cosine of this rank's batch of global image / report vectors (1 = all the same;
# a global InfoNCE stuck at log(batch) goes with values near 1)
COLLAPSE_KEYS = ("image_global_cos", "text_global_cos")


@torch.no_grad()
def mean_pairwise_cos(x: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean cosine over the ordered pairs i != j of a batch of unit vectors ``x`` (n, D), or
    of its rows where ``valid`` (n,) bool is True (masked on the device, no host sync): a
    collapse gauge (1 = every vector the same, about 0 for spread vectors; it can go below
    0). Computed as (|sum_i x_i|^2 - n) / (n (n - 1)), so O(n D); NaN for fewer than 2
    rows. Returns a float32 scalar.

    >>> mean_pairwise_cos(torch.eye(3))  # orthogonal
    tensor(0.)
    >>> round(float(mean_pairwise_cos(torch.ones(4, 2) / 2**0.5)), 6)  # one vector repeated
    1.0
    >>> mean_pairwise_cos(torch.eye(3), torch.tensor([True, True, False]))
    tensor(0.)
    """
    if valid is not None:
        n = valid.float().sum()
        total = (x.float() * valid[:, None].float()).sum(0)
        return torch.where(n >= 2, (total @ total - n) / (n * (n - 1)).clamp(min=1.0), math.nan)
    n = x.shape[0]
    if n < 2:
        return x.new_full((), float("nan"), dtype=torch.float32)
    total = x.float().sum(0)
    return (total @ total - n) / (n * (n - 1))
