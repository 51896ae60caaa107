"""Segmentation finetune + evaluate round trips from the CLI on hand-made prepared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data.prepared import open_prepared, write_prepared
from cmcgns_cli.downstream.dense import mask_targets
from tests.downstream.dense_data import write_rect_dataset

COMMON = ("--checkpoint", "none", "--arch", "resnet_tiny", "--batch-size", "8", "--lr", "3e-3")


def _run(cli, *args: str) -> dict:
    res = cli(*args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_siim_seg_learns_and_round_trips(cli, tmp_path: Path) -> None:
    data = write_rect_dataset(tmp_path / "siim", "siim", n=40)
    ft = tmp_path / "ft"
    record = _run(cli, "finetune", "--task", "siim-seg", "--data", data, "--out", ft,
                  "--epochs", "10", *COMMON)  # fmt: skip
    assert record["n_train"] == 24 and record["decoder"] == "smp.Unet"
    summary = _run(cli, "evaluate", "--task", "siim-seg", "--data", data, "--checkpoint", ft,
                   "--save-examples", "3")  # fmt: skip
    written = json.loads((ft / "metrics.json").read_text())
    assert summary["mean"]["dice"] == pytest.approx(written["value"])
    lo, hi = written["ci95"]["dice"]
    assert lo <= written["value"] <= hi and written["ci95_method"]["resamples"] == 1000
    # Evaluate rebuilds the same network: its validation-split-free test Dice is close to
    # what training saw on validation, and far above predicting nothing or everything.
    assert written["value"] > 0.6, written
    assert written["metrics"]["dice_nonempty"] > 0.5
    assert len(list((ft / "examples").glob("*.png"))) == 3


def test_rsna_seg_fills_boxes_when_no_masks(cli, tmp_path: Path) -> None:
    data = write_rect_dataset(tmp_path / "rsna", "rsna", n=20, with_masks=False)
    assert not (data / "masks.npy").exists()  # the targets can only come from the boxes
    ft = tmp_path / "ft"
    record = _run(cli, "finetune", "--task", "rsna-seg", "--data", data, "--out", ft,
                  "--fraction", "0.1", "--epochs", "1", *COMMON)  # fmt: skip
    assert record["n_train"] == 2  # one per stratum (has a box / not)
    summary = _run(cli, "evaluate", "--task", "rsna-seg", "--data", data, "--checkpoint", ft)
    assert summary["mean"]["dice"] is not None  # exact fill: test_box_fill_covers_exactly...
    assert summary["runs"][0]["protocol"]["split_sizes"] == {"train": 12, "validate": 4, "test": 4}


def test_box_fill_covers_exactly_the_box_pixels(tmp_path: Path) -> None:
    # COCO boxes [x, y, w, h] (x = column, y = row), non-square so a fill with x and y swapped
    # differs; a fractional box covers every pixel it touches.
    manifest = pd.DataFrame({
        "id": ["a", "b", "c"], "split": ["train", "test", "test"],
        "patient_id": ["p1", "p2", "p3"], "study_id": ["s1", "s2", "s3"], "view": "PA",
        "boxes": [[[1.0, 2.0, 3.0, 1.0]], [[0.5, 0.5, 1.0, 2.0], [4.0, 0.0, 1.0, 1.0]], []],
        "box_labels": [["opacity"], ["opacity", "opacity"], []],
    })  # fmt: skip
    out = write_prepared(tmp_path / "d", dataset="rsna", manifest=manifest,
                         images=np.zeros((3, 6, 6), np.uint8))  # fmt: skip
    got = mask_targets(open_prepared(out))
    want = np.zeros((3, 6, 6), np.uint8)
    want[0, 2, 1:4] = 1  # row 2, columns 1, 2, 3
    want[1, 0:3, 0:2] = 1  # x 0.5..1.5 -> columns 0, 1; y 0.5..2.5 -> rows 0, 1, 2
    want[1, 0, 4] = 1
    np.testing.assert_array_equal(got, want)
