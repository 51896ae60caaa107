"""SIIM under --protocol mgca: images whose RLE rows fell into two splits are counted in the
summary and meta.json, with a pointer to --protocol grouped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from cmcgns_cli.data.readers.siim import rle_encode
from tests.data.rawfix import gray, write_dicom

N_IMAGES, ROWS_EACH, SIDE = 20, 3, 48


def _siim(root):
    rows = []
    for i in range(N_IMAGES):
        image_id = f"1.2.3.{i}"
        for r in range(ROWS_EACH):  # three separate regions: three CSV rows
            part = np.zeros((SIDE, SIDE), np.uint8)
            part[4 + 12 * r : 10 + 12 * r, 5:20] = 1
            rows.append({"ImageId": image_id, " EncodedPixels": " " + rle_encode(part)})
        d = root / "dicom-images-train" / f"s{i}" / f"r{i}"
        write_dicom(d / f"{image_id}.dcm", gray(SIDE, SIDE, seed=i))
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)
    return [row["ImageId"] for row in rows]


def _expected_two_split_images(ids):
    # the MGCA split over CSV rows, computed here with scikit-learn directly
    idx = np.arange(len(ids))
    train, rest = train_test_split(idx, test_size=0.3, random_state=0)
    part_a, part_b = train_test_split(rest, test_size=0.5, random_state=0)
    split = np.empty(len(ids), dtype=object)
    split[train], split[part_a], split[part_b] = "train", "a", "b"
    per_image = pd.DataFrame({"id": ids, "split": split}).groupby("id")["split"].nunique()
    return int((per_image > 1).sum())


def test_images_in_two_splits_counted_and_pointed_to_grouped(cli, tmp_path):
    ids = _siim(tmp_path / "src")
    expected = _expected_two_split_images(ids)
    assert expected > 0  # 3 rows per image over a 70/15/15 row split: some must straddle
    res = cli("prepare", "siim", "--src", tmp_path / "src", "--out", tmp_path / "mgca", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["images_in_two_splits"] == expected
    assert json.loads((tmp_path / "mgca" / "meta.json").read_text())["images_in_two_splits"] == (
        expected
    )
    assert f"note: {expected} images sit in two splits" in res.stderr
    assert "--protocol grouped" in res.stderr
    res = cli("prepare", "siim", "--src", tmp_path / "src", "--out", tmp_path / "grouped",
              "--protocol", "grouped", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["images_in_two_splits"] == 0
    assert "two splits" not in res.stderr
