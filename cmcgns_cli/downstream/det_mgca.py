"""Detection mAP as the published MGCA / CM-CGNS numbers were computed (``--protocol mgca``).

The authors' detector evaluation (MGCA's ``ssl_detector.py``, reused by CM-CGNS) differs
from a COCO evaluation of every test image in three places, reproduced here:

1. Which detections: only boxes whose objectness (sigmoid of the objectness logit, the class
   score left out) is at least 0.5 are kept, and the score each box carries into the mAP is
   that objectness. Greedy non-maximum suppression then runs per class, highest objectness
   first, dropping every later box whose IoU with a kept one is at least 0.5; this IoU uses
   the old darknet pixel convention (a box from x1 to x2 is x2 - x1 + 1 pixels wide), in
   model-input pixels. No cap on the number of boxes (the mAP keeps the 100 best per image).
2. Which images: an image is scored only when it has at least one ground-truth box AND at
   least one detection left after step 1. An image whose boxes were all missed is dropped,
   not counted as a miss, and images without a box never contribute false positives.
3. The arithmetic: torchmetrics' ``MeanAveragePrecision`` of the release MGCA pins (0.8.x),
   over IoU 0.40:0.05:0.75, area "all", 100 detections per image. It follows the COCO
   recipe (per class and threshold, detections pooled over images by score, each matched
   greedily to the unmatched ground truth it overlaps most; precision made monotone;
   precision read at the 101 recall points 0, 0.01, ..., 1; mAP the mean over points,
   thresholds and classes) but in float32: recall = tp / n_gt and the recall points
   (``torch.linspace``) are float32, so a recall of exactly 0.7 reaches the point 0.70,
   which pycocotools' float64 point 0.7000000000000001 misses (ten images, one box each,
   seven exact hits: 0.7030 here, 0.6931 in pycocotools). A match also needs an IoU
   strictly above the threshold (pycocotools: at least), and the IoU has no +1.

Not reproduced: torchmetrics sorts with an unstable ``torch.argsort``, so tied scores pool
in an order that may vary; here ties keep image order (a stable sort), as pycocotools does.

Per-image matching is done once (``MgcaImages``); any resample of the scored images is then
only a re-pooling, which is how the bootstrap intervals of ``map`` are computed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cmcgns_cli.downstream.yolo import STRIDES, decode
from cmcgns_cli.metrics import DET_IOU_THRESHOLDS

CONF_THRES = 0.5  # the authors' conf_thres: objectness at least this
NMS_THRES = 0.5  # the authors' nms_thres: suppress IoU (darknet +1 convention) at least this
MAX_DETS = 100  # torchmetrics' largest max_detection_thresholds


def _darknet_iou(box: Tensor, others: Tensor) -> Tensor:
    """IoU of one xyxy box (4,) with (n, 4) boxes, widths counted as x2 - x1 + 1."""
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2] + 1).prod()
    areas = (others[:, 2:] - others[:, :2] + 1).prod(dim=1)
    return inter / (area + areas - inter + 1e-16)


def _greedy_nms(boxes: Tensor, scores: Tensor, thres: float) -> Tensor:
    """Indices kept by the authors' NMS (one class): best first, later boxes with IoU >=
    ``thres`` against a kept one removed. The loop runs once per kept box."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while len(order):
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if not len(rest):
            break
        order = rest[_darknet_iou(boxes[best], boxes[rest]) < thres]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


def mgca_postprocess(
    preds: list[Tensor], anchors: Tensor, conf_thres: float = CONF_THRES,
    nms_thres: float = NMS_THRES,
) -> list[tuple[Tensor, Tensor, Tensor]]:  # fmt: skip
    """The authors' decoding of raw YOLO maps (``yolo.YoloHead`` outputs, one (B, 3, H, W,
    5 + K) tensor per stride) -> per image (boxes (n, 4) xyxy in input pixels, objectness
    scores (n,), class indices (n,)); see the module doc, step 1."""
    boxes, obj, cls = [], [], []
    for s, raw in enumerate(preds):
        b = raw.shape[0]
        cxcywh = decode(raw, anchors[s], STRIDES[s]).reshape(b, -1, 4)
        xy, wh = cxcywh[..., :2], cxcywh[..., 2:]
        boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], dim=-1))
        obj.append(torch.sigmoid(raw[..., 4]).reshape(b, -1))
        cls.append(torch.sigmoid(raw[..., 5:]).reshape(b, -1, raw.shape[-1] - 5).argmax(-1))
    all_boxes, all_obj, all_cls = torch.cat(boxes, 1), torch.cat(obj, 1), torch.cat(cls, 1)
    out = []
    for img_boxes, img_obj, img_cls in zip(all_boxes, all_obj, all_cls, strict=True):
        keep = img_obj >= conf_thres
        bx, sc, lb = img_boxes[keep], img_obj[keep], img_cls[keep]
        parts = []
        for c in torch.unique(lb):  # per class, in class order, as the authors concatenate
            idx = torch.nonzero(lb == c).squeeze(1)
            parts.append(idx[_greedy_nms(bx[idx], sc[idx], nms_thres)])
        kept = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=bx.device)
        out.append((bx[kept], sc[kept], lb[kept]))
    return out


def scored_images(n_gt: list[int], n_det: list[int]) -> np.ndarray:
    """Positions of the images the authors score: at least one box and one detection."""
    return np.flatnonzero((np.asarray(n_gt) > 0) & (np.asarray(n_det) > 0))


def _iou32(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(D, G) float32 IoU of xyxy boxes, no +1 (torchvision's ``box_iou``)."""
    lt = np.maximum(det[:, None, :2], gt[None, :, :2])
    rb = np.minimum(det[:, None, 2:], gt[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    a_det = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    a_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return (inter / (a_det[:, None] + a_gt[None, :] - inter)).astype(np.float32)


def _recall_points() -> np.ndarray:
    # torchmetrics 0.8 keeps torch.linspace's float32 values (0.1 is 0.099999994 there)
    return torch.linspace(0.0, 1.0, 101, dtype=torch.float32).numpy()


class MgcaImages:
    """Per-image, per-class matches of detections to ground truth (torchmetrics 0.8 rules),
    pooled into the mAP of any list of image positions (repeats allowed).

    ``gt_boxes[i]`` (g, 4) and ``det_boxes[i]`` (d, 4) are xyxy in any common pixel unit,
    ``gt_labels`` / ``det_labels`` integer classes, ``det_scores`` the detection scores.
    """

    def __init__(self, gt_boxes: list, gt_labels: list, det_boxes: list, det_scores: list,
                 det_labels: list, iou_thresholds=DET_IOU_THRESHOLDS) -> None:  # fmt: skip
        self.thresholds = np.asarray(iou_thresholds, dtype=np.float32)
        self.n = len(gt_boxes)
        labels = [np.asarray(v, dtype=np.int64).reshape(-1) for v in (*gt_labels, *det_labels)]
        self.classes = np.unique(np.concatenate(labels)) if labels else np.zeros(0, np.int64)
        # per class: per image (scores (d,), matches (T, d) bool, ground-truth count)
        self.records: dict[int, list[tuple[np.ndarray, np.ndarray, int]]] = {}
        for c in self.classes.tolist():
            per_image = []
            for i in range(self.n):
                per_image.append(self._match(
                    np.asarray(gt_boxes[i], np.float32).reshape(-1, 4)[
                        np.asarray(gt_labels[i]).reshape(-1) == c],
                    np.asarray(det_boxes[i], np.float32).reshape(-1, 4)[
                        np.asarray(det_labels[i]).reshape(-1) == c],
                    np.asarray(det_scores[i], np.float32).reshape(-1)[
                        np.asarray(det_labels[i]).reshape(-1) == c],
                ))  # fmt: skip
            self.records[c] = per_image

    def _match(self, gt: np.ndarray, det: np.ndarray, scores: np.ndarray) -> tuple:
        order = np.argsort(-scores, kind="stable")[:MAX_DETS]
        det, scores = det[order], scores[order]
        t = len(self.thresholds)
        matches = np.zeros((t, len(det)), dtype=bool)
        if len(det) and len(gt):
            ious = _iou32(det, gt)
            taken = np.zeros((t, len(gt)), dtype=bool)
            rows = np.arange(t)
            for d in range(len(det)):  # greedy in score order; all thresholds at once
                cand = np.where(taken, np.float32(0), ious[d][None, :])  # (T, G)
                best = cand.argmax(axis=1)
                ok = cand[rows, best] > self.thresholds
                taken[rows[ok], best[ok]] = True
                matches[ok, d] = True
        return scores, matches, len(gt)

    def precision(self, idx: np.ndarray | None = None) -> np.ndarray:
        """(T, 101, K) interpolated precision of the images at ``idx`` (default: all); -1
        for a class without any ground-truth box there."""
        pos = np.arange(self.n) if idx is None else np.asarray(idx, dtype=np.int64)
        rec = _recall_points()
        t = len(self.thresholds)
        out = -np.ones((t, len(rec), len(self.classes)), dtype=np.float32)
        for k, c in enumerate(self.classes.tolist()):
            recs = [self.records[c][i] for i in pos]
            n_gt = sum(r[2] for r in recs)
            if n_gt == 0:
                continue
            scores = np.concatenate([r[0] for r in recs]) if recs else np.zeros(0, np.float32)
            matches = (np.concatenate([r[1] for r in recs], axis=1) if recs
                       else np.zeros((t, 0), bool))  # fmt: skip
            order = np.argsort(-scores, kind="stable")
            tp = np.cumsum(matches[:, order], axis=1, dtype=np.float32)
            fp = np.cumsum(~matches[:, order], axis=1, dtype=np.float32)
            nd = tp.shape[1]
            prec = np.zeros((t, len(rec)), dtype=np.float32)
            if nd:
                recall = tp / np.float32(n_gt)
                pr = tp / (fp + tp)
                pr = np.flip(np.maximum.accumulate(np.flip(pr, axis=1), axis=1), axis=1)
                for j in range(t):
                    inds = np.searchsorted(recall[j], rec, side="left")
                    reach = np.flatnonzero(inds >= nd)
                    num = int(reach[0]) if len(reach) else len(rec)
                    prec[j, :num] = pr[j, inds[:num]]
            out[:, :, k] = prec
        return out

    def scores(self, idx: np.ndarray | None = None) -> dict[str, float]:
        """``map`` (mean over thresholds, recall points and classes) and ``map50`` (IoU
        0.5 alone, NaN when 0.5 is not a threshold); NaN without any ground-truth box."""
        p = self.precision(idx)

        def mean(x: np.ndarray) -> float:
            valid = x[x > -1]
            return float(valid.astype(np.float64).mean()) if valid.size else float("nan")

        at50 = np.flatnonzero(np.isclose(self.thresholds, 0.5))
        return {"map": mean(p), "map50": mean(p[at50[0]]) if len(at50) else float("nan")}

    def __call__(self, idx: np.ndarray) -> float:
        """``map`` of the images at positions ``idx`` (the bootstrap's statistic)."""
        return self.scores(idx)["map"]
