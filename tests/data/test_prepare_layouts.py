"""Each raw layout (hand-made fixtures in tests/data/rawfix.py) -> prepared format."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data import imageio
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.data.readers import chexpert as chx
from cmcgns_cli.errors import BadInputError
from tests.data.box_fill import filled_boxes
from tests.standards import CHEXPERT_TASKS, UNCERTAIN_TO

OPTIONS_GROUPED = {"protocol": "grouped", "min_words": 3, "polygon_box": "pole"}


def _skipped(out) -> dict[str, str]:
    df = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    return dict(zip(df["id"], df["reason"], strict=True))


def test_mimic(prepared):
    out, summary, truth = prepared("mimic")
    p = open_prepared(out)
    m = p.manifest
    assert list(m["id"]) == ["d1", "d3", "d6"]
    assert list(m["split"]) == ["train", "train", "test"]
    assert list(m["view"]) == ["PA", "AP", "AP"]
    assert list(m["study_id"]) == ["50000001", "50000001", "50000004"]
    # several images of one study share its sentences
    assert list(m["sentences"][0]) == list(m["sentences"][1])
    assert list(m["sentences"][2]) == ["small left effusion", "mild edema"]
    lab = p.labels_array()
    names = p.label_names
    assert lab[0, names.index("No Finding")] == 1 and math.isnan(lab[0, 0])
    assert lab[2, names.index("Edema")] == -1 and lab[2, names.index("Pleural Effusion")] == 1
    assert _skipped(out) == {
        "d2": "not_frontal",
        "d4": "report_too_short",
        "d5": "report_missing",
        "d7": "missing_file",
        "d8": "truncated_image",
        "d9": "empty_file",
        "d10": "not_in_split",
    }
    assert summary["skipped"] == 7 and summary["skipped_by_reason"]["missing_file"] == 1
    # images letterboxed: d3 is 200 x 260 -> 49 x 64 centred vertically
    assert p.images.shape == (3, 64, 64)
    assert (m["orig_h"][1], m["orig_w"][1]) == (200, 260)
    assert m["pad_y"][1] == (64 - round(200 * 64 / 260)) // 2 and m["pad_x"][1] == 0
    assert (p.images[1][: m["pad_y"][1]] == 0).all() and p.images[1][32].mean() > 50
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == 3 and meta["splits"]["train"] == 2 and meta["skipped"] == 7
    assert meta["preprocess"]["min_words"] == 3 and "versions" in meta
    assert meta["versions"]["pydicom"] != "not installed"


def test_chexpert_labels_split_and_policy(prepared, raw):
    out, summary, truth = prepared("chexpert")
    p = open_prepared(out)
    m = p.manifest
    assert p.label_names == list(CHEXPERT_TASKS)
    assert not any("lateral" in i for i in m["id"])
    assert (m.loc[m["split"] == "test", "id"].str.contains("/valid/")).all()
    assert (m["split"] == "test").sum() == 6
    # 30 train.csv rows (all views): 3 row positions drawn with RandomState(0); the frontal
    # ones validate (no 5x200 at this size, so the label/position drop is exact)
    train_csv = list(truth)[:30]
    drawn = np.random.RandomState(0).choice(30, size=3, replace=False)
    expect_val = {train_csv[k] for k in drawn if not truth[train_csv[k]]["lateral"]}
    assert set(m.loc[m["split"] == "validate", "id"]) == expect_val
    assert not expect_val & set(m.loc[m["split"] == "train", "id"])
    lab = p.labels_array()
    for row, rel in enumerate(m["id"]):
        raw_vals = truth[rel]["raw"]
        for j, task in enumerate(CHEXPERT_TASKS):
            v = raw_vals[task]
            expect = 0.0 if v == "" else (UNCERTAIN_TO[task] if v == "-1.0" else float(v))
            assert lab[row, j] == expect
    meta = json.loads((out / "meta.json").read_text())
    assert "U-Ones" in meta["label_policy"] and "valid.csv" in meta["split_description"]
    # --src may be the CheXpert-v1.0-small folder itself
    src, _ = raw("chexpert")
    assert chx.dataset_root(src / "CheXpert-v1.0-small") == src / "CheXpert-v1.0-small"


def test_chexpert_5x200_and_valid_draw_are_deterministic(tmp_path):
    from tests.data import rawfix

    rawfix.build_chexpert(tmp_path, n_train=400)
    a = chx.read(tmp_path, {"protocol": "mgca"})
    b = chx.read(tmp_path / "CheXpert-v1.0-small", {"protocol": "mgca"})
    assert [(i.id, i.split) for i in a.items] == [(i.id, i.split) for i in b.items]
    held = [i for i in a.items if i.split == "5x200"]
    assert 0 < len(held) <= 5 * 3  # 360 frontal -> 3 per task
    others = {i.id for i in a.items if i.split != "5x200"}
    for i in held:  # each held-out image is positive for exactly one competition task
        assert i.id not in others and sum(i.labels) == 1
    g = chx.read(tmp_path, {"protocol": "grouped"})
    by_patient: dict[str, set] = {}
    for i in g.items:
        if i.split != "test":
            by_patient.setdefault(i.patient_id, set()).add(i.split)
    assert all(len(v) == 1 for v in by_patient.values())


def test_rsna_boxes_masks_and_grouping(prepared):
    out, summary, truth = prepared("rsna")
    p = open_prepared(out)
    m = p.manifest
    assert list(m["id"]) == sorted(k for k, t in truth.items() if not t["missing"])
    assert _skipped(out) == {"pid-011": "missing_file"}
    assert p.masks is not None and p.masks.shape == p.images.shape
    assert set(np.unique(p.masks)) <= {0, 1}
    for row, pid in enumerate(m["id"]):
        t = truth[pid]
        assert p.labels_array()[row, 0] == float(bool(t["boxes"]))
        assert m["view"][row] == t["view"]  # read from the DICOM header
        # 256 x 256 DICOMs into 64 px: a square image is scaled by 1/4, no padding
        expect = [[v / 4 for v in b] for b in t["boxes"]]
        got = [list(b) for b in m["boxes"][row]]
        assert np.allclose(got, expect) if expect else got == []
        assert list(m["box_labels"][row]) == [0] * len(t["boxes"])
        np.testing.assert_array_equal(p.masks[row], filled_boxes(expect, 64))
    assert summary["boxes"] == 5
    assert sorted(summary["splits"].values()) == [1, 2, 8]  # 11 patients: 70/15/15


def test_siim_rle_masks(prepared):
    out, summary, truth = prepared("siim")
    p = open_prepared(out)
    m = p.manifest
    assert len(m) == len(truth) and p.masks is not None
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert p.labels_array()[row, 0] == t["label"]
        # 128 px into 64 px: the drawn rectangles start and end on even pixels, so each
        # 2 x 2 block is all in or all out
        expect = t["mask"].reshape(64, 2, 64, 2).max(axis=(1, 3))
        assert np.mean(p.masks[row] != expect) == 0
    # image 0 has two RLE rows whose masks are unioned (when both rows share a split)
    first = "1.2.276.0.7230010.3.1.4.0"
    rows = m.index[m["id"] == first]
    assert p.masks[rows].sum() > 0


def test_siim_mask_is_the_pixel_union_of_hand_written_rle_rows(tmp_path):
    from cmcgns_cli.data.prepare import run_prepare
    from tests.data import rawfix

    # SIIM stage-1 RLE: (offset from the previous run's end, length) pairs, pixels counted
    # down each column of a 64 x 64 image (index = column * 64 + row).
    rows = [("img0", "130 4"), ("img0", "640 2 62 2"), ("img1", "-1"), ("img2", "-1"),
            ("img3", "-1"), ("img4", "-1"), ("img5", "-1")]  # fmt: skip
    src = tmp_path / "siim"
    src.mkdir()
    csv = pd.DataFrame(
        {"ImageId": [r[0] for r in rows], " EncodedPixels": [f" {r[1]}" for r in rows]}
    )
    csv.to_csv(src / "train-rle.csv", index=False)
    for i, image_id in enumerate(dict.fromkeys(r[0] for r in rows)):
        d = src / "dicom-images-train" / f"study{i}" / f"series{i}"
        rawfix.write_dicom(d / f"{image_id}.dcm", rawfix.gray(64, 64, seed=i))
    out = tmp_path / "prep"
    run_prepare("siim", src=src, out=out, size=64, workers=0,
                options=OPTIONS_GROUPED, as_json=True)  # fmt: skip
    p = open_prepared(out)
    want = np.zeros((64, 64), np.uint8)
    want[2:6, 2] = 1  # pixels 130..133: column 2, rows 2-5
    want[0:2, 10] = 1  # pixels 640, 641: column 10, rows 0-1
    want[0:2, 11] = 1  # pixels 704, 705 (642 + 62): column 11, rows 0-1
    row = int(np.flatnonzero(p.manifest["id"] == "img0")[0])
    np.testing.assert_array_equal(p.masks[row], want)
    assert p.masks.sum() == want.sum()  # the negatives stay empty


def test_siim_grouped_puts_each_image_in_one_split(prepared):
    out, _, truth = prepared("siim", protocol="grouped")
    m = open_prepared(out).manifest
    assert m["id"].is_unique and len(m) == len(truth)


def test_covidx_classes_and_split(prepared):
    out, summary, truth = prepared("covidx")
    p = open_prepared(out)
    m = p.manifest
    assert p.label_names == ["normal", "pneumonia", "COVID-19"]
    assert summary["splits"] == {"train": 16, "validate": 4, "test": 5}
    lab = p.labels_array()
    for row, fname in enumerate(m["id"]):
        assert lab[row].argmax() == truth[fname]["cls"] == m["class_index"][row]
        assert (m["split"][row] == "test") == (truth[fname]["split"] == "test")


def test_object_cxr_boxes(prepared):
    out, summary, truth = prepared("object-cxr", size=80)
    p = open_prepared(out)
    m = p.manifest.set_index("id")
    tf = imageio.letterbox_transform(400, 320, 80)
    assert _skipped(out) == {"00005.jpg": "bad_annotation"}
    assert m.loc["08001.jpg", "split"] == "test" and m.loc["00001.jpg", "split"] != "test"

    def boxes(name):
        return [list(b) for b in m.loc[name, "boxes"]]

    assert np.allclose(boxes("00001.jpg"), imageio.map_boxes([[10, 20, 100, 50]], tf))
    assert np.allclose(boxes("00002.jpg"), imageio.map_boxes([[50, 60, 100, 140]], tf))
    # polygon: a 100 x 100 square -> pole at its centre, inscribed radius 50
    [[x, y, w, h]] = boxes("00003.jpg")
    cx, cy = (x + w / 2 - tf.pad_x) / tf.scale, (y + h / 2 - tf.pad_y) / tf.scale
    assert abs(cx - 150) <= 2 and abs(cy - 150) <= 2 and abs(w / tf.scale - 100) <= 3
    assert np.allclose(
        boxes("08001.jpg"), imageio.map_boxes([[5, 5, 20, 40], [200, 220, 60, 80]], tf)
    )
    assert boxes("00004.jpg") == [] and m.loc["00004.jpg", "labels"][0] == 0


def test_object_cxr_polygon_bbox_option(prepared):
    out, _, _ = prepared("object-cxr", size=80, polygon_box="bbox")
    m = open_prepared(out).manifest.set_index("id")
    tf = imageio.letterbox_transform(400, 320, 80)
    assert np.allclose(
        [list(b) for b in m.loc["00003.jpg", "boxes"]],
        imageio.map_boxes([[100, 100, 100, 100]], tf),
    )


def test_folder_dataset_with_reports_labels_and_dicom(tmp_path):
    from cmcgns_cli.data.prepare import run_prepare
    from tests.data import rawfix

    rawfix.write_jpeg(tmp_path / "img" / "a.jpg", rawfix.gray(90, 60))
    rawfix.write_png(tmp_path / "img" / "b.png", rawfix.gray(50, 50))
    rawfix.write_dicom(tmp_path / "img" / "c.dcm", rawfix.gray(70, 70), photometric="MONOCHROME1")
    pd.DataFrame(
        {
            "file": ["img/a.jpg", "img/b.png", "img/c.dcm", "img/missing.jpg", "img/a.jpg"],
            "text": [
                "Heart normal. Lungs clear.",
                "No effusion seen here.",
                "Mild edema is seen.",
                "Some report here.",
                "",
            ],
            "effusion": ["0", "1", "", "1", "0"],
            "split": ["train", "test", "val", "train", "train"],
        }
    ).to_csv(tmp_path / "mine.csv", index=False)
    s = run_prepare(
        "folder",
        src=tmp_path,
        out=tmp_path / "out",
        size=32,
        workers=0,
        options={
            "csv": "mine.csv",
            "image_col": "file",
            "report_col": "text",
            "label_cols": ["effusion"],
            "split_col": "split",
            "min_words": 3,
        },
        as_json=True,
    )
    p = open_prepared(tmp_path / "out")
    assert list(p.manifest["id"]) == ["img/a.jpg", "img/b.png", "img/c.dcm"]
    assert list(p.manifest["split"]) == ["train", "test", "validate"]
    assert list(p.manifest["sentences"][0]) == ["heart normal", "lungs clear"]
    lab = p.labels_array()
    assert lab[0, 0] == 0 and lab[1, 0] == 1 and math.isnan(lab[2, 0])
    assert s["skipped_by_reason"] == {"missing_file": 1, "report_missing": 1}
    with pytest.raises(BadInputError, match="mine.csv: missing column 'nope'"):
        run_prepare(
            "folder",
            src=tmp_path,
            out=tmp_path / "o2",
            size=32,
            workers=0,
            options={"csv": "mine.csv", "image_col": "file", "label_cols": ["nope"]},
            as_json=True,
        )
