"""``evaluate`` on data prepared under ``--protocol mgca``: detection reports the published
rule's ``map`` beside ``map_coco`` with the images each scored; segmentation reports the
per-batch Dice beside ``dice_per_image``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.downstream.dense_data import write_rect_dataset
from tests.downstream.test_detection_cli import COMMON, _cocoeval

MGCA = {"protocol": {"name": "mgca"}}


def _mgca_rect(root: Path, dataset: str, **kw) -> Path:
    from cmcgns_cli.data.prepared import open_prepared, write_prepared

    plain = write_rect_dataset(root / "plain", dataset, **kw)
    p = open_prepared(plain)
    return write_prepared(root / "mgca", dataset=dataset, manifest=p.manifest,
                          images=p.images, masks=p.masks, extra_meta=MGCA)  # fmt: skip


def _run(cli, *args) -> dict:
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "dataset"), [("rsna-det", "rsna"),
                                               ("object-cxr-det", "object-cxr")])  # fmt: skip
def test_det_under_mgca_reports_both_maps_and_counts(cli, tmp_path: Path, task, dataset):
    # 60 images (36 train, 12 test), 20 epochs: enough for detections with objectness >= 0.5
    # (at 6 epochs none passes, and the published rule scores no image)
    data = _mgca_rect(tmp_path, dataset, n=60)
    ft = tmp_path / "ft"
    _run(cli, "finetune", "--task", task, "--data", data, "--out", ft, "--epochs", "20", *COMMON)
    summary = _run(cli, "evaluate", "--task", task, "--data", data, "--checkpoint", ft)
    written = json.loads((ft / "metrics.json").read_text())
    m = written["metrics"]
    assert {"map", "map_coco", "map_images_scored", "map_coco_images_scored"} <= m.keys()
    assert summary["mean"]["map_images_scored"] == m["map_images_scored"]
    gt = json.loads((ft / "coco_gt.json").read_text())
    dets = json.loads((ft / "coco_predictions.json").read_text())
    # map_coco: pycocotools over every test image, re-scored from the exported files
    assert m["map_coco_images_scored"] == len(gt["images"]) == 12
    assert m["map_coco"] == pytest.approx(_cocoeval(gt, dets)[0])
    # map: only images with a box (and a confident detection)
    with_box = len({a["image_id"] for a in gt["annotations"]})
    assert 0 < m["map_images_scored"] <= with_box < 12
    assert written["metric_rules"]["map"].startswith("the published evaluation")
    assert written["metric_rules"]["map_coco"].startswith("pycocotools over all test images")
    # each interval resamples the images its estimate used
    per = written["ci95_method_per_metric"]
    assert per["map"]["images"] == m["map_images_scored"]
    assert per["map_coco"]["images"] == 12
    lo, hi = written["ci95"]["map"]
    assert lo <= m["map"] <= hi
    print(task, {k: m[k] for k in ("map", "map_images_scored", "map_coco")})


@pytest.mark.slow
def test_seg_under_mgca_reports_batch_mean_and_per_image(cli, tmp_path: Path) -> None:
    data = _mgca_rect(tmp_path, "rsna", n=40)
    ft = tmp_path / "ft"
    _run(cli, "finetune", "--task", "rsna-seg", "--data", data, "--out", ft, "--epochs", "2",
         *COMMON)  # fmt: skip
    _run(cli, "evaluate", "--task", "rsna-seg", "--data", data, "--checkpoint", ft)
    written = json.loads((ft / "metrics.json").read_text())
    assert {"dice", "dice_per_image"} <= written["metrics"].keys()
    assert "per batch of 16" in written["metric_rules"]["dice"]
    assert written["metric_rules"]["dice_per_image"].startswith("mean over test images")
