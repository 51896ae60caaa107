"""`cmcgns clusters`: what each cross-modal k-means centroid groups.

Every sentence of the chosen split (as the model sees it: the run's tokenizer, whole
sentences up to ``max_length`` / ``max_sentences``) is embedded and assigned to its most
similar centroid by cosine -- the assignment training uses for hard negatives and
false-negative masks. Per centroid: how many sentences (and distinct texts) it holds, and
its nearest distinct sentences. Shown as a table; ``--out FILE.csv`` writes one row per
(centroid, nearest sentence).

``--truth FILE`` (the synthetic world's ``truth/mimic.jsonl``, which records the finding each
report sentence describes) adds cluster health against that truth: ``purity`` and ``nmi`` of
the clusters against the findings, and ``fn_precision`` / ``fn_recall`` of the false-negative
mask over all sentence pairs (a pair is masked when both sentences fall in one cluster, and
right when both describe the same finding or are both normal). Without ``--truth`` they are
null.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from cmcgns_cli.console import emit_json, err
from cmcgns_cli.console import out as stdout
from cmcgns_cli.data.mgca_text import mgca_split_sentences
from cmcgns_cli.data.paired import PadCollate, PairedDataset
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.data.reports import split_sentences
from cmcgns_cli.data.tokenize import token_cache
from cmcgns_cli.embedding.encode import text_embeddings, to_device
from cmcgns_cli.embedding.runs import open_run
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.runtime import resolve_device


def kept_sentence_texts(ds: PairedDataset, row: int, manifest_sents: list[str]) -> list[str]:
    """The texts of the sentences ``TokenCache.encode`` keeps for ``row``, in order."""
    _, _, n = ds.tokens.encode(row, ds.max_length, ds.max_sentences)
    texts = [
        t
        for t, toks in zip(manifest_sents, ds.tokens.row_sentences(row), strict=False)
        if len(toks)
    ]
    return texts[:n]


TRUTH_KEYS = ("purity", "nmi", "fn_precision", "fn_recall")


def read_sentence_truth(
    path: Path, split: Callable[[str], list[str]] = split_sentences
) -> dict[str, dict[str, str]]:
    """``{image_id: {cleaned sentence: finding}}`` from a synthetic world's truth JSONL whose
    records carry ``sentences`` ([{"text", "finding"}]); each text is split and cleaned by
    ``split``, the rule ``prepare`` used (cmcgns's by default; the authors' for MIMIC data
    prepared under ``--protocol mgca``), so it matches the prepared sentences. Raises
    BadInputError naming the file when it is missing, unreadable or records no sentences."""
    if not path.is_file():
        raise BadInputError(f"{path}: truth file not found")
    out: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                items = rec.get("sentences") or []
                table = out.setdefault(str(rec["image_id"]), {})
                for item in items:
                    for piece in split(str(item["text"])):
                        table[piece] = str(item["finding"])
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise BadInputError(f"{path}: line {n} is not a truth record ({exc})") from None
    if not any(out.values()):
        raise BadInputError(
            f"{path}: no record has per-sentence findings (`sentences`); "
            "regenerate the world with `cmcgns synth`"
        )
    return out


def truth_metrics(assign: np.ndarray, findings: list[str]) -> dict[str, float | None]:
    """Cluster health against the findings, for sentences with cluster ``assign`` (n,) int and
    finding labels ``findings`` (n,): ``purity`` (share of sentences in their cluster's
    majority finding), ``nmi`` (scikit-learn's normalized mutual information, arithmetic
    mean), ``fn_precision`` / ``fn_recall`` of the same-cluster mask over ordered pairs
    a != b, against "same finding (or both normal)". None where undefined (no pairs)."""
    from sklearn.metrics import normalized_mutual_info_score

    if len(assign) == 0:
        return dict.fromkeys(TRUTH_KEYS)
    _, f_idx = np.unique(np.asarray(findings), return_inverse=True)
    _, k_idx = np.unique(assign, return_inverse=True)
    table = np.zeros((k_idx.max() + 1, f_idx.max() + 1), dtype=np.int64)
    np.add.at(table, (k_idx, f_idx), 1)

    def pairs(c: np.ndarray) -> int:
        return int((c * (c - 1)).sum())

    masked, right, both = pairs(table.sum(1)), pairs(table.sum(0)), pairs(table)
    return {
        "purity": float(table.max(axis=1).sum() / len(assign)),
        "nmi": float(normalized_mutual_info_score(f_idx, k_idx)),
        "fn_precision": both / masked if masked else None,
        "fn_recall": both / right if right else None,
    }


@torch.no_grad()
def cluster_table(
    run: Any,
    data: Path,
    split: str = "train",
    limit: int = 5000,
    top: int = 5,
    batch_size: int = 64,
    truth: Path | None = None,
) -> dict[str, Any]:
    km = run.model.kmeans
    if km is None:
        raise BadInputError(
            f"{run.path}: the run trains without clustering (loss.clustering false)"
        )
    if not bool(km.initialized):
        why = (
            "; with loss.cluster_gate = spread they wait until the clustered features spread"
            " (cluster_feature_cos in metrics.jsonl at or below loss.cluster_init_threshold)"
            if run.cfg.loss.cluster_gate == "spread"
            else ""
        )
        raise BadInputError(
            f"{run.path}: the k-means centroids were never initialised in training{why}"
        )
    prepared = open_prepared(data)
    cache = token_cache(prepared, run.tok, fallback_dir=run.path)
    ds = PairedDataset(prepared, split, cache, run.cfg.data, train=False)
    idx = np.arange(len(ds))
    if limit and len(ds) > limit:
        idx = np.sort(np.random.default_rng(0).choice(len(ds), limit, replace=False))
    loader = DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size, shuffle=False,
                        collate_fn=PadCollate(cache.pad_id, wire=True))  # fmt: skip
    col = prepared.manifest["sentences"]
    ids = prepared.manifest["id"]
    authors_rule = prepared.meta.get("sentence_split") == "authors"
    split = mgca_split_sentences if authors_rule else split_sentences
    sentence_truth = read_sentence_truth(truth, split) if truth is not None else None
    texts: list[str] = []
    findings: list[str | None] = []
    embs: list[torch.Tensor] = []
    for batch in loader:
        rows = batch["index"].tolist()
        out = text_embeddings(run.model, to_device(batch, run.device))
        for j, row in enumerate(rows):
            n = int(out["sentence_mask"][j].sum())
            kept = kept_sentence_texts(ds, row, [str(s) for s in list(col.iat[row])])
            texts.extend(kept[:n])
            if sentence_truth is not None:
                table = sentence_truth.get(str(ids.iat[row]), {})
                findings.extend(table.get(t) for t in kept[:n])
            embs.append(out["sentences"][j, : len(kept[:n])].float().cpu())
    z = torch.cat(embs) if embs else torch.zeros(0, km.centroids.shape[1])
    sims = km.similarities(z.to(km.centroids.device)).cpu()
    assign = sims.argmax(dim=1).numpy()
    cos = sims.max(dim=1).values.numpy()
    clusters = []
    for k in range(km.num_clusters):
        members = np.flatnonzero(assign == k)
        counts = Counter(texts[i] for i in members)
        best: dict[str, float] = defaultdict(lambda: -2.0)
        for i in members:
            best[texts[i]] = max(best[texts[i]], float(cos[i]))
        nearest = sorted(best.items(), key=lambda kv: -kv[1])[:top]
        clusters.append(
            {
                "cluster": k,
                "size": int(len(members)),
                "share": float(len(members) / max(len(texts), 1)),
                "distinct": len(counts),
                "mean_cos": float(cos[members].mean()) if len(members) else None,
                "nearest": [{"sentence": t, "cos": c, "count": counts[t]} for t, c in nearest],
            }
        )
    clusters.sort(key=lambda c: -c["size"])
    health: dict[str, Any] = dict.fromkeys(TRUTH_KEYS)
    matched = None
    if sentence_truth is not None:
        known = [i for i, f in enumerate(findings) if f is not None]
        if not known:
            raise BadInputError(
                f"{truth}: no sentence of {data} ({split}) matches a truth sentence; "
                "is it the truth file of the world this data was prepared from?"
            )
        health = truth_metrics(assign[known], [str(findings[i]) for i in known])
        matched = len(known)
    counts = np.bincount(assign, minlength=km.num_clusters) if len(assign) else np.zeros(1)
    share = counts / max(int(counts.sum()), 1)
    return {
        "checkpoint": str(run.path),
        "data": str(data),
        "split": split,
        "reports": int(len(idx)),
        "sentences": len(texts),
        "num_clusters": km.num_clusters,
        "empty_clusters": sum(c["size"] == 0 for c in clusters),
        "cluster_top_share": float(share.max()),
        # + 0.0 turns the -0.0 of a single cluster into 0.0
        "cluster_entropy": float(-(share[share > 0] * np.log(share[share > 0])).sum()) + 0.0,
        "truth": None if truth is None else str(truth),
        "truth_sentences": matched,
        **health,
        "clusters": clusters,
    }


def write_csv(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["cluster", "size", "share", "distinct", "mean_cos", "rank", "sentence", "cos", "count"]
        )
        for c in result["clusters"]:
            base = [c["cluster"], c["size"], f"{c['share']:.4f}", c["distinct"],
                    "" if c["mean_cos"] is None else f"{c['mean_cos']:.4f}"]  # fmt: skip
            if not c["nearest"]:
                w.writerow([*base, "", "", "", ""])
            for r, s in enumerate(c["nearest"]):
                w.writerow([*base, r, s["sentence"], f"{s['cos']:.4f}", s["count"]])
    os.replace(tmp, path)


def run_clusters(
    *,
    checkpoint: Path,
    data: Path,
    split: str,
    limit: int,
    top: int,
    out: Path | None,
    device: str,
    as_json: bool,
    truth: Path | None = None,
) -> dict[str, Any]:
    if truth is not None and not Path(truth).is_file():
        raise BadInputError(f"{truth}: truth file not found")
    run = open_run(checkpoint, resolve_device(device), option="--checkpoint")
    result = cluster_table(run, data, split, limit, top, truth=truth)
    if out is not None:
        write_csv(Path(out), result)
        err.print(f"wrote {out}")
    if as_json:
        emit_json(result)
        return result
    from rich.table import Table

    title = (
        f"k-means clusters of {result['sentences']} {split} sentences "
        f"({result['empty_clusters']} of {result['num_clusters']} empty)"
    )
    table = Table(title=title)
    for name in ("cluster", "size", "share", "distinct", "nearest sentences (cos, count)"):
        table.add_column(name)
    for c in result["clusters"]:
        near = "\n".join(f"{s['sentence']} ({s['cos']:.2f}, {s['count']})" for s in c["nearest"])
        table.add_row(
            str(c["cluster"]), str(c["size"]), f"{c['share']:.3f}", str(c["distinct"]), near
        )
    stdout.print(table)
    if truth is not None:
        fmt = {k: "n/a" if result[k] is None else f"{result[k]:.3f}" for k in TRUTH_KEYS}
        stdout.print(
            f"against {truth} ({result['truth_sentences']} sentences): purity {fmt['purity']}, "
            f"NMI {fmt['nmi']}, false-negative mask precision {fmt['fn_precision']}, "
            f"recall {fmt['fn_recall']}"
        )
    return result
