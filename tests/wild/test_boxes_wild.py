"""Boxes that reach past the picture (issue 27 kind F): clipped to the picture, boxes with no
area left dropped, an image left with none skipped as bad_annotation, both counted.

Expected boxes are worked out by hand for a 320 x 400 (w x h) picture.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data.imageio import clip_boxes
from tests.data.rawfix import gray, write_dicom, write_jpeg

W, H = 320, 400


@pytest.mark.parametrize(
    "box, expect",
    [
        ([10, 20, 30, 40], [10, 20, 30, 40]),  # inside: unchanged
        ([-20, 20, 50, 40], [0, 20, 30, 40]),  # past the left edge
        ([300, 20, 50, 40], [300, 20, 20, 40]),  # past the right edge
        ([10, -5, 30, 40], [10, 0, 30, 35]),  # past the top
        ([10, 390, 30, 40], [10, 390, 30, 10]),  # past the bottom
        ([-10, -10, 400, 500], [0, 0, 320, 400]),  # past every edge
        ([-50, 20, 30, 40], None),  # wholly left
        ([330, 20, 30, 40], None),  # wholly right
        ([10, -60, 30, 40], None),  # wholly above
        ([10, 400, 30, 40], None),  # starts at the bottom edge: no area
        ([10, 20, 0, 40], None),  # zero width
        ([10, 20, 30, -4], None),  # negative height
        ([float("nan"), 20, 30, 40], None),
    ],
)
def test_clip_one_box(box, expect):
    got = clip_boxes([box], H, W)
    if expect is None:
        assert got.boxes == [] and got.dropped == 1 and got.clipped == 0
    else:
        assert got.boxes == [[float(v) for v in expect]] and got.dropped == 0
        assert got.clipped == int(expect != box)


def _object_cxr(root, anns: dict[str, str]):
    for split in ("train", "dev"):
        names = [n for n in anns if n.startswith(split[0])]
        for n in names:
            write_jpeg(root / split / f"{n}.jpg", gray(H, W, seed=len(n)))
        pd.DataFrame(
            {"image_name": [f"{n}.jpg" for n in names], "annotation": [anns[n] for n in names]}
        ).to_csv(root / f"{split}.csv", index=False)


def test_object_cxr_boxes_outside_the_picture(cli, tmp_path):
    anns = {
        "t1": "0 -20 10 50 60",  # rectangle from x = -20: clipped to 0..50
        "t2": "0 -20 10 50 60;0 330 10 400 60",  # one clipped, one wholly right: dropped
        "t3": "0 10 10 10 60",  # zero width only: image skipped
        "t4": "1 100 -50 140 -10",  # ellipse wholly above: image skipped
        "t5": "",  # no object: kept, no box
        "d1": "0 300 380 360 420",  # past bottom-right: clipped
        "d2": "0 5 5 25 45",  # inside
    }
    _object_cxr(tmp_path / "raw", anns)
    res = cli(
        "prepare",
        "object-cxr",
        "--src",
        tmp_path / "raw",
        "--out",
        tmp_path / "out",
        "--size",
        W,
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["boxes_clipped"] == 3 and s["boxes_dropped"] == 3
    assert s["skipped_by_reason"] == {"bad_annotation": 2}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["boxes_clipped"] == 3 and meta["boxes_dropped"] == 3
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert set(man.index) == {"t1.jpg", "t2.jpg", "t5.jpg", "d1.jpg", "d2.jpg"}

    # --size = the longer side 400 -> scale 0.8, pad_x = (320 - 256) / 2 = 32
    def prepared(x, y, w, h):
        return [x * 0.8 + 32, y * 0.8, w * 0.8, h * 0.8]

    assert np.allclose(list(man.loc["t1.jpg", "boxes"][0]), prepared(0, 10, 50, 50))
    assert len(man.loc["t2.jpg", "boxes"]) == 1 and len(man.loc["t2.jpg", "box_shapes"]) == 1
    assert np.allclose(list(man.loc["d1.jpg", "boxes"][0]), prepared(300, 380, 20, 20))
    assert len(man.loc["t5.jpg", "boxes"]) == 0


def test_rsna_boxes_outside_the_picture(cli, tmp_path):
    root = tmp_path / "raw"
    boxes = {
        "a": [[-30.0, 40.0, 60.0, 50.0]],  # clipped at the left
        "b": [[250.0, 250.0, 0.0, 10.0]],  # zero width: its only box -> skipped
        "c": [[10.0, 10.0, 20.0, 20.0], [10.0, 300.0, 20.0, 20.0]],  # second below
        "d": [],
    }
    rows = []
    for pid, bs in boxes.items():
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", gray(256, 256, seed=1))
        for x, y, w, h in bs:
            rows.append(dict(patientId=pid, x=x, y=y, width=w, height=h, Target=1))
        if not bs:
            rows.append(dict(patientId=pid, x="", y="", width="", height="", Target=0))
    pd.DataFrame(rows).to_csv(root / "stage_2_train_labels.csv", index=False)
    res = cli("prepare", "rsna", "--src", root, "--out", tmp_path / "out", "--size", 256, "--json")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert (s["boxes_clipped"], s["boxes_dropped"]) == (1, 2)
    assert s["skipped_by_reason"] == {"bad_annotation": 1}
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    assert [list(b) for b in man.loc["a", "boxes"]] == [[0.0, 40.0, 30.0, 50.0]]
    assert len(man.loc["c", "boxes"]) == 1
    masks = np.load(tmp_path / "out" / "masks.npy")
    a = list(man.index).index("a")
    assert masks[a].sum() == 30 * 50  # the mask covers the clipped box only
