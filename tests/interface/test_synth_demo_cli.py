"""`cmcgns synth` options through the CLI, and `cmcgns demo --synth N`."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from PIL import Image

ALL_LAYOUTS = {"mimic-cxr-jpg", "chexpert", "rsna", "siim", "covidx", "object-cxr"}


def test_synth_layouts_image_size_and_json(cli, tmp_path: Path) -> None:
    out = tmp_path / "world"
    res = cli("synth", "--out", out, "--n", "4", "--seed", "1", "--layouts", "mimic,rsna",
              "--image-size", "96", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 4 and summary["image_size"] == 96 and summary["seed"] == 1
    assert set(summary["layouts"]) == {"mimic", "rsna"}
    # only the two layouts asked for are written
    written = {p.name for p in out.iterdir() if p.is_dir()} & ALL_LAYOUTS
    assert written == {"mimic-cxr-jpg", "rsna"}
    reports = sorted((out / "mimic-cxr-jpg" / "files").rglob("s*.txt"))
    jpgs = sorted((out / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    dcms = sorted((out / "rsna" / "stage_2_train_images").glob("*.dcm"))
    assert len(reports) == summary["layouts"]["mimic"]["reports"] == 4
    assert len(jpgs) == summary["layouts"]["mimic"]["images"] >= 4
    assert len(dcms) == summary["layouts"]["rsna"]["images"] == 4
    # --image-size is the longer side of every image; RSNA is square at that size
    for path in jpgs:
        with Image.open(path) as im:
            assert max(im.size) == 96, (path, im.size)
    for path in dcms:
        ds = pydicom.dcmread(path)
        assert (int(ds.Rows), int(ds.Columns)) == (96, 96)


def test_synth_default_size_and_a_bad_layout(cli, tmp_path: Path) -> None:
    res = cli("synth", "--out", tmp_path / "w", "--n", "1", "--layouts", "rsna", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["image_size"] == 512  # README: 512 px by default
    (dcm,) = (tmp_path / "w" / "rsna" / "stage_2_train_images").glob("*.dcm")
    ds = pydicom.dcmread(dcm)
    assert (int(ds.Rows), int(ds.Columns)) == (512, 512)
    bad = cli("synth", "--out", tmp_path / "x", "--n", "1", "--layouts", "mimic,nope")
    assert bad.exit_code == 2 and "nope" in bad.stderr
    small = cli("synth", "--out", tmp_path / "y", "--n", "1", "--image-size", "8")
    assert small.exit_code == 2 and "--image-size" in small.stderr


@pytest.mark.slow
def test_demo_synth_draws_a_world_of_n_studies(cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = cli("demo", "--out", out, "--synth", "48", "--max-steps", "1", "--json")
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    reports = list((out / "raw" / "mimic" / "mimic-cxr-jpg" / "files").rglob("s*.txt"))
    dcms = list((out / "raw" / "rsna" / "rsna" / "stage_2_train_images").glob("*.dcm"))
    # N studies to pretrain on; the probe worlds are 2.5 N (CheXpert) and 2 N (RSNA) images
    assert len(reports) == 48 and len(dcms) == 96
    metas = {d: json.loads((out / d / "meta.json").read_text()) for d in ("chexpert", "rsna")}
    drawn = json.loads((out / "raw" / "chexpert" / "truth" / "summary.json").read_text())
    assert drawn["n"] == 120 and metas["rsna"]["count"] == 96
    assert 0 < metas["chexpert"]["count"] <= 120  # prepare keeps the frontal views
    # each linear probe scores the test split of its own world
    for measure, data in zip(result["measures"][:2], ("chexpert", "rsna"), strict=True):
        n_test = int(measure["name"].split("(")[1].split()[0])
        assert n_test == metas[data]["splits"]["test"]
