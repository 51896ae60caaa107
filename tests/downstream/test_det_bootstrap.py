"""Detection mAP on bootstrap resamples equals pycocotools on a test set built from them."""

from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.downstream.det_bootstrap import MapResampler
from cmcgns_cli.metrics import coco_detections, coco_ground_truth, mean_average_precision


def _world(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    boxes, labels, pb, ps, pl = [], [], [], [], []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        b = [[*rng.uniform(0, 100, 2), *rng.uniform(10, 40, 2)] for _ in range(k)]
        boxes.append(b)
        labels.append([int(rng.integers(0, 2)) for _ in range(k)])
        pred = [[x + rng.normal(0, 5), y + rng.normal(0, 5), w, h] for x, y, w, h in b]
        pred.append([*rng.uniform(0, 100, 2), 20.0, 20.0])  # one false positive per image
        pb.append(pred)
        ps.append(list(rng.random(len(pred))))
        pl.append([int(rng.integers(0, 2)) for _ in pred])
    return boxes, labels, pb, ps, pl


def _reference(sub, boxes, labels, pb, ps, pl) -> float:
    """pycocotools' own flow on a test set holding exactly the images ``sub`` (repeats as
    separate images)."""
    gt = coco_ground_truth([f"i{k}" for k in range(len(sub))], [boxes[i] for i in sub],
                           [labels[i] for i in sub], ["a", "b"])  # fmt: skip
    dt = coco_detections([pb[i] for i in sub], [ps[i] for i in sub], [pl[i] for i in sub])
    return mean_average_precision(gt, dt)["map"]


@pytest.mark.parametrize(
    "sub", [np.arange(40), np.r_[np.arange(40), np.arange(40)], np.array([3, 3, 7, 10, 10, 21])]
)
def test_resampled_map_equals_rescoring(sub):
    world = _world(40)
    boxes, labels, pb, ps, pl = world
    gt = coco_ground_truth([f"i{i}" for i in range(40)], boxes, labels, ["a", "b"])
    r = MapResampler(gt, coco_detections(pb, ps, pl))
    assert r(sub) == pytest.approx(_reference(sub, *world), abs=1e-12)
