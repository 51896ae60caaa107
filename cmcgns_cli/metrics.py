"""Downstream metrics: AUROC (Mann-Whitney U, equal to scikit-learn's), accuracy
(scikit-learn), detection mAP (pycocotools), Dice."""

from __future__ import annotations

import json

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score


def auroc(y_true: np.ndarray, y_score: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-class AUROC and their macro mean for (N, C) targets in {0, 1} and scores.

    A class whose test targets are all one value has no AUROC: it is reported as NaN and
    left out of the macro mean (scikit-learn would raise). Each AUROC is the Mann-Whitney U
    statistic with mid-ranks for tied scores, U / (n_pos n_neg), which equals scikit-learn's
    ``roc_auc_score`` (the trapezoidal ROC area) to rounding and is ~1000x faster: the
    1000-resample bootstrap interval of every evaluate calls it 1000 times per class.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(len(y_score), -1)
    out: dict[str, float] = {}
    for c, name in enumerate(names):
        col = y_true[:, c]
        keep = ~np.isnan(col)
        if len(np.unique(col[keep])) < 2:
            out[name] = float("nan")
            continue
        out[name] = _mann_whitney_auroc(col[keep] > 0.5, y_score[keep, c])
    valid = [v for v in out.values() if not np.isnan(v)]
    out["macro_auroc"] = float(np.mean(valid)) if valid else float("nan")
    return out


def _mann_whitney_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of (n,) scores for (n,) boolean truths holding both values: mid-ranks of the
    scores (ties share their mean rank), U = rank sum of positives - n_pos (n_pos + 1) / 2."""
    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def accuracy(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against integer class targets."""
    return float(accuracy_score(np.asarray(y_true, dtype=np.int64), np.argmax(logits, axis=1)))


# --- detection and segmentation -------------------------------------------------------------

#: IoU thresholds of the paper's detection table: 0.4, 0.45, ..., 0.75.
DET_IOU_THRESHOLDS = tuple(round(0.4 + 0.05 * i, 2) for i in range(8))


def coco_ground_truth(
    image_ids: list[str], boxes: list, labels: list, categories: list[str]
) -> dict:
    """A COCO ground-truth dict. ``boxes[i]`` is a list of [x, y, w, h] of image ``i``,
    ``labels[i]`` the category index (0-based into ``categories``) of each box."""
    images = [{"id": i + 1, "file_name": str(name)} for i, name in enumerate(image_ids)]
    annotations = []
    for i, (img_boxes, img_labels) in enumerate(zip(boxes, labels, strict=True)):
        for box, label in zip(img_boxes, img_labels, strict=True):
            x, y, w, h = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(categories)]
    return {"images": images, "annotations": annotations, "categories": cats}


def coco_detections(boxes: list, scores: list, labels: list) -> list[dict]:
    """COCO result records; image ``i`` of the lists is COCO image id ``i + 1``."""
    out = []
    for i, (img_boxes, img_scores, img_labels) in enumerate(
        zip(boxes, scores, labels, strict=True)
    ):
        for box, score, label in zip(img_boxes, img_scores, img_labels, strict=True):
            out.append({
                "image_id": i + 1, "category_id": int(label) + 1,
                "bbox": [float(v) for v in box], "score": float(score),
            })  # fmt: skip
    return out


def mean_average_precision(
    ground_truth: dict, detections: list[dict], iou_thresholds=DET_IOU_THRESHOLDS
) -> dict[str, float]:
    """COCO-style mAP with pycocotools (area "all", up to 100 detections per image).

    ``map`` is the mean over ``iou_thresholds`` (the paper's 0.4:0.05:0.75), ``map50`` the
    value at IoU 0.5. Images without boxes count: every detection on them is a false
    positive. A set with no ground-truth box at all has no mAP (NaN).
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    thresholds = np.asarray(sorted({*map(float, iou_thresholds), 0.5}), dtype=np.float64)
    if not ground_truth["annotations"]:
        return {"map": float("nan"), "map50": float("nan")}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = json.loads(json.dumps(ground_truth))
        gt.createIndex()
        dt = gt.loadRes(list(detections)) if detections else COCO()
        if not detections:
            dt.dataset = {"images": ground_truth["images"], "annotations": [],
                          "categories": ground_truth["categories"]}  # fmt: skip
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = thresholds
        ev.evaluate()
        ev.accumulate()
    # precision: (T, recall points, K, area ranges, max dets); -1 where undefined.
    precision = ev.eval["precision"][:, :, :, 0, -1]

    def _mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else float("nan")

    wanted = np.array([np.isclose(thresholds, t).argmax() for t in iou_thresholds])
    at50 = int(np.isclose(thresholds, 0.5).argmax())
    return {"map": _mean(precision[wanted]), "map50": _mean(precision[at50])}


def dice_per_image(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice of binary masks (N, H, W). An image whose truth is empty scores 1 when
    the prediction is empty too and 0 otherwise (the paper's protocol)."""
    p = np.asarray(pred).reshape(len(pred), -1) > 0
    t = np.asarray(truth).reshape(len(truth), -1) > 0
    inter = (p & t).sum(1).astype(np.float64)
    total = (p.sum(1) + t.sum(1)).astype(np.float64)
    empty_truth = t.sum(1) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
    return np.where(empty_truth, (p.sum(1) == 0).astype(np.float64), scores)


def dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``dice``: mean over images of :func:`dice_per_image`; also the mean over images with a
    non-empty truth (``dice_nonempty``) and the share of empty truths predicted empty."""
    scores = dice_per_image(pred, truth)
    empty = np.asarray(truth).reshape(len(truth), -1).max(1) == 0 if len(truth) else np.zeros(0)
    return {
        "dice": float(scores.mean()) if len(scores) else float("nan"),
        "dice_nonempty": float(scores[~empty].mean()) if (~empty).any() else float("nan"),
        "empty_correct": float(scores[empty].mean()) if empty.any() else float("nan"),
    }


def dice_batch_mean(per_image: np.ndarray, batch_size: int) -> float:
    """Mean over consecutive batches of ``batch_size`` images of each batch's mean Dice
    (the last batch may be smaller and still weighs as one), for (N,) per-image Dice in
    evaluation order. The published segmentation numbers were averaged this way (MGCA's
    segmenter logs each test batch's mean Dice and averages the batch values); with equal
    batches it equals the per-image mean. NaN for no image. Raises ValueError for a batch
    size below 1."""
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} must be at least 1")
    v = np.asarray(per_image, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        return float("nan")
    starts = np.arange(0, len(v), batch_size)
    sums = np.add.reduceat(v, starts)
    sizes = np.diff(np.append(starts, len(v)))
    return float(np.mean(sums / sizes))


# --- retrieval ------------------------------------------------------------------------------


def _relevance(
    shape: tuple[int, int], query_keys: np.ndarray | None, gallery_keys: np.ndarray | None
) -> np.ndarray:
    q, g = shape
    if query_keys is None and gallery_keys is None:
        if q != g:
            raise ValueError(f"a {q} x {g} similarity matrix needs keys to say which items match")
        return np.eye(q, dtype=bool)
    qk = np.arange(q) if query_keys is None else np.asarray(query_keys)
    gk = np.arange(g) if gallery_keys is None else np.asarray(gallery_keys)
    return qk[:, None] == gk[None, :]


def _ranked_hits(
    sims: np.ndarray, k: int, query_keys: np.ndarray | None, gallery_keys: np.ndarray | None
) -> np.ndarray | None:
    """(Q, min(k, G)) relevance of each query's k most similar gallery items, best first
    (ties go to the lower index); None when there are no queries."""
    sims = np.asarray(sims, dtype=np.float64)
    rel = _relevance(sims.shape, query_keys, gallery_keys)
    if sims.shape[0] == 0:
        return None
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(rel, top, axis=1)


def recall_at_k(
    sims: np.ndarray,
    ks: tuple[int, ...] = (1, 5, 10),
    query_keys: np.ndarray | None = None,
    gallery_keys: np.ndarray | None = None,
) -> dict[int, float]:
    """Recall@K of a (Q, G) similarity matrix: the share of queries with at least one
    relevant gallery item among their K most similar. Relevant = equal keys (default: the
    diagonal, query i <-> gallery i). K larger than G counts the whole gallery."""
    hits = _ranked_hits(sims, max(ks), query_keys, gallery_keys)
    if hits is None:
        return {int(k): float("nan") for k in ks}
    return {int(k): float(hits[:, :k].any(axis=1).mean()) for k in ks}


def precision_at_k(
    sims: np.ndarray,
    ks: tuple[int, ...] = (1, 5, 10),
    query_keys: np.ndarray | None = None,
    gallery_keys: np.ndarray | None = None,
) -> dict[int, float]:
    """Precision@K: the mean share of relevant items among each query's K most similar
    (the CheXpert 5x200 retrieval score, where relevant = same class)."""
    hits = _ranked_hits(sims, max(ks), query_keys, gallery_keys)
    if hits is None:
        return {int(k): float("nan") for k in ks}
    return {int(k): float(hits[:, : min(k, hits.shape[1])].mean()) for k in ks}
