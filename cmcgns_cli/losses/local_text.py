"""Local text loss with cross-modal clustering-guided negative sampling (arXiv 2506.11674,
cross-modal clustering-guided negative sampling; ClusterNS, Deng et al., ACL 2023).

z1 = sentence embeddings, z2 = their image-to-text contexts, both L2-normalised, flattened
to N rows (padded layout: invalid rows/columns are masked, never indexed away, so there is no
host sync and padding has no effect). logits[a, b] = cos(z1_a, z2_b) / tau; positive b = a.

Order within a training step, as in the authors' code: on the step at which the k-means is
initialised the loss is plain InfoNCE (no hard negatives, no BML); on every later step the
centroids are FIRST momentum-updated from z2, THEN the hard negatives and the cluster
assignments for the loss are chosen with the updated centroids.

Switches (LossConfig):
- ``hard_negative_mode`` (h_j = the centroid second most similar to z1_j, w = weight):
  "multiply" (authors): the N x N block cos(z1_a, h_j) / tau is appended and multiplied by a
  weight matrix that is w on column j = a and 0 elsewhere, so row a holds w cos(z1_a, h_a) / tau
  and N - 1 logits exactly 0;
  "additive_block" (clean, SimCSE / ClusterNS): the block keeps its real cosines and w is added
  in logit space to column j = a only;
  "additive_column": one extra column cos(z1_a, h_a) / tau + w (an earlier form of this
  project, neither of the two above).
- ``false_negative_denominator``: "keep" (authors) leaves same-cluster pairs in the InfoNCE
  denominator; "remove" (clean) masks them out of it. Both train them with BML.
- ``cluster_gate``: "init" (authors): once initialised, the clusters are used on every step;
  "spread" (clean): they are initialised, updated and used only on steps where the
  clustered features are spread, i.e. the mean pairwise cosine of the batch's z2
  (``cluster_feature_cos``) is <= ``cluster_init_threshold``; on other steps the loss is
  plain InfoNCE. The authors' initialisation test, the mean cross-modal cosine
  cos(z1_a, z2_b), is low whenever the two modalities point in different directions, even
  when every sentence has the same vector, so it lets the k-means start and run on
  collapsed features, where it finds one cluster and marks every pair a false negative.
- ``bml_reduction``: "all_pairs" (authors) averages the BML over all N x N pairs with delta
  multiplied by the 0/1 mask; "masked_pairs" (clean) averages over the masked pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcgns_cli.config import LossConfig
from cmcgns_cli.losses.global_loss import GatherFn, identity_gather, mean_pairwise_cos
from cmcgns_cli.losses.kmeans import CrossModalKMeans
from cmcgns_cli.losses.precision import full_precision

HARD_NEGATIVE_MODES = ("multiply", "additive_block", "additive_column")
CLUSTER_GATES = ("init", "spread")
BML_REDUCTIONS = ("all_pairs", "masked_pairs")


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
    """From the (N, K) cosine matrix to the centroids: row a's hard-negative centroid index
    (second most similar) and its own logit: w cos / tau ("multiply"), cos / tau + w
    ("additive_block", "additive_column"). Returns ``(logit (N,), index (N,))``."""
    idx = sims.topk(2, dim=1).indices[:, 1]
    cos = sims.gather(1, idx[:, None])[:, 0]
    if mode == "multiply":
        return weight * cos / tau, idx
    if mode in ("additive_block", "additive_column"):
        return cos / tau + weight, idx
    raise ValueError(f"hard_negative_mode must be one of {HARD_NEGATIVE_MODES}, not {mode!r}")


def hard_negative_logits(
    z1n: Tensor,
    sims: Tensor,
    centroids_n: Tensor,
    hard_idx_cols: Tensor,
    offset: int,
    valid_cols: Tensor,
    tau: float,
    weight: float,
    mode: str,
) -> Tensor:
    """The extra logit columns (n, E) that the hard negatives add to each row.

    ``z1n`` (n, D) this rank's unit sentence vectors, ``sims`` (n, K) their cosines to the
    centroids, ``centroids_n`` (K, D) unit centroids, ``hard_idx_cols`` (N,) the hard-negative
    centroid of every column's sentence (all ranks), ``valid_cols`` (N,) bool.

    "multiply" returns 2 columns: w cos(z1_a, h_a) / tau and log(N_valid - 1). The second is
    the N - 1 zero logits of the authors' block computed analytically: they add
    (N - 1) exp(0) = exp(log(N - 1)) to the softmax denominator and carry no gradient (their
    weight is 0), so the value and every gradient equal those of the block form.
    "additive_block" returns the N block columns cos(z1_a, h_j) / tau + w [j == a] (invalid
    columns -inf); "additive_column" one column cos(z1_a, h_a) / tau + w.
    """
    own, _ = hard_negative_from_similarities(sims, tau, weight, mode)
    if mode == "multiply":
        n_zero = valid_cols.sum().to(own.dtype) - 1.0
        zeros = torch.log(n_zero.clamp(min=0.0)).expand_as(own)  # log 0 = -inf: no zero logit
        return torch.stack([own, zeros], dim=1)
    if mode == "additive_column":
        return own[:, None]
    block = z1n @ centroids_n.index_select(0, hard_idx_cols).t() / tau  # (n, N)
    cols = torch.arange(block.shape[1], device=block.device)[None, :]
    rows = torch.arange(block.shape[0], device=block.device)[:, None] + offset
    block = block + weight * (cols == rows).to(block.dtype)
    return block.masked_fill(~valid_cols[None, :], float("-inf"))


def false_negative_mask(
    assign_rows: Tensor, assign_cols: Tensor, offset: int, valid_rows: Tensor, valid_cols: Tensor
) -> Tensor:
    """(n, N) bool: pairs (a, b), b != a, whose z1 fall in the same cluster, both valid."""
    same = assign_rows[:, None] == assign_cols[None, :]
    diag = torch.arange(assign_rows.shape[0], device=same.device)[:, None] + offset
    not_self = torch.arange(assign_cols.shape[0], device=same.device)[None, :] != diag
    return same & not_self & valid_rows[:, None] & valid_cols[None, :]


def bml_loss(
    cos: Tensor,
    fn_mask: Tensor,
    offset: int,
    alpha: float,
    beta: float,
    reduction: str = "masked_pairs",
    valid_rows: Tensor | None = None,
    valid_cols: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Bidirectional margin loss on false-negative pairs (ClusterNS):
    delta = cos(z1_a, z2_b) - cos(z1_a, z2_a); BML = relu(delta + alpha) + relu(-delta - beta).

    ``cos`` (n, N), ``fn_mask`` (n, N) bool. ``reduction``:
    "masked_pairs" (clean): the mean over the masked pairs (0 when there are none);
    "all_pairs" (authors' code): delta is multiplied by the 0/1 mask first and the BML is
    averaged over all valid n x N pairs (``valid_rows`` (n,), ``valid_cols`` (N,) bool; all
    when None), so every unmasked pair adds the constant alpha and the gradient is scaled by
    1 / (number of pairs). Returns ``(bml, count)``: the scalar and its denominator.

    One false-negative pair (0, 1): delta = 0.7 - 0.5 = 0.2, so with alpha = 0.1 and
    beta = 0.3 the BML is relu(0.3) + relu(-0.5) = 0.3; "all_pairs" adds alpha = 0.1 for
    each of the three unmasked pairs and averages over all four: (0.3 + 3 * 0.1) / 4:

    >>> cos = torch.tensor([[0.5, 0.7], [0.2, 0.9]])
    >>> fn = torch.tensor([[False, True], [False, False]])
    >>> bml, n = bml_loss(cos, fn, 0, alpha=0.1, beta=0.3)
    >>> round(bml.item(), 4), n.item()
    (0.3, 1.0)
    >>> bml, n = bml_loss(cos, fn, 0, alpha=0.1, beta=0.3, reduction="all_pairs")
    >>> round(bml.item(), 4), n.item()
    (0.15, 4.0)
    """
    rows = torch.arange(cos.shape[0], device=cos.device)
    pos = cos[rows, rows + offset]
    m = fn_mask.to(cos.dtype)
    delta = cos - pos[:, None]
    if reduction == "masked_pairs":
        per_pair = F.relu(delta + alpha) + F.relu(-delta - beta)
        count = m.sum()
        return (per_pair * m).sum() / count.clamp(min=1.0), count
    if reduction != "all_pairs":
        raise ValueError(f"bml_reduction must be one of {BML_REDUCTIONS}, not {reduction!r}")
    dm = delta * m
    per_pair = F.relu(dm + alpha) + F.relu(-dm - beta)
    vr = torch.ones_like(rows, dtype=torch.bool) if valid_rows is None else valid_rows
    vc = torch.ones(cos.shape[1], dtype=torch.bool, device=cos.device)
    vc = vc if valid_cols is None else valid_cols
    pairs = (vr[:, None] & vc[None, :]).to(cos.dtype)
    count = pairs.sum()
    return (per_pair * pairs).sum() / count.clamp(min=1.0), count


def local_text_infonce(
    cos: Tensor,
    offset: int,
    valid_rows: Tensor,
    valid_cols: Tensor,
    tau: float,
    extra: Tensor | None = None,
    drop: Tensor | None = None,
) -> Tensor:
    """InfoNCE over rows of ``cos`` (n, N) / tau with the positive at column a + offset,
    optional extra logit columns ``extra`` (n,) or (n, E) (-inf = absent) and an optional
    ``drop`` (n, N) bool mask of columns removed from the denominator; mean over valid rows."""
    logits = (cos / tau).masked_fill(~valid_cols[None, :], float("-inf"))
    if drop is not None:
        logits = logits.masked_fill(drop, float("-inf"))
    if extra is not None:
        logits = torch.cat([logits, extra if extra.dim() == 2 else extra[:, None]], dim=1)
    logits = logits.masked_fill(~valid_rows[:, None], 0.0)  # keep invalid rows finite
    labels = torch.arange(cos.shape[0], device=cos.device) + offset
    per_row = F.cross_entropy(logits, labels, reduction="none")
    w = valid_rows.to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp(min=1.0)


def cluster_health(
    assign_cols: Tensor,
    valid_cols: Tensor,
    fn: Tensor,
    valid_rows: Tensor,
    hard_cos: Tensor,
    num_clusters: int,
) -> dict[str, Tensor]:
    """The batch's cluster-health figures (scalars, float32; no host sync):
    ``clusters_nonempty`` (clusters holding a sentence), ``cluster_top_share`` (the largest
    cluster's share of the sentences), ``cluster_entropy`` (of the assignment distribution,
    nats), ``fn_pair_share`` (share of the valid pairs a != b masked as false negatives) and
    ``hard_negative_cos`` (mean cosine of a sentence to its hard-negative centroid)."""
    w = valid_cols.float()
    counts = torch.zeros(num_clusters, device=w.device).index_add_(0, assign_cols, w)
    p = counts / counts.sum().clamp(min=1.0)
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum()
    n_rows, n_cols = valid_rows.float().sum(), w.sum()
    pairs = n_rows * n_cols - n_rows  # rows are columns too: drop the a == b pairs
    vr = valid_rows.float()
    return {
        "clusters_nonempty": (counts > 0).float().sum(),
        "cluster_top_share": p.max(),
        "cluster_entropy": entropy,
        "fn_pair_share": fn.float().sum() / pairs.clamp(min=1.0),
        "hard_negative_cos": (hard_cos.detach().float() * vr).sum() / vr.sum().clamp(min=1.0),
    }


HEALTH_KEYS = (
    "clusters_nonempty",
    "cluster_top_share",
    "cluster_entropy",
    "fn_pair_share",
    "hard_negative_cos",
)


class LocalTextLoss(nn.Module):
    """Local text loss, with (``clustering=True``) or without the cross-modal k-means.

    ``gather`` (identity by default) gathers z2 (with gradient), z1 and the validity mask
    across ranks for the columns; the k-means statistics go through ``kmeans.reduce``.
    """

    def __init__(self, cfg: LossConfig, dim: int):
        super().__init__()
        if cfg.hard_negative_mode not in HARD_NEGATIVE_MODES:
            raise ValueError(
                f"hard_negative_mode must be one of {HARD_NEGATIVE_MODES}, "
                f"not {cfg.hard_negative_mode!r}"
            )
        if cfg.cluster_gate not in CLUSTER_GATES:
            raise ValueError(
                f"cluster_gate must be one of {CLUSTER_GATES}, not {cfg.cluster_gate!r}"
            )
        if cfg.bml_reduction not in BML_REDUCTIONS:
            raise ValueError(
                f"bml_reduction must be one of {BML_REDUCTIONS}, not {cfg.bml_reduction!r}"
            )
        self.cfg = cfg
        self.kmeans = (
            CrossModalKMeans(
                cfg.num_clusters,
                dim,
                cfg.cluster_init_threshold,
                cfg.cluster_momentum,
                cfg.centroid_update,
                cfg.idle_centroid_restart,
            )
            if cfg.clustering
            else None
        )
        self.gather: GatherFn = identity_gather

    def forward(self, z1: Tensor, z2: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """``z1``, ``z2`` (N, D) (any norm; normalised here), ``valid`` (N,) bool. Returns
        ``loss`` (InfoNCE), ``bml`` (unweighted false-negative term), ``bml_count`` (its
        denominator), ``ready`` (k-means initialised), ``active`` (hard negatives and BML
        used on this step), the :data:`HEALTH_KEYS` (NaN while not active) and
        ``cluster_feature_cos`` (mean pairwise cosine of the batch's valid z2, all ranks;
        NaN without clustering). Runs with autocast off (``losses.precision``): the k-means
        and the negatives are decided on float32 cosines."""
        with full_precision(z1):
            return self._forward(z1, z2, valid)

    def _forward(self, z1: Tensor, z2: Tensor, valid: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        z1n, z2n = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
        z2_all, offset = self.gather(z2n)
        valid_all, _ = self.gather(valid)
        cos = z1n @ z2_all.t()
        zero = cos.new_zeros(())
        nan = torch.full((), math.nan, device=cos.device)
        if self.kmeans is None:
            loss = local_text_infonce(cos, offset, valid, valid_all, cfg.local_text_tau)
            off = torch.zeros((), dtype=torch.bool, device=cos.device)  # the step records stack it
            out = {"loss": loss, "bml": zero, "bml_count": zero, "ready": off, "active": off}
            return out | dict.fromkeys((*HEALTH_KEYS, "cluster_feature_cos"), nan)
        km = self.kmeans
        spread = mean_pairwise_cos(z2_all.detach(), valid_all)  # z2_all: unit rows
        gate = spread <= cfg.cluster_init_threshold if cfg.cluster_gate == "spread" else None
        if self.training:
            active, ready = km.train_step(z1n.detach(), z2n.detach(), valid, gate)
            active = active if gate is None else active & gate
            km.momentum_update(z2n.detach(), valid, active)  # update, THEN choose
        else:
            active = ready = km.initialized.clone()
            active = active if gate is None else active & gate
        cn = F.normalize(km.centroids.float(), dim=-1)
        sims = z1n @ cn.t()  # (n, K): hard negatives (with gradient to z1) and assignments
        if self.gather is identity_gather:
            z1_all, sims_all = z1n.detach(), sims.detach()
        else:
            z1_all = self.gather(z1n.detach())[0]
            sims_all = z1_all @ cn.t()
        assign_rows = sims.detach().argmax(dim=1)
        assign_cols = sims_all.argmax(dim=1)
        hard_idx_cols = sims_all.topk(2, dim=1).indices[:, 1]
        extra = hard_negative_logits(
            z1n,
            sims,
            cn,
            hard_idx_cols,
            offset,
            valid_all,
            cfg.local_text_tau,
            cfg.hard_negative_weight,
            cfg.hard_negative_mode,
        )
        extra = extra.masked_fill(~active, float("-inf"))  # plain InfoNCE until active
        fn = false_negative_mask(assign_rows, assign_cols, offset, valid, valid_all) & active
        drop = fn if cfg.false_negative_denominator == "remove" else None
        loss = local_text_infonce(cos, offset, valid, valid_all, cfg.local_text_tau, extra, drop)
        bml, count = bml_loss(
            cos, fn, offset, cfg.bml_alpha, cfg.bml_beta, cfg.bml_reduction, valid, valid_all
        )
        bml, count = torch.where(active, bml, zero), torch.where(active, count, zero)
        hard_cos = sims.detach().topk(2, dim=1).values[:, 1]
        health = cluster_health(assign_cols, valid_all, fn, valid, hard_cos, km.num_clusters)
        health = {k: torch.where(active, v, nan) for k, v in health.items()}
        out = {"loss": loss, "bml": bml, "bml_count": count, "ready": ready, "active": active}
        return out | health | {"cluster_feature_cos": spread}
