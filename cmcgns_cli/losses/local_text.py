"""Local text loss with cross-modal clustering-guided negative sampling (paper.md item 4).

z1 = sentence embeddings, z2 = their image-to-text contexts, both L2-normalised, flattened
to N rows (padded layout: invalid rows/columns are masked, never indexed away, so there is no
host sync and padding has no effect). logits[a, b] = cos(z1_a, z2_b) / tau; positive b = a.

Switches (LossConfig):
- ``hard_negative_mode``: "multiply" (authors): extra column = w * cos(z1_a, c_hn) / tau;
  "additive" (clean, SimCSE/ClusterNS): cos(z1_a, c_hn) / tau + w.
- ``false_negative_denominator``: "keep" (authors) leaves same-cluster pairs in the InfoNCE
  denominator; "remove" (clean) masks them out of it. Both train them with BML.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcgns_cli.config import LossConfig
from cmcgns_cli.losses.global_loss import GatherFn, identity_gather
from cmcgns_cli.losses.kmeans import CrossModalKMeans


def hard_negative_logit(
    z1: Tensor, centroids: Tensor, tau: float, weight: float, mode: str
) -> tuple[Tensor, Tensor]:
    """Per row a: the centroid SECOND most similar to z1_a and its weighted logit.
    Returns ``(logit (N,), centroid index (N,))``."""
    sims = F.normalize(z1.float(), dim=-1) @ F.normalize(centroids.float(), dim=-1).t()
    return hard_negative_from_similarities(sims, tau, weight, mode)


def hard_negative_from_similarities(
    sims: Tensor, tau: float, weight: float, mode: str
) -> tuple[Tensor, Tensor]:
    """As :func:`hard_negative_logit`, from the (N, K) cosine matrix to the centroids."""
    idx = sims.topk(2, dim=1).indices[:, 1]
    cos = sims.gather(1, idx[:, None])[:, 0]
    if mode == "multiply":
        return weight * cos / tau, idx
    if mode == "additive":
        return cos / tau + weight, idx
    raise ValueError(f"hard_negative_mode must be multiply or additive, not {mode!r}")


def false_negative_mask(
    assign_rows: Tensor, assign_cols: Tensor, offset: int, valid_rows: Tensor, valid_cols: Tensor
) -> Tensor:
    """(n, N) bool: pairs (a, b), b != a, whose z1 fall in the same cluster, both valid."""
    same = assign_rows[:, None] == assign_cols[None, :]
    diag = torch.arange(assign_rows.shape[0], device=same.device)[:, None] + offset
    not_self = torch.arange(assign_cols.shape[0], device=same.device)[None, :] != diag
    return same & not_self & valid_rows[:, None] & valid_cols[None, :]


def bml_loss(cos: Tensor, fn_mask: Tensor, offset: int, alpha: float, beta: float) -> Tensor:
    """Bidirectional margin loss over false-negative pairs, paper.md item 4:
    delta = cos(z1_a, z2_b) - cos(z1_a, z2_a); BML = relu(delta + alpha) + relu(-delta - beta),
    averaged over the masked pairs (0 when there are none)."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    pos = cos[rows, rows + offset]
    delta = cos - pos[:, None]
    per_pair = F.relu(delta + alpha) + F.relu(-delta - beta)
    m = fn_mask.to(cos.dtype)
    return (per_pair * m).sum() / m.sum().clamp(min=1.0)


def local_text_infonce(
    cos: Tensor,
    offset: int,
    valid_rows: Tensor,
    valid_cols: Tensor,
    tau: float,
    hard_logit: Tensor | None = None,
    drop: Tensor | None = None,
) -> Tensor:
    """InfoNCE over rows of ``cos`` (n, N) / tau with the positive at column a + offset, an
    optional extra column ``hard_logit`` (n,) (-inf = absent) and optional ``drop`` mask of
    columns removed from the denominator; mean over valid rows."""
    logits = (cos / tau).masked_fill(~valid_cols[None, :], float("-inf"))
    if drop is not None:
        logits = logits.masked_fill(drop, float("-inf"))
    if hard_logit is not None:
        logits = torch.cat([logits, hard_logit[:, None]], dim=1)
    logits = logits.masked_fill(~valid_rows[:, None], 0.0)  # keep invalid rows finite
    labels = torch.arange(cos.shape[0], device=cos.device) + offset
    per_row = F.cross_entropy(logits, labels, reduction="none")
    w = valid_rows.to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp(min=1.0)


class LocalTextLoss(nn.Module):
    """Local text loss, with (``clustering=True``) or without the cross-modal k-means.

    ``gather`` (identity by default) gathers z2 (with gradient), z1 and the validity mask
    across ranks for the columns; the k-means statistics go through ``kmeans.reduce``.
    """

    def __init__(self, cfg: LossConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.kmeans = (
            CrossModalKMeans(
                cfg.num_clusters,
                dim,
                cfg.cluster_init_threshold,
                cfg.cluster_momentum,
                cfg.centroid_update,
            )
            if cfg.clustering
            else None
        )
        self.gather: GatherFn = identity_gather

    def forward(self, z1: Tensor, z2: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """``z1``, ``z2`` (N, D) (any norm; normalised here), ``valid`` (N,) bool. Returns
        ``loss`` (InfoNCE), ``bml`` (unweighted false-negative term), ``ready`` (k-means)."""
        cfg = self.cfg
        z1n, z2n = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
        z2_all, offset = self.gather(z2n)
        valid_all, _ = self.gather(valid)
        cos = z1n @ z2_all.t()
        zero = cos.new_zeros(())
        if self.kmeans is None:
            loss = local_text_infonce(cos, offset, valid, valid_all, cfg.local_text_tau)
            return {"loss": loss, "bml": zero, "ready": torch.zeros((), dtype=torch.bool)}
        km = self.kmeans
        if self.training:
            was, ready = km.train_step(z1n.detach(), z2n.detach(), valid)
        else:
            was = ready = km.initialized.clone()
        # one (N, K) similarity matrix serves the hard negatives (with gradient to z1) and the
        # cluster assignments; cloned centroids: the momentum update below is in place
        sims = z1n @ F.normalize(km.centroids.clone().float(), dim=-1).t()
        hard, _ = hard_negative_from_similarities(
            sims, cfg.local_text_tau, cfg.hard_negative_weight, cfg.hard_negative_mode
        )
        hard = hard.masked_fill(~ready, float("-inf"))  # no extra column before init
        assign_rows = sims.detach().argmax(dim=1)
        if self.gather is identity_gather:
            assign_cols = assign_rows
        else:
            assign_cols = km.assign(self.gather(z1n.detach())[0])
        fn = false_negative_mask(assign_rows, assign_cols, offset, valid, valid_all) & ready
        drop = fn if cfg.false_negative_denominator == "remove" else None
        loss = local_text_infonce(cos, offset, valid, valid_all, cfg.local_text_tau, hard, drop)
        bml = bml_loss(cos, fn, offset, cfg.bml_alpha, cfg.bml_beta)
        if self.training:
            km.momentum_update(z2n.detach(), valid, was)
        return {"loss": loss, "bml": bml, "ready": ready}
