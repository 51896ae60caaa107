"""Image-report retrieval top-1 from global embeddings, the pretraining-time check.

:func:`retrieval_top1` is the one top-1 computation (it scores with
:func:`cmcgns_cli.metrics.recall_at_k` at K = 1); the validation pass of the trainer and
:func:`validation_top1` (a model and a dataset, for bench scripts and tests) both call it.
The downstream ``evaluate --task retrieval`` (Recall@K on a saved run) lives in
:mod:`cmcgns_cli.downstream.retrieval`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcgns_cli.data.paired import PadCollate, PairedDataset
from cmcgns_cli.errors import RunFailedError
from cmcgns_cli.train import speed


def _pick_global(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        for k in ("global", "global_emb", "embedding", "emb"):
            if k in x:
                return x[k]
        raise RunFailedError(f"encoder output has no 'global' entry (keys: {sorted(x)})")
    if isinstance(x, list | tuple):
        return x[0]
    raise RunFailedError(f"cannot read a global embedding from {type(x).__name__}")


def global_embeddings(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised global image and report embeddings of a padded batch (``PadCollate``):
    two float32 (B, D) tensors, row i of each from pair i."""
    img = _pick_global(model.encode_image(batch["images"]))
    txt = _pick_global(
        model.encode_text(
            batch["input_ids"],
            batch["attention_mask"],
            batch["sentence_index"],
            batch["num_sentences"],
        )
    )
    img = torch.nn.functional.normalize(img.float(), dim=-1)
    txt = torch.nn.functional.normalize(txt.float(), dim=-1)
    return img, txt


def retrieval_top1(
    img: torch.Tensor, txt: torch.Tensor, keys: np.ndarray | None = None, chunk: int = 1024
) -> tuple[float, float]:
    """Image-to-report and report-to-image top-1 by cosine within one set of pairs.

    ``img`` and ``txt`` are (N, D) L2-normalised global embeddings, row i of each being one
    pair; ``keys`` (N,) integers. A retrieved item counts as correct when it is the true
    partner or carries the same report text (equal ``keys``): identical reports cannot be
    told apart. Ties go to the lower index. Returns two shares in [0, 1]; NaN when N = 0.
    The (N, N) similarities are formed ``chunk`` query rows at a time to bound memory.
    """
    from cmcgns_cli.metrics import recall_at_k  # scikit-learn loads only when scoring

    n = img.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    keys_np = np.arange(n) if keys is None else np.asarray(keys, dtype=np.int64)
    hits_i2t = 0.0
    hits_t2i = 0.0
    for a in range(0, n, chunk):
        q = keys_np[a : a + chunk]
        sims = (img[a : a + chunk] @ txt.T).float().cpu().numpy()
        hits_i2t += recall_at_k(sims, (1,), q, keys_np)[1] * len(q)
        sims_t = (txt[a : a + chunk] @ img.T).float().cpu().numpy()
        hits_t2i += recall_at_k(sims_t, (1,), q, keys_np)[1] * len(q)
    return hits_i2t / n, hits_t2i / n


def report_keys(dataset: PairedDataset) -> np.ndarray:
    """(N,) int64, one key per dataset item; equal for items whose kept report tokens are
    equal (the retrieval scores count such reports as the same answer)."""
    seen: dict[bytes, int] = {}
    out = np.empty(len(dataset), dtype=np.int64)
    for i, row in enumerate(dataset.rows):
        ids, _, _ = dataset.tokens.encode(int(row), dataset.max_length, dataset.max_sentences)
        out[i] = seen.setdefault(ids.tobytes(), len(seen))
    return out


@torch.no_grad()
def validation_top1(
    model: torch.nn.Module,
    dataset: PairedDataset,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> dict[str, float]:
    """Retrieval top-1 (both directions) over all pairs of ``dataset`` (eval transforms).

    Returns ``{"top1_i2t", "top1_t2i"}`` (shares in [0, 1], see :func:`retrieval_top1`) and
    ``"pairs"`` (the number of pairs). The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=PadCollate(dataset.tokens.pad_id, wire=True),
    )
    imgs, txts = [], []
    for batch in loader:
        batch = speed.to_device(batch, device, False)  # 1-channel pixels normalised there
        i, t = global_embeddings(model, batch)
        imgs.append(i)
        txts.append(t)
    model.train(was_training)
    i2t, t2i = retrieval_top1(torch.cat(imgs), torch.cat(txts), report_keys(dataset))
    return {"top1_i2t": i2t, "top1_t2i": t2i, "pairs": len(dataset)}
