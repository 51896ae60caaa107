"""Bootstrap of detection mAP without re-matching: pycocotools' per-image evaluation reused.

``COCOeval.evaluate`` matches detections to boxes per (category, image) and stores the
result in ``evalImgs`` (laid out category-major, then area range, then image);
``accumulate`` then only pools those per-image records into precision / recall. A
bootstrap resample of test images is therefore a re-ordered list of per-image records
(with repeats) given to ``accumulate`` under fresh image ids: the same matching, pooled over
the resampled images, exactly as pycocotools would score a test set holding those images
(each repeat a separate image). Only the area range "all" and 100 detections per image are
kept, as in ``metrics.mean_average_precision``.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from cmcgns_cli.metrics import DET_IOU_THRESHOLDS


class MapResampler:
    """mAP over the IoU thresholds of ``metrics.mean_average_precision`` for any image
    subset (positions into the ground truth's ``images``, repeats allowed)."""

    def __init__(self, ground_truth: dict, detections: list[dict],
                 iou_thresholds=DET_IOU_THRESHOLDS) -> None:  # fmt: skip
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        self.n = len(ground_truth["images"])
        self.empty = not ground_truth["annotations"]
        thresholds = np.asarray(sorted({*map(float, iou_thresholds)}), dtype=np.float64)
        self.wanted = np.array([np.isclose(thresholds, t).argmax() for t in iou_thresholds])
        if self.empty:
            return
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = copy.deepcopy(ground_truth)
            gt.createIndex()
            if detections:
                dt = gt.loadRes(list(detections))
            else:
                dt = COCO()
                dt.dataset = {"images": ground_truth["images"], "annotations": [],
                              "categories": ground_truth["categories"]}  # fmt: skip
                dt.createIndex()
            ev = COCOeval(gt, dt, iouType="bbox")
            ev.params.iouThrs = thresholds
            ev.params.areaRng, ev.params.areaRngLbl = [ev.params.areaRng[0]], ["all"]
            ev.params.maxDets = [100]
            ev.evaluate()
        self.ev = ev
        self.k = len(ev.params.catIds)
        self.per_image = list(ev.evalImgs)  # (K x 1 area x I) records, image fastest
        self.image_ids = list(ev._paramsEval.imgIds)

    def __call__(self, idx: np.ndarray) -> float:
        """mAP of the images at positions ``idx`` (NaN without any ground-truth box)."""
        if self.empty:
            return float("nan")
        ev, n_img = self.ev, len(self.image_ids)
        pos = np.asarray(idx, dtype=np.int64)
        # positions in the COCO image list: the ground truth's images are ids 1..N in order
        order = {img_id: i for i, img_id in enumerate(self.image_ids)}
        cols = [order[i + 1] for i in pos]
        ev.evalImgs = [self.per_image[k * n_img + c] for k in range(self.k) for c in cols]
        fresh = list(range(1, len(cols) + 1))
        ev.params = copy.copy(ev.params)
        ev.params.imgIds = fresh
        ev._paramsEval = copy.copy(ev._paramsEval)
        ev._paramsEval.imgIds = fresh
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        precision = ev.eval["precision"][self.wanted, :, :, 0, -1]
        valid = precision[precision > -1]
        return float(valid.mean()) if valid.size else float("nan")
