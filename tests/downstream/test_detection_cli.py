"""Detection finetune + evaluate round trips from the CLI on hand-made prepared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmcgns_cli.metrics import mean_average_precision
from tests.downstream.dense_data import write_rect_dataset

COMMON = ("--checkpoint", "none", "--arch", "resnet_tiny", "--batch-size", "8", "--lr", "3e-3")


def _run(cli, *args: str) -> dict:
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_rsna_det_round_trip_coco_files_and_examples(cli, tmp_path: Path) -> None:
    data = write_rect_dataset(tmp_path / "rsna", "rsna", n=40)
    ft = tmp_path / "ft"
    record = _run(cli, "finetune", "--task", "rsna-det", "--data", data, "--out", ft,
                  "--fraction", "0.5", "--epochs", "6", *COMMON)  # fmt: skip
    # 24 training rows, stratified on "has a box": half of each stratum.
    assert record["n_train"] == 12 and record["n_train_available"] == 24
    assert 0 < record["n_train_positive"] < 12
    summary = _run(cli, "evaluate", "--task", "rsna-det", "--data", data, "--checkpoint", ft,
                   "--save-examples", "2")  # fmt: skip
    written = json.loads((ft / "metrics.json").read_text())
    assert summary["mean"]["map"] == pytest.approx(written["value"])
    assert written["protocol"]["n_test"] == 8 and written["protocol"]["fraction"] == 0.5
    # The exported COCO files re-score to exactly the reported numbers.
    gt = json.loads((ft / "coco_gt.json").read_text())
    dets = json.loads((ft / "coco_predictions.json").read_text())
    assert len(gt["images"]) == 8 and gt["categories"] == [{"id": 1, "name": "opacity"}]
    assert mean_average_precision(gt, dets) == pytest.approx(written["metrics"])
    # (mAP over IoU 0.4-0.75 may exceed mAP@0.5: thresholds 0.4 and 0.45 are easier.)
    assert 0.0 <= written["metrics"]["map"] <= 1.0 and 0.0 <= written["metrics"]["map50"] <= 1.0
    assert len(list((ft / "examples").glob("*.png"))) == 2
    # the bootstrap interval over the 8 test images holds the point value
    lo, hi = written["ci95"]["map"]
    assert lo <= written["value"] <= hi and summary["ci95"] == written["ci95"]
    assert written["ci95_method"]["stratified_by"] == "has a box"


def test_object_cxr_det_round_trip_with_seeds(cli, tmp_path: Path) -> None:
    data = write_rect_dataset(tmp_path / "ocxr", "object-cxr", n=30, label="foreign_object")
    ft = tmp_path / "ft"
    _run(cli, "finetune", "--task", "object-cxr-det", "--data", data, "--out", ft,
         "--epochs", "1", *COMMON)  # fmt: skip
    summary = _run(cli, "evaluate", "--task", "object-cxr-det", "--data", data,
                   "--checkpoint", ft, "--seeds", "2")  # fmt: skip
    assert summary["seeds"] == [0, 1] and len(summary["runs"]) == 2
    assert (ft / "seeds" / "seed1" / "metrics.json").is_file()
    table = cli("evaluate", "--task", "object-cxr-det", "--data", data, "--checkpoint", ft)
    assert table.exit_code == 0 and "map50" in table.stdout


def test_wrong_dataset_is_bad_input(cli, tmp_path: Path) -> None:
    data = write_rect_dataset(tmp_path / "siim", "siim", n=10)
    res = cli("finetune", "--task", "rsna-det", "--data", data, "--out", tmp_path / "ft", *COMMON)
    assert res.exit_code == 2
    assert "needs a prepared rsna dataset" in res.stderr
