"""Prepare a small synthetic world (cmcgns_cli.synth) and check it against its truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmcgns_cli.data.prepare import run_prepare
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.synth import write_world
from tests.data.box_fill import filled_boxes
from tests.standards import CHEXPERT_TASKS, UNCERTAIN_TO

SIZE = 64
FOLDERS = {
    "mimic": "mimic-cxr-jpg",
    "chexpert": "chexpert",
    "rsna": "rsna",
    "siim": "siim",
    "covidx": "covidx",
    "object-cxr": "object-cxr",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_world(root, 16, seed=3, image_size=96)
    return root


@pytest.fixture(scope="module")
def prep(world, tmp_path_factory):
    cache = {}

    def get(name, **opts):
        key = (name, tuple(sorted(opts.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"w-{name}")
            run_prepare(
                name,
                src=world / FOLDERS[name],
                out=out,
                size=SIZE,
                workers=0,
                options={"protocol": "mgca", "min_words": 3, "polygon_box": "pole", **opts},
                as_json=True,
            )
            truth = {}
            for line in (world / "truth" / f"{name}.jsonl").read_text().splitlines():
                rec = json.loads(line)
                truth[rec["image_id"]] = rec
            cache[key] = (open_prepared(out), truth)
        return cache[key]

    return get


def _check_geometry(p, truth):
    m = p.manifest
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert (m["orig_w"][row], m["orig_h"][row]) == (t["width"], t["height"])


def _mapped(t, row, m):
    """(scale, truth boxes in prepared pixels), by the letterbox rule written out: the longer
    side to SIZE, the shorter scaled alike and centred (``x' = x * scale + pad_x``)."""
    h, w = t["height"], t["width"]
    scale = SIZE / max(h, w)
    pad_x, pad_y = (SIZE - round(w * scale)) // 2, (SIZE - round(h * scale)) // 2
    assert m["scale"][row] == pytest.approx(scale)
    assert (m["pad_x"][row], m["pad_y"][row]) == (pad_x, pad_y)
    boxes = [
        [x * scale + pad_x, y * scale + pad_y, bw * scale, bh * scale]
        for x, y, bw, bh in t["boxes"]
    ]
    return scale, boxes


def test_mimic_against_truth(prep):
    p, truth = prep("mimic")
    m = p.manifest
    frontal = {k for k, t in truth.items() if t["view"] in ("PA", "AP")}
    assert set(m["id"]) <= frontal
    assert len(m) >= 0.8 * len(frontal)  # only too-short reports may drop
    names = p.label_names
    lab = p.labels_array()
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert m["split"][row] == t["split"] and m["view"][row] == t["view"]
        assert str(t["study_id"]) == m["study_id"][row]
        assert len(m["sentences"][row]) >= 1
        for j, name in enumerate(names):
            v = t["label"].get(name)
            assert math.isnan(lab[row, j]) if v is None else lab[row, j] == v
    _check_geometry(p, truth)


def test_chexpert_against_truth(prep):
    p, truth = prep("chexpert")
    m = p.manifest
    frontal = {k for k, t in truth.items() if t["view"] == "frontal"}
    assert set(m["id"]) == frontal
    lab = p.labels_array()
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert (m["split"][row] == "test") == (t["split"] == "valid")
        for j, task in enumerate(CHEXPERT_TASKS):
            v = t["label"][task]
            expect = 0.0 if v is None else (UNCERTAIN_TO[task] if v == -1 else v)
            assert lab[row, j] == expect
    _check_geometry(p, truth)


def test_rsna_against_truth(prep):
    p, truth = prep("rsna")
    m = p.manifest
    assert set(m["id"]) == set(truth)
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        _, expect = _mapped(t, row, m)
        assert (
            np.allclose([list(b) for b in m["boxes"][row]], expect)
            if expect
            else (len(m["boxes"][row]) == 0)
        )
        assert p.labels_array()[row, 0] == t["label"]
        np.testing.assert_array_equal(p.masks[row], filled_boxes(expect, SIZE))
    _check_geometry(p, truth)


def test_siim_masks_against_truth(prep, world):
    p, truth = prep("siim", protocol="grouped")
    m = p.manifest
    assert set(m["id"]) == set(truth) and m["id"].is_unique
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert p.labels_array()[row, 0] == t["label"]
        png = world / "truth" / "siim_masks" / f"{image_id}.png"
        full = (
            (cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) > 0)
            if png.is_file()
            else np.zeros((t["height"], t["width"]), bool)
        )
        want = _area_mask(full, SIZE)
        # Pillow's box filter and prepare's resize may part only on the mask's edge pixels
        kernel = np.ones((3, 3), np.uint8)
        edge = cv2.dilate(want, kernel) & (1 - cv2.erode(want, kernel))
        differ = p.masks[row] != want
        assert not (differ & (edge == 0)).any(), image_id
        assert differ.sum() <= 0.5 * max(1, edge.sum()), image_id
        assert p.masks[row].any() == bool(t["label"])


def _area_mask(full: np.ndarray, size: int) -> np.ndarray:
    """A full-resolution 0/1 mask letterboxed by Pillow's box (area) filter, kept at >= 0.5:
    another library's resize, for comparison with what prepare wrote."""
    from PIL import Image

    h, w = full.shape
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    small = Image.fromarray(full.astype(np.float32)).resize((nw, nh), Image.Resampling.BOX)
    out = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(small) >= 0.5
    return out


def test_covidx_against_truth(prep):
    p, truth = prep("covidx")
    m = p.manifest
    assert set(m["id"]) == set(truth)
    names = p.label_names
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        assert names[int(m["class_index"][row])].lower() == t["label"].lower()
        assert (m["split"][row] == "test") == (t["split"] == "test")
    _check_geometry(p, truth)


def test_object_cxr_against_truth(prep):
    p, truth = prep("object-cxr", polygon_box="bbox")
    m = p.manifest
    assert set(m["id"]) == set(truth)
    for row, image_id in enumerate(m["id"]):
        t = truth[image_id]
        scale, expect = _mapped(t, row, m)
        got = [list(b) for b in m["boxes"][row]]
        assert len(got) == len(expect)
        if expect:  # polygon truth boxes count end pixels inclusively: 1 px slack
            assert np.abs(np.asarray(got) - np.asarray(expect)).max() <= 1.0 * scale + 1e-6
        assert (m["split"][row] == "test") == (t["split"] == "dev")
