"""One validation pass: mean loss terms and retrieval top-1 over the validate split.

Under DDP it runs on rank 0 only, as one process (the cross-rank hooks are lifted), so the
numbers do not depend on the world size; the other ranks receive them by broadcast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cmcgns_cli.data.paired import PairedDataset
from cmcgns_cli.train import dist
from cmcgns_cli.train.ddp import local_hooks
from cmcgns_cli.train.feed import BatchFeed
from cmcgns_cli.train.records import scalar
from cmcgns_cli.train.retrieval import global_embeddings, retrieval_top1


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
    sums: dict[str, float] = {}
    n = 0
    imgs, txts = [], []
    with local_hooks(model):
        for batch in loader:
            batch = feed.to_device(batch)
            b = int(batch["images"].shape[0])
            with feed.autocast():
                out = model(batch, stage=stage)
                i, t = global_embeddings(model, batch)
            imgs.append(i)
            txts.append(t)
            for k, v in out.items():
                s = scalar(v)
                if s is not None:
                    sums[k] = sums.get(k, 0.0) + s * b
            n += b
    i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), keys)
    for k, b in model.named_buffers():  # validation never changes training state
        b.copy_(buffers[k])
    model.train()
    # NaN: a term that was undefined on some batch (cluster health before the k-means is used)
    val = {f"val_{k}": (None if v != v else v / n) for k, v in sums.items()}
    val.update({"val_top1_i2t": i2t, "val_top1_t2i": t2i, "val_pairs": n})
    return val
