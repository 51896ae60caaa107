"""Wire the CM-CGNS model for DistributedDataParallel (docs/pretraining.md, "Distributed and
GPU training").

``loss.local_text_scope`` picks what crosses ranks. ``rank`` (the authors' DDP behaviour,
the default): only the global InfoNCE gathers its columns from all ranks; the local text loss
takes its negatives from this rank's batch, and each rank runs its own k-means (its own
initialisation, updates from its own sentences, never synchronised; DDP does not broadcast
those buffers). ``global`` (the clean form): everything below.

What the model needs from the ranks under ``global``, and how it gets it:

* gather hook (``dist.gather``): global InfoNCE and the local text loss see the columns of all
  ranks, gathered with gradient; each rank computes its own rows against all columns.
* k-means ``reduce`` (SUM all-reduce) and ``broadcast`` (rank 0's tensor): centroid-update
  sums and counts are summed over ranks, so every rank applies the same update.
* k-means initialisation: :func:`install` wraps ``maybe_initialize`` so that it runs once on the
  gathered (global-batch) features -- the init test and the farthest-point candidates are then
  exactly those of one process on the global batch -- and the result is broadcast from rank 0.
* loss scaling: DDP averages gradients over ranks, which reproduces a global-batch mean only
  for terms whose per-rank denominators are equal. The local text InfoNCE (mean over valid
  sentences) and its BML term (mean over false-negative pairs, or over all pairs in the
  authors' form) have per-rank counts, so a
  forward hook multiplies each rank's term by ``world * count_rank / count_all``; after DDP's
  average the gradient, and the mean of the logged terms over ranks, equal those of the
  global batch exactly.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor, nn

from cmcgns_cli.losses.global_loss import identity_gather
from cmcgns_cli.train import dist


def _identity(x: Tensor) -> Tensor:
    return x


def install(model: nn.Module) -> None:
    """Install the cross-rank hooks on a CMCGNS model (idempotent; no-op for one process)."""
    if dist.world_size() == 1 or getattr(model, "_ddp_hooks", None) is not None:
        return
    handles: list[Any] = []
    if local_text_scope(model) == "rank":
        # the authors' DDP run: only the global InfoNCE sees other ranks; the local text loss
        # and the k-means keep to this rank's batch (reduce and broadcast stay the identity,
        # and ``wrap`` keeps DDP from copying rank 0's k-means buffers to the others)
        model.set_distributed_hooks(gather=dist.gather)
        if getattr(model, "local_text_loss", None) is not None:
            model.local_text_loss.gather = identity_gather
        model._ddp_hooks = handles
        return
    model.set_distributed_hooks(
        gather=dist.gather, reduce=dist.all_reduce_sum, broadcast=dist.broadcast0
    )
    km = model.kmeans
    if km is not None and not hasattr(km, "_local_maybe_initialize"):
        km._local_maybe_initialize = km.maybe_initialize
        km.maybe_initialize = types.MethodType(_gathered_maybe_initialize, km)
    lt = getattr(model, "local_text_loss", None)
    if lt is not None:
        handles.append(lt.register_forward_hook(_rescale_local_text))
    model._ddp_hooks = handles


def local_text_scope(model: nn.Module) -> str:
    """``loss.local_text_scope`` of a CMCGNS model (``global`` for a model without one)."""
    loss = getattr(getattr(model, "cfg", None), "loss", None)
    return str(getattr(loss, "local_text_scope", "global"))


def rank_local_buffers(model: nn.Module) -> list[str]:
    """State-dict names of the buffers each rank keeps to itself: the k-means state under
    ``loss.local_text_scope = rank`` (none otherwise)."""
    km = getattr(model, "kmeans", None)
    if km is None or local_text_scope(model) != "rank":
        return []
    names = {id(b): n for n, b in model.named_buffers()}
    return [names[id(b)] for b in km.buffers() if id(b) in names]


def uninstall(model: nn.Module) -> None:
    """Back to single-process hooks (identity): e.g. for rank-0-only validation."""
    for h in getattr(model, "_ddp_hooks", None) or []:
        h.remove()
    model._ddp_hooks = None
    model.set_distributed_hooks(gather=identity_gather, reduce=_identity, broadcast=_identity)
    km = model.kmeans
    if km is not None and hasattr(km, "_local_maybe_initialize"):
        km.maybe_initialize = km._local_maybe_initialize
        del km._local_maybe_initialize


class local_hooks:  # noqa: N801 - used as a context manager
    """``with local_hooks(model):`` runs the model as one process, then restores DDP hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active = getattr(model, "_ddp_hooks", None) is not None

    def __enter__(self) -> nn.Module:
        if self.active:
            uninstall(self.model)
        return self.model

    def __exit__(self, *exc: object) -> None:
        if self.active:
            install(self.model)


@torch.no_grad()
def _gathered_maybe_initialize(  # noqa: ANN401
    km: Any, z1: Tensor, z2: Tensor, valid: Tensor, gate: Tensor | None = None
) -> None:
    """k-means init on the global batch: gather (no grad), decide and pick on every rank with
    statistics already global (reduce = identity), then take rank 0's result (broadcast).
    ``gate`` is already global (computed from gathered features).

    Whether this rank issues the gathers and broadcasts is decided once per step from the
    flag itself (the same on every rank), never from the host's non-blocking mirror of it,
    whose answer on CUDA depends on each rank's timing: ranks that disagree there would run
    different collectives, a hang or an exchange of the wrong tensors."""
    if km.agreed_ready():
        return
    z1_all, _ = dist.gather(z1.detach())
    z2_all, _ = dist.gather(z2.detach())
    valid_all, _ = dist.gather(valid)
    reduce = km.reduce
    km.reduce = _identity
    try:
        km.initialize_if_due(z1_all, z2_all, valid_all, gate)
    finally:
        km.reduce = reduce


def _rescale_local_text(
    module: nn.Module, args: tuple[Any, ...], out: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Scale the local text terms by world * count_rank / count_all (see the module doc); the
    loss reports the BML's per-rank denominator as ``bml_count``."""
    _, _, valid = args
    ws = dist.world_size()
    counts = [valid.sum().float()]
    if module.kmeans is not None:
        counts.append(out["bml_count"].float().to(counts[0].device))
    local = torch.stack(counts)
    total = dist.all_reduce_sum(local)
    # a term whose global count is 0 is 0 on every rank; keep the scale finite
    scale = torch.where(total > 0, ws * local / total.clamp(min=1.0), torch.ones_like(local))
    new = dict(out)
    new["loss"] = out["loss"] * scale[0]
    if module.kmeans is not None:
        new["bml"] = out["bml"] * scale[1]
    return new


def wrap(model: nn.Module, device: torch.device, *, accumulate: int = 1) -> nn.Module:
    """DistributedDataParallel around ``model`` (the model itself for one process).

    ``accumulate``: micro-batches per optimizer step (``train.accumulate``). With one, DDP runs
    with ``static_graph``: the set of parameters used is fixed within a stage (stage 1 leaves
    the CM-MIR decoder unused), which DDP then handles without a per-step search for unused
    parameters. With more, the first micro-batches run under ``no_sync``, and the pinned
    torch's reducer asserts ("expect_autograd_hooks_") when a static graph meets ``no_sync``
    (pytorch/pytorch#143580), so DDP searches for unused parameters instead. Under
    ``loss.local_text_scope = rank`` the k-means buffers stay out of DDP's buffer broadcast.
    """
    if dist.world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    static = int(accumulate) <= 1
    own = rank_local_buffers(model)
    if own:  # DDP would otherwise overwrite them with rank 0's before every forward
        DDP._set_params_and_buffers_to_ignore_for_model(model, own)
    return DDP(  # buffers from rank 0
        model, device_ids=ids, static_graph=static, find_unused_parameters=not static
    )
