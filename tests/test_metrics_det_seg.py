"""mAP against pycocotools' own evaluation; Dice on hand-made masks (empty ones included)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from cmcgns_cli.metrics import (
    coco_detections,
    coco_ground_truth,
    dice,
    dice_per_image,
    mean_average_precision,
)

GT_BOXES = [[[10, 10, 20, 20], [50, 50, 10, 30]], [], [[0, 0, 40, 40]]]  # image 2: no boxes
GT_LABELS = [[0, 1], [], [0]]
DETS = (
    [[[11, 9, 20, 21], [48, 52, 12, 26], [70, 70, 5, 5]], [[5, 5, 10, 10]], [[4, 2, 36, 40]]],
    [[0.9, 0.8, 0.7], [0.95], [0.6]],
    [[0, 1, 0], [0], [0]],
)


def _pycocotools(gt: dict, dets: list[dict], thresholds: np.ndarray) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iouType="bbox")
        ev.params.iouThrs = thresholds
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def test_map_equals_pycocotools_summary() -> None:
    gt = coco_ground_truth(["a", "b", "c"], GT_BOXES, GT_LABELS, ["opacity", "device"])
    dets = coco_detections(*DETS)
    ours = mean_average_precision(gt, dets)
    paper = _pycocotools(gt, dets, np.array([0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]))
    default = _pycocotools(gt, dets, np.linspace(0.5, 0.95, 10))
    assert ours["map"] == pytest.approx(paper[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(default[1], abs=1e-9)
    assert 0.0 < ours["map"] < 1.0  # the toy set has misses, false positives and a loose box


def test_map_perfect_and_false_positive_on_empty_image() -> None:
    gt = coco_ground_truth(["a", "b"], [[[10, 10, 20, 20]], []], [[0], []], ["x"])
    perfect = coco_detections([[[10, 10, 20, 20]], []], [[0.9], []], [[0], []])
    assert mean_average_precision(gt, perfect) == pytest.approx({"map": 1.0, "map50": 1.0})
    # A higher-scored detection on the image without boxes halves precision at recall 1.
    fp = coco_detections([[[10, 10, 20, 20]], [[1, 1, 5, 5]]], [[0.5], [0.9]], [[0], [0]])
    assert mean_average_precision(gt, fp)["map"] == pytest.approx(0.5, abs=0.01)
    assert mean_average_precision(gt, [])["map"] == 0.0


def test_dice_hand_made() -> None:
    truth = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = 1  # 4 px
    pred[0, :2, :1] = 1  # 2 px inside: 2*2/(4+2)
    truth[1, 0, 0] = 1  # missed entirely
    pred[2, 3, 3] = 1  # empty truth, non-empty prediction: 0
    # image 3: both empty: 1
    per = dice_per_image(pred, truth)
    assert per.tolist() == pytest.approx([2 / 3, 0.0, 0.0, 1.0])
    out = dice(pred, truth)
    assert out["dice"] == pytest.approx((2 / 3 + 1) / 4)
    assert out["dice_nonempty"] == pytest.approx(1 / 3)
    assert out["empty_correct"] == pytest.approx(0.5)
