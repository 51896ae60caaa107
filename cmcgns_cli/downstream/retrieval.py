"""`cmcgns evaluate --task retrieval`: image-to-report and report-to-image Recall@K.

Over the test split's image-report pairs (eval transforms, the run's tokenizer): every test
image queries every test report and the other way round; a hit is the true partner or a
report with the same kept tokens (identical reports cannot be told apart). When the
prepared data has CheXpert labels, the CheXpert 5x200-style subset is scored too: test
images with exactly one positive among the five competition classes, up to 200 per class
(seeded), where a retrieved report counts as relevant when its image has the same class
(Precision@K, the GLoRIA / MGCA protocol).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cmcgns_cli.data.paired import PadCollate, PairedDataset
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.data.tokenize import token_cache
from cmcgns_cli.downstream.intervals import retrieval_hits
from cmcgns_cli.embedding.encode import image_embeddings, text_embeddings, to_device
from cmcgns_cli.embedding.runs import open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.metrics import precision_at_k, recall_at_k

KS = (1, 5, 10)
CHEXPERT5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
PER_CLASS = 200


@torch.no_grad()
def pair_embeddings(run: Any, ds: PairedDataset, batch_size: int = 64) -> tuple[np.ndarray, ...]:
    """(image (N, D), report (N, D), keys (N,)) over the dataset's pairs, in its order."""
    from cmcgns_cli.train.retrieval import report_keys

    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, collate_fn=PadCollate(ds.tokens.pad_id, wire=True)
    )
    imgs, txts = [], []
    for batch in loader:
        batch = to_device(batch, run.device)
        imgs.append(image_embeddings(run.model, batch["images"])["global"].cpu())
        txts.append(text_embeddings(run.model, batch)["global"].cpu())
    return torch.cat(imgs).numpy(), torch.cat(txts).numpy(), report_keys(ds)


def five_by_200(prepared: Any, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``rows`` of the 5x200-style subset and their class (0-4); empty when
    the data has no labels for the five classes."""
    names = prepared.label_names
    if "labels" not in prepared.manifest.columns or not all(c in names for c in CHEXPERT5):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    labels = prepared.labels_array()[rows][:, [names.index(c) for c in CHEXPERT5]]
    pos = labels == 1.0
    one = np.flatnonzero(pos.sum(axis=1) == 1)
    cls = pos[one].argmax(axis=1)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(CHEXPERT5)):
        idx = one[cls == c]
        keep.extend(rng.permutation(idx)[:PER_CLASS].tolist())
    keep_arr = np.sort(np.asarray(keep, dtype=np.int64))
    return keep_arr, pos[keep_arr].argmax(axis=1) if len(keep_arr) else keep_arr


def retrieval_metrics(
    img: np.ndarray, txt: np.ndarray, keys: np.ndarray | None = None
) -> dict[str, float]:
    """``i2t_R@K`` and ``t2i_R@K`` for K in ``KS`` (shares in [0, 1]) of (N, D) image and
    report embeddings, row i of each from pair i; ``keys`` (N,) marks identical reports
    (relevant to each other's queries)."""
    sims = img @ txt.T
    i2t = recall_at_k(sims, KS, keys, keys)
    t2i = recall_at_k(sims.T, KS, keys, keys)
    out = {f"i2t_R@{k}": v for k, v in i2t.items()}
    out.update({f"t2i_R@{k}": v for k, v in t2i.items()})
    return out


def evaluate_retrieval(
    data: Path,
    checkpoint: Path,
    dev: torch.device,
    *,
    split: str = "test",
    random_init: bool = False,
    batch_size: int = 64,
) -> dict[str, Any]:
    """``cmcgns evaluate --task retrieval``: Recall@K both ways over the pairs of ``split``
    of the prepared ``data`` with the pretrain run (or bundle) ``checkpoint`` (the module
    docstring gives the protocol), plus the 5x200 Precision@K when CheXpert labels exist.
    Returns the metrics record (``task``, ``metric``, ``metrics``, ``protocol``,
    ``per_image``). Raises BadInputError when ``data`` has no reports. Not to be confused
    with ``train.retrieval.validation_top1``, the top-1 check during pretraining."""
    run = open_run(checkpoint, dev, random_init=random_init)
    prepared = open_prepared(data)
    if "sentences" not in prepared.manifest.columns:
        raise BadInputError(
            f"{Path(data) / 'manifest.parquet'}: no 'sentences' column; retrieval needs a "
            "paired image-report dataset (e.g. cmcgns prepare mimic)"
        )
    cache = token_cache(prepared, run.tok, fallback_dir=run.path)
    ds = PairedDataset(prepared, split, cache, run.cfg.data, train=False)
    img, txt, keys = pair_embeddings(run, ds, batch_size)
    metrics = retrieval_metrics(img, txt, keys)
    metrics["pairs"] = int(len(ds))
    metrics["chance_R@1"] = 1.0 / max(len(ds), 1)
    sub, cls = five_by_200(prepared, ds.rows)
    if len(sub) and len(np.unique(cls)) > 1:
        sims = img[sub] @ txt[sub].T
        for k, v in precision_at_k(sims, KS, cls, cls).items():
            metrics[f"5x200_i2t_P@{k}"] = v
        for k, v in precision_at_k(sims.T, KS, cls, cls).items():
            metrics[f"5x200_t2i_P@{k}"] = v
        metrics["5x200_n"] = int(len(sub))
    return {
        "task": "retrieval",
        "metric": "i2t_R@1",
        "metrics": metrics,
        "protocol": {
            "seed": 0,
            "split": split,
            "weights": run.weights,
            "pairs": len(ds),
            "data_protocol": prepared.meta.get("protocol"),
        },
        "per_image": {
            "kind": "mean",
            "values": {"i2t_R@1": retrieval_hits(img @ txt.T, keys)},
            "strata": None,
        },
    }
