"""``model.global_norm``: the optional batch normalisation of the global image and report
vectors before their L2 norm, and the collapse gauge's view of them.

From scratch at the tiny and small sizes the report vectors start nearly identical (mean
pairwise cosine about 0.99 after the attention pool) and the global InfoNCE loss stays at
log(batch): every logit is the same. A BatchNorm without affine parameters (Ioffe & Szegedy
2015; the projection heads of SimCLR, Chen et al. 2020, carry one) centres and scales each
dimension over the batch, so the small differences between reports reach the loss from the
first step. In evaluation it uses its running statistics, as every BatchNorm here does. The
authors' model has none (``none``, the paper presets' value).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def build_global_norm(kind: str, dim: int) -> nn.Module:
    """``BatchNorm1d(dim, affine=False)`` for ``kind == "batchnorm"``, else an identity.

    Raises:
        ValueError: ``kind`` is neither ``none`` nor ``batchnorm``.
    """
    if kind == "batchnorm":
        return nn.BatchNorm1d(dim, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.global_norm must be none or batchnorm, not {kind!r}")


def unit_vectors(norm: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(vectors, gauge)``: ``x`` (B, D) float through ``norm`` and the L2 norm (the vectors
    the losses use), and the same vectors as evaluation would give them (running statistics),
    detached, for the collapse gauges.

    In training a batch normalisation makes any batch look spread (mean pairwise cosine
    about -1 / (B - 1)) however alike its inputs are, so the gauge reads the vectors through
    the running statistics instead: what retrieval and the embeddings will see. A training
    batch of one row (no batch statistics exist) uses the running statistics too. Without a
    batch normalisation both are the same tensor.
    """
    if not isinstance(norm, nn.BatchNorm1d):
        v = F.normalize(norm(x), dim=-1)
        return v, v.detach()

    def frozen(t: Tensor) -> Tensor:  # the running statistics, as in evaluation
        return F.batch_norm(t, norm.running_mean, norm.running_var, training=False, eps=norm.eps)

    if not (norm.training and x.shape[0] > 1):  # evaluation, or a batch of one
        v = F.normalize(frozen(x), dim=-1)
        return v, v.detach()
    v = F.normalize(norm(x), dim=-1)  # updates the running statistics first
    return v, F.normalize(frozen(x.detach()), dim=-1)
