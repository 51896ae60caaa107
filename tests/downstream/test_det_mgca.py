"""Detection scored as the published numbers were (``--protocol mgca``), on hand-made boxes.

Expectations come from pycocotools itself (``COCOeval``) and from a torchmetrics-0.8-style
average precision written out below for one class (float32 recall, float32 recall points,
precision read at the first detection reaching each point), not from the project's code.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cmcgns_cli.downstream.det_mgca import (
    MgcaImages,
    _greedy_nms,
    mgca_postprocess,
    scored_images,
)
from cmcgns_cli.downstream.yolo import STRIDES, default_anchors

THRESHOLDS = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]


def _pycocotools_map(gt_boxes: list, det_boxes: list, det_scores: list) -> float:
    """mAP over THRESHOLDS straight from pycocotools (xyxy inputs, one class)."""
    images = [{"id": i + 1} for i in range(len(gt_boxes))]
    anns, dets = [], []
    for i, boxes in enumerate(gt_boxes):
        for x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})  # fmt: skip
    for i, (boxes, scores) in enumerate(zip(det_boxes, det_scores, strict=True)):
        for (x1, y1, x2, y2), s in zip(boxes, scores, strict=True):
            dets.append({"image_id": i + 1, "category_id": 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.params.iouThrs = np.array(THRESHOLDS)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _tm08_ap(is_tp_by_score: list[bool], n_gt: int) -> float:
    """One class, one IoU threshold, torchmetrics 0.8's arithmetic written out by hand:
    detections already sorted by score; recall and precision in float32; the 101 recall
    points in float32 (0.70 is float32(0.7) there, the same number as 7 / 10 in float32);
    at each point, the envelope precision of the first detection whose recall reaches it,
    0 when none does."""
    tp = fp = 0
    recall, precision = [], []
    for hit in is_tp_by_score:
        tp, fp = tp + hit, fp + (not hit)
        recall.append(np.float32(tp) / np.float32(n_gt))
        precision.append(np.float32(tp) / np.float32(tp + fp))
    envelope = [max(precision[i:]) for i in range(len(precision))]
    total = 0.0
    for k in range(101):
        point = np.float32(k / 100)
        reached = [i for i, r in enumerate(recall) if r >= point]
        total += float(envelope[reached[0]]) if reached else 0.0
    return total / 101


BOX = [10.0, 10.0, 50.0, 50.0]


def test_seven_of_ten_torchmetrics_vs_pycocotools() -> None:
    # ten images, one box each; seven found exactly (scores 0.9, 0.85, ...), three missed
    gt = [[BOX] for _ in range(10)]
    det = [[BOX] for _ in range(7)] + [[] for _ in range(3)]
    scores = [[0.9 - 0.05 * i] for i in range(7)] + [[] for _ in range(3)]
    expected_tm = _tm08_ap([True] * 7, 10)  # exact boxes: the same at every threshold
    assert expected_tm == pytest.approx(71 / 101)  # 0.7030: the point 0.70 is reached
    expected_coco = _pycocotools_map(gt, det, scores)
    assert expected_coco == pytest.approx(70 / 101)  # 0.6931: its 0.7000000000000001 is not

    ours = MgcaImages(gt, [[0]] * 10, det, scores, [[0]] * 7 + [[]] * 3).scores()
    assert ours["map"] == pytest.approx(expected_tm, abs=1e-7)
    assert ours["map50"] == pytest.approx(expected_tm, abs=1e-7)

    from cmcgns_cli.metrics import coco_detections, coco_ground_truth, mean_average_precision

    def xywh(b: list) -> list:
        return [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in b]

    coco = mean_average_precision(
        coco_ground_truth([str(i) for i in range(10)], [xywh(b) for b in gt], [[0]] * 10, ["x"]),
        coco_detections([xywh(b) for b in det], scores, [[0]] * 7 + [[]] * 3),
    )
    assert coco["map"] == pytest.approx(expected_coco, abs=1e-12)


def test_missed_image_dropped_and_false_positive_image_dropped() -> None:
    # image 0: found; image 1: its box missed (no detection); image 2: no box, one detection
    gt = [[BOX], [BOX], []]
    det = [[BOX], [], [[60.0, 60.0, 90.0, 90.0]]]
    scores = [[0.9], [], [0.95]]
    scored = scored_images([len(b) for b in gt], [len(d) for d in det])
    assert scored.tolist() == [0]
    mg = MgcaImages(gt, [[0], [0], []], det, scores, [[0], [], [0]])
    assert mg.scores(scored)["map"] == pytest.approx(_tm08_ap([True], 1))  # = 1.0
    assert mg.scores(scored)["map"] == pytest.approx(1.0)
    # every image, pooled: the false positive ranks first, then the hit; recall 1/2 at most
    every = mg.scores()["map"]
    assert every == pytest.approx(_tm08_ap([False, True], 2), abs=1e-7)
    # pycocotools agrees here (no float32 edge): 51 points of precision 1/2
    assert every == pytest.approx(_pycocotools_map(gt, det, scores), abs=1e-7)
    assert every == pytest.approx(51 * 0.5 / 101)


def test_match_needs_iou_strictly_above_threshold() -> None:
    # IoU exactly 0.5 (a box half as wide, inside): no match at 0.5 under torchmetrics'
    # rule (strictly above), a match under pycocotools' (at least)
    gt = [[[0.0, 0.0, 40.0, 40.0]]]
    det = [[[0.0, 0.0, 20.0, 40.0]]]
    p = MgcaImages(gt, [[0]], det, [[0.9]], [[0]]).precision()
    # thresholds 0.4 and 0.45 match (AP 1 at every point), 0.5 and above do not (AP 0)
    assert p[:2].min() == 1.0 and p[2:].max() == 0.0
    assert _pycocotools_map(gt, det, [[0.9]]) == pytest.approx(3 / 8)


def _raw_maps(size: int, cells: list[tuple[int, int, int, int, float]]) -> list[torch.Tensor]:
    """Raw head outputs (1, 3, H, W, 6) per stride, everything off (objectness logit -20,
    zero offsets) except ``cells``: (scale, anchor, y, x, objectness probability)."""
    maps = []
    for stride in STRIDES:
        m = torch.zeros(1, 3, size // stride, size // stride, 6)
        m[..., 4] = -20.0
        maps.append(m)
    for s, a, y, x, p in cells:
        maps[s][0, a, y, x, 4] = float(np.log(p / (1 - p)))
    return maps


def test_detection_below_half_objectness_is_dropped() -> None:
    size = 64
    anchors = default_anchors(size)
    # two far-apart cells at stride 8: objectness 0.49 (dropped) and 0.51 (kept)
    maps = _raw_maps(size, [(0, 0, 1, 1, 0.49), (0, 0, 6, 6, 0.51)])
    boxes, scores, labels = mgca_postprocess(maps, anchors)[0]
    assert len(boxes) == 1
    assert float(scores[0]) == pytest.approx(0.51, abs=1e-6)  # the objectness, not obj x cls
    # centre of cell (6, 6) at stride 8 with zero offsets: (6 + 0.5) * 8 = 52
    assert ((boxes[0, :2] + boxes[0, 2:]) / 2).tolist() == pytest.approx([52.0, 52.0])


def test_overlapping_detections_suppressed_with_darknet_iou() -> None:
    # plain IoU 52.2 / 109.8 = 0.475 (< 0.5: torchvision's NMS keeps both); with widths
    # counted x2 - x1 + 1: 68 / 132 = 0.515 (>= 0.5: the authors' NMS drops the second)
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [3.2, 0.0, 12.2, 9.0]])
    scores = torch.tensor([0.9, 0.8])
    from torchvision.ops import nms

    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert _greedy_nms(boxes, scores, 0.5).tolist() == [0]
    # lower-scored box first in memory: the higher one is still kept
    assert _greedy_nms(boxes.flip(0), scores.flip(0), 0.5).tolist() == [1]


def test_each_interval_resamples_its_own_image_set() -> None:
    from cmcgns_cli.downstream.intervals import attach_ci

    seen: dict[str, set] = {"map": set(), "map_coco": set()}

    def recorder(key: str, values: np.ndarray):
        def stat(idx: np.ndarray) -> float:
            seen[key].add((len(idx), int(idx.max())))
            return float(values[idx].mean())

        return stat

    scored = np.array([1.0, 0.0, 1.0])  # the 3 images the published rule kept
    every = np.array([1.0, 0.0, 1.0, 0.0, 0.0])  # all 5 test images
    result = {
        "metric": "map",
        "per_image": {"kind": "stat", "fns": {"map": recorder("map", scored)}, "n": 5,
                      "sets": {
                          "map": {"fn": recorder("map", scored), "n": 3, "strata": None},
                          "map_coco": {"fn": recorder("map_coco", every), "n": 5,
                                       "strata": np.array([1, 1, 1, 0, 0]),
                                       "strata_name": "has a box"},
                      }},
    }  # fmt: skip
    out = attach_ci(result, n_boot=50)
    assert {n for n, _ in seen["map"]} == {3} and max(m for _, m in seen["map"]) <= 2
    assert {n for n, _ in seen["map_coco"]} == {5}
    assert out["ci95_method_per_metric"]["map"]["images"] == 3
    assert out["ci95_method_per_metric"]["map_coco"]["stratified_by"] == "has a box"
    lo, hi = out["ci95"]["map"]
    assert 0.0 <= lo <= hi <= 1.0


def test_the_reason_for_no_scored_image_counts_each_side() -> None:
    from cmcgns_cli.downstream.detection import unscored_reason

    # boxes on images 0 and 2, a detection only on image 1: no image has both
    why = unscored_reason([1, 0, 2, 0], [0, 3, 0, 0])
    assert "scored no image" in why and "objectness >= 0.5" in why
    assert "of 4 test images 2 have a box, 1 have such a detection, 0 both" in why
