"""One validation pass: mean loss terms and retrieval top-1 over the validate split.

Under DDP it runs on rank 0 only, as one process (the cross-rank hooks are lifted), so the
numbers do not depend on the world size; the other ranks receive them by broadcast.

Each batch is encoded once (``forward_with_globals``: the loss terms and the global
embeddings from the same encoders' pass), and the terms are summed on the device in float64
(the sums a Python float gave), read back once at the end of the pass: no host sync per
batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.train import dist
from cmcgns_cli.train.ddp import local_hooks
from cmcgns_cli.train.feed import BatchFeed
from cmcgns_cli.train.retrieval import retrieval_top1


@torch.no_grad()
def validate(
    model: torch.nn.Module, feed: BatchFeed, val_ds: PairedDataset, keys: np.ndarray, stage: int
) -> dict[str, Any]:
    """Mean of every scalar term of ``model(batch, stage=stage)`` over ``val_ds`` (``val_<term>``,
    weighted by batch size; None where a term was NaN) and retrieval top-1 in both directions
    (``val_top1_i2t``, ``val_top1_t2i``; ``keys`` (N,) marks identical reports, see
    ``retrieval.report_keys``), plus ``val_pairs``. Model buffers (the k-means state) and the
    train mode are restored afterwards."""
    val = _validate_here(model, feed, val_ds, keys, stage) if dist.is_main() else None
    return dist.broadcast_object(val)


def _validate_here(
    model: torch.nn.Module, feed: BatchFeed, val_ds: PairedDataset, keys: np.ndarray, stage: int
) -> dict[str, Any]:
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    model.eval()
    loader = feed.loader(val_ds, train=False, epoch=0)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    imgs, txts = [], []
    with local_hooks(model):
        for batch in loader:
            # rank 0 validates alone: its own batch's sentence slots, no collective
            batch = feed.to_device(batch, across_ranks=False)
            b = int(batch["images"].shape[0])
            with feed.autocast():
                out, i, t = model.forward_with_globals(batch, stage=stage)
            # as global_embeddings gives them (L2-normalised float32)
            imgs.append(F.normalize(i.float(), dim=-1))
            txts.append(F.normalize(t.float(), dim=-1))
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    s = v.detach().reshape(()).double() * b  # stays on the device
                    sums[k] = sums[k] + s if k in sums else s
            n += b
    # the pass's one host read of the loss terms
    totals = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)) if sums else {}
    i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), keys)
    for k, b in model.named_buffers():  # validation never changes training state
        b.copy_(buffers[k])
    model.train()
    # NaN: a term that was undefined on some batch (cluster health before the k-means is used)
    val = {f"val_{k}": (None if v != v else v / n) for k, v in totals.items()}
    val.update({"val_top1_i2t": i2t, "val_top1_t2i": t2i, "val_pairs": n})
    return val
