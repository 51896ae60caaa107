"""Cross-modal k-means over image-to-text sentence features (cross-modal clustering-guided
negative sampling, the CM-CGNS paper, arXiv 2506.11674).

State (``centroids (K, D)``, ``initialized`` bool scalar, ``step`` long scalar, ``idle`` (K,)
long: active momentum updates since each centroid was last assigned a point) lives in registered
buffers, so it is saved in checkpoints and restored on resume and across the stage
switch (the authors' code loses it).

Host syncs: none. The "is it initialised yet?" decision is taken on the device with
``torch.where`` on the flag buffer. While the host does not yet *know* that the flag is set,
the farthest-point candidates are computed every training step (K small mat-vecs) and selected
by the flag; the host learns the flag without blocking: on CPU by reading it, on CUDA by an
asynchronous copy to pinned memory checked through a CUDA event on a later step.

Distributed hooks (identity by default): ``reduce`` must sum a tensor over ranks (all_reduce
SUM) and is applied to the init statistics and to the centroid-update sums/counts;
``broadcast`` must return rank 0's tensor and is applied to the init decision and candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _identity(x: Tensor) -> Tensor:
    return x


def farthest_point_init(z: Tensor, valid: Tensor, k: int, u: Tensor) -> Tensor:
    """K centroids from the rows of ``z`` (N, D): a random valid first row (the ``u``-quantile
    among valid rows, so padding rows do not change the draw), then each next centroid is the
    valid, not yet chosen row least similar (cosine) to the previous one.

    With ``u`` = 0 the first valid row starts; row 1 is orthogonal to it, row 2 nearly
    parallel, so row 1 comes next:

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    >>> farthest_point_init(z, torch.ones(3, dtype=torch.bool), 2, torch.tensor(0.0))
    tensor([[1., 0.],
            [0., 1.]])
    """
    n = z.shape[0]
    zn = F.normalize(z, dim=-1)
    n_valid = valid.sum()
    r = (u * n_valid).floor().long().clamp(max=n_valid - 1)
    rank = valid.long().cumsum(0) - 1
    idx = ((rank == r) & valid).to(torch.uint8).argmax()
    ar = torch.arange(n, device=z.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=z.device)
    picks = []
    for _ in range(k):  # K sequential choices (not a per-sample loop); runs until init is known
        picks.append(idx)
        chosen = chosen | (ar == idx)
        sims = zn @ zn.index_select(0, idx.view(1))[0]
        idx = sims.masked_fill(chosen | ~valid, float("inf")).argmin()
    return z.index_select(0, torch.stack(picks))


class CrossModalKMeans(nn.Module):
    """Momentum k-means; see the module docstring for the state and the hooks."""

    def __init__(
        self,
        num_clusters: int,
        dim: int,
        threshold: float = 0.4,
        momentum: float = 0.001,
        update: str = "sum",
        idle_restart: int = 0,
    ):
        super().__init__()
        if update not in ("sum", "mean"):
            raise ValueError(f"centroid_update must be sum or mean, not {update!r}")
        if idle_restart < 0:
            raise ValueError(f"idle_centroid_restart must be >= 0, not {idle_restart}")
        self.num_clusters, self.threshold, self.momentum, self.update_mode = (
            num_clusters,
            threshold,
            momentum,
            update,
        )
        self.idle_restart = idle_restart
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("idle", torch.zeros(num_clusters, dtype=torch.long))
        self.reduce: Callable[[Tensor], Tensor] = _identity
        self.broadcast: Callable[[Tensor], Tensor] = _identity
        self._host_ready = False
        self._agreed_ready = False
        self._pending: tuple[Any, Tensor] | None = None

    # -- host mirror of the flag, without blocking ------------------------------------------
    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # runs saved before the idle counters existed load with every centroid freshly used
        state_dict.setdefault(prefix + "idle", torch.zeros_like(self.idle))
        super()._load_from_state_dict(state_dict, prefix, *args)
        # re-learn the (possibly new) flag
        self._host_ready, self._agreed_ready, self._pending = False, False, None

    def host_knows_ready(self) -> bool:
        """Whether the host has seen the ``initialized`` flag set, without blocking.

        On CPU the flag is read directly. On CUDA the first call(s) return False and start
        an asynchronous copy of the flag to pinned memory marked by a CUDA event; a later
        call returns the copied value once the event has completed. Once True it stays True
        until a state dict is loaded (which may bring another flag). The caller uses it only
        to stop computing the farthest-point candidates, so a late True changes no result.
        """
        if self._host_ready:
            return True
        flag = self.initialized
        if flag.device.type != "cuda":
            self._host_ready = bool(flag)  # a CPU read, not a device sync
            return self._host_ready
        if self._pending is not None and self._pending[0].query():
            self._host_ready = bool(self._pending[1])
        if not self._host_ready:
            pinned = torch.empty((), dtype=torch.bool, pin_memory=True)
            pinned.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (event, pinned)
        return self._host_ready

    def agreed_ready(self) -> bool:
        """Whether the ``initialized`` flag is set, read with a blocking copy: the answer every
        rank gives at the same step (the flag is set from a broadcast decision), which is what
        may decide whether a rank issues collectives. The read costs a host sync per step
        only until the flag is seen set; then it is cached (until a state dict is loaded)."""
        if not self._agreed_ready:
            self._agreed_ready = bool(self.initialized)
        return self._agreed_ready

    # -- maths ---------------------------------------------------------------------------
    def similarities(self, x: Tensor) -> Tensor:
        """Cosine similarity (N, K) of rows of ``x`` to the centroids."""
        return F.normalize(x.float(), dim=-1) @ F.normalize(self.centroids.float(), dim=-1).t()

    def assign(self, x: Tensor) -> Tensor:
        """Index of the most similar centroid for each row of ``x``."""
        return self.similarities(x).argmax(dim=1)

    @torch.no_grad()
    def maybe_initialize(
        self, z1: Tensor, z2: Tensor, valid: Tensor, gate: Tensor | None = None
    ) -> None:
        """Initialise from ``z2`` at the first step where the mean of the valid N x N cosine
        matrix cos(z1_a, z2_b) is <= threshold, provided N >= K (otherwise wait) and
        ``gate`` (bool scalar, the same on every rank) is True when given."""
        if self.host_knows_ready():
            return
        self.initialize_if_due(z1, z2, valid, gate)

    @torch.no_grad()
    def initialize_if_due(
        self, z1: Tensor, z2: Tensor, valid: Tensor, gate: Tensor | None = None
    ) -> None:
        """The body of :meth:`maybe_initialize` without the host's early exit: the decision
        and the candidates are computed (and, under DDP, reduced and broadcast) on every call,
        and selected on the device by the flag, so a call where the flag is already set
        changes nothing."""
        z1n, z2n = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
        v = valid.float()
        pair = v[:, None] * v[None, :]
        stats = self.reduce(torch.stack([((z1n @ z2n.t()) * pair).sum(), pair.sum()]))
        mean_cos = stats[0] / stats[1].clamp(min=1.0)
        enough = valid.sum() >= self.num_clusters  # candidates come from this rank's points
        cond = (~self.initialized) & (mean_cos <= self.threshold) & enough & (stats[1] > 0)
        cond = cond if gate is None else cond & gate
        cond = self.broadcast(cond.float()) > 0.5
        u = torch.rand((), device=z2.device)
        cand = self.broadcast(farthest_point_init(z2.float(), valid, self.num_clusters, u))
        self.centroids.copy_(torch.where(cond, cand.to(self.centroids.dtype), self.centroids))
        self.initialized.copy_(self.initialized | cond)

    @torch.no_grad()
    def momentum_update(self, z2: Tensor, valid: Tensor, active: Tensor) -> None:
        """c <- (1 - m) c + m * agg(assigned z2), agg = sum (authors) or mean (clean); clusters
        with no point keep their centroid; nothing changes unless ``active`` (bool tensor).

        With ``idle_restart`` = T > 0, a centroid assigned no point of ``z2`` (over all
        ranks) in T consecutive active updates (one per call with ``active``: inactive calls
        do not count, and under gradient accumulation each micro-batch is one) is then
        moved onto the point farthest (cosine) from the centroid that point is assigned to,
        one distinct point per idle centroid, farthest first (the empty-cluster relocation
        of batch k-means, as scikit-learn's ``KMeans`` does, applied online); its idle count
        restarts at 0. The points are rank 0's (``broadcast``)."""
        x = z2.float()
        sims = self.similarities(x)
        idx = sims.argmax(dim=1)
        w = valid.float()
        sums = x.new_zeros(self.centroids.shape).index_add_(0, idx, x * w[:, None])
        counts = x.new_zeros(self.num_clusters).index_add_(0, idx, w)
        packed = self.reduce(torch.cat([sums, counts[:, None]], dim=1))
        sums, counts = packed[:, :-1], packed[:, -1]
        agg = sums if self.update_mode == "sum" else sums / counts.clamp(min=1.0)[:, None]
        new = (1.0 - self.momentum) * self.centroids + self.momentum * agg
        keep = ~(active & (counts > 0))
        self.centroids.copy_(
            torch.where(keep[:, None], self.centroids, new.to(self.centroids.dtype))
        )
        idle = torch.where(counts > 0, torch.zeros_like(self.idle), self.idle + 1)
        self.idle.copy_(torch.where(active, idle, self.idle))
        if self.idle_restart > 0:
            self._relocate_idle(x, valid, sims.gather(1, idx[:, None])[:, 0], active)

    def _relocate_idle(self, x: Tensor, valid: Tensor, own_cos: Tensor, active: Tensor) -> None:
        """Move each centroid idle for ``idle_restart`` steps onto a distinct valid point of
        ``x`` (N, D), the points taken in order of falling distance 1 - ``own_cos`` (N,) to
        their own centroid; idle centroids beyond the number of valid points wait."""
        dead = active & (self.idle >= self.idle_restart)
        order = (1.0 - own_cos).masked_fill(~valid, -math.inf).argsort(descending=True)
        rank = dead.long().cumsum(0) - 1  # the r-th dead centroid takes the r-th farthest point
        dead = dead & (rank < valid.sum())
        cand = x.index_select(0, order.index_select(0, rank.clamp(0, x.shape[0] - 1)))
        cand = self.broadcast(cand)
        dead = self.broadcast(dead.float()) > 0.5
        self.centroids.copy_(
            torch.where(dead[:, None], cand.to(self.centroids.dtype), self.centroids)
        )
        self.idle.copy_(torch.where(dead, torch.zeros_like(self.idle), self.idle))

    @torch.no_grad()
    def train_step(
        self, z1: Tensor, z2: Tensor, valid: Tensor, gate: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One training step's state change: maybe initialise (only where ``gate``, when
        given). Returns ``(was_ready, ready)``; call :meth:`momentum_update` with
        ``active=was_ready`` after using the centroids."""
        was = self.initialized.clone()
        self.maybe_initialize(z1, z2, valid, gate)
        self.step.add_(1)
        return was, self.initialized.clone()
