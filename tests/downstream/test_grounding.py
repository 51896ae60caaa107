"""Phrase grounding: the scores on hand-made maps, the MS-CXR-style synth file, and the three
`evaluate --task grounding-*` tasks end to end on a drawn world."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from cmcgns_cli.downstream.grounding_metrics import (
    area_fraction,
    cnr,
    iou_at_thresholds,
    pointing_game,
)


def _strict_loads(text: str):
    def bad(const: str):
        raise AssertionError(f"non-strict JSON constant {const}")

    return json.loads(text, parse_constant=bad)


def test_pointing_game_and_area_by_hand():
    maps = np.zeros((2, 3, 3))
    maps[0, 0, 0] = 5.0  # peak at (0, 0): inside region 0
    maps[1, 2, 2] = 1.0  # peak at (2, 2): outside region 1
    regions = np.zeros((2, 3, 3), bool)
    regions[0, 0, :2] = True
    regions[1, 0, 0] = True
    assert pointing_game(maps, regions).tolist() == [1.0, 0.0]
    assert area_fraction(regions).tolist() == pytest.approx([2 / 9, 1 / 9])


def test_cnr_by_hand():
    # inside [1, 3]: mean 2, var 1; outside [0, 2]: mean 1, var 1 -> |2 - 1| / sqrt(2)
    maps = np.array([[[1.0, 3.0, 0.0, 2.0]]])
    regions = np.array([[[True, True, False, False]]])
    assert cnr(maps, regions)[0] == pytest.approx(1 / math.sqrt(2))
    # a region covering the whole image has no outside: undefined
    assert np.isnan(cnr(maps, np.ones_like(regions))[0])


def test_iou_thresholds_by_hand():
    maps = np.array([[[0.0, 0.25, 0.5, 1.0]]])
    regions = np.array([[[False, False, True, True]]])
    # > 0.1 and > 0.2: {0.25, 0.5, 1} vs {0.5, 1} -> 2/3; > 0.3, > 0.4: exact -> 1; > 0.5: 1/2
    got = iou_at_thresholds(maps, regions)[0]
    assert got.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0, 0.5])
    # a constant map has no scale to threshold: undefined (NaN) at every threshold
    assert np.isnan(iou_at_thresholds(np.ones_like(maps), regions)[0]).all()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A drawn world (mimic, rsna, siim layouts) prepared at 64 px."""
    from cmcgns_cli.data.prepare import run_prepare
    from cmcgns_cli.synth import write_world

    base = tmp_path_factory.mktemp("grounding")
    write_world(base / "raw", n=80, seed=5, layouts=["mimic", "rsna", "siim"], image_size=128)
    src = {"mimic": "mimic-cxr-jpg", "rsna": "rsna", "siim": "siim"}
    for name, folder in src.items():
        run_prepare(name, src=base / "raw" / folder, out=base / name, size=64, workers=0,
                    options={"protocol": "mgca", "min_words": 3, "polygon_box": "pole",
                             "csv": None, "image_col": "path", "report_col": None,
                             "label_cols": None, "split_col": None}, as_json=True)  # fmt: skip
    return base


def test_synth_writes_mscxr_rows_from_truth(world):
    path = world / "raw" / "ms-cxr" / "MS_CXR_Local_Alignment_v1.1.0.csv"
    with path.open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames
    assert header == ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h",
                      "image_width", "image_height", "split"]  # fmt: skip
    truth = [json.loads(ln) for ln in (world / "raw" / "truth" / "mimic.jsonl").open()]
    findings = {"opacity", "atelectasis", "nodule", "mass"}
    expected = [
        (t["image_id"], [float(v) for v in b])
        for t in truth
        if t["split"] == "test" and t["view"] in ("PA", "AP")
        for b, lab in zip(t["boxes"], t["box_labels"], strict=True)
        if lab in findings
    ]
    got = [(r["dicom_id"], [float(r[k]) for k in "xywh"]) for r in rows]
    assert got == expected and len(got) > 0
    assert all(r["split"] == "test" and r["label_text"] for r in rows)
    by_id = {t["image_id"]: t for t in truth}
    for r in rows:  # the box side named in the phrase: patient right = image left
        t = by_id[r["dicom_id"]]
        centre = float(r["x"]) + float(r["w"]) / 2
        side = "right" if centre < t["width"] / 2 else "left"
        assert side in r["label_text"]


def _grounding(cli, world, run, task, *extra):
    data = world / {"grounding-rsna": "rsna", "grounding-siim": "siim",
                    "grounding-mscxr": "mimic"}[task]  # fmt: skip
    return cli("evaluate", "--task", task, "--data", data, "--checkpoint", run,
               "--device", "cpu", "--json", *extra)  # fmt: skip


@pytest.mark.slow
def test_three_grounding_tasks_end_to_end(world, trained, cli):
    from cmcgns_cli.data.prepared import open_prepared

    _, run = trained
    ann = world / "raw" / "ms-cxr" / "MS_CXR_Local_Alignment_v1.1.0.csv"
    # images with a region, counted from the prepared data and the annotation file
    rsna = open_prepared(world / "rsna")
    siim = open_prepared(world / "siim")
    mimic_ids = set(open_prepared(world / "mimic").manifest["id"].astype(str))
    with ann.open() as fh:
        pairs = {(r["dicom_id"], r["label_text"]) for r in csv.DictReader(fh)}
    expected_n = {
        "grounding-rsna": int(
            sum(np.asarray(rsna.masks[r]).any() for r in rsna.split_indices("test"))
        ),  # fmt: skip
        "grounding-siim": int(
            sum(np.asarray(siim.masks[r]).any() for r in siim.split_indices("test"))
        ),  # fmt: skip
        "grounding-mscxr": sum(1 for d, _ in pairs if d in mimic_ids),
    }
    for task, n in expected_n.items():
        extra = ("--annotations", ann) if task == "grounding-mscxr" else ()
        res = _grounding(cli, world, run, task, *extra)
        assert res.exit_code == 0, res.stderr
        out = _strict_loads(res.stdout)
        assert out["mean"]["n"] == n > 0, task
        for key in ("pointing_game", "cnr", "miou"):
            value = out[key]
            assert value is not None, (task, key)
            lo, hi = out["ci95"][key]
            assert lo <= value <= hi
            assert key in out["chance"]
        assert 0.0 <= out["pointing_game"] <= 1.0 and 0.0 <= out["miou"] <= 1.0
        assert sum(c["n"] for c in out["per_class"].values()) == n
        assert out["ci95_method"]["resamples"] == 1000
    # compare on an evaluate-only task: a run against itself is 0 with a zero-width interval
    res = cli("compare", run, run, "--task", "grounding-siim", "--data", world / "siim",
              "--device", "cpu", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    same = _strict_loads(res.stdout)
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0]
    assert same["n"] == expected_n["grounding-siim"] and same["metric"] == "pointing_game"
    # the MS-CXR task needs its file, and says which column is missing
    res = _grounding(cli, world, run, "grounding-mscxr")
    assert res.exit_code == 2 and "--annotations" in res.stderr
    bad = world / "bad.csv"
    bad.write_text("dicom_id,x,y,w,h\nabc,1,2,3,4\n")
    res = _grounding(cli, world, run, "grounding-mscxr", "--annotations", bad)
    assert res.exit_code == 2 and "bad.csv" in res.stderr and "label_text" in res.stderr


def test_oracle_map_scores_perfectly(world, trained, monkeypatch):
    """A map equal to the region (mapped through the same crop) is a perfect grounding: the
    pipeline from prepared pixels to model input keeps map and region aligned."""
    import torch

    from cmcgns_cli.downstream import grounding

    _, run = trained
    captured = {}

    def oracle(run_, images, rows, phrases):
        captured["n"] = len(rows)
        return captured["regions"].astype(np.float32)

    real = grounding.to_model_space

    def keep(regions, size, crop):
        out = real(regions, size, crop)
        captured["regions"] = out[out.reshape(len(out), -1).any(axis=1)]
        return out

    monkeypatch.setattr(grounding, "phrase_maps", oracle)
    monkeypatch.setattr(grounding, "to_model_space", keep)
    res = grounding.evaluate_grounding(
        "grounding-siim", world / "siim", run, torch.device("cpu"), n_boot=50
    )
    m = res["metrics"]
    assert m["pointing_game"] == 1.0 and m["miou"] == pytest.approx(1.0)
    assert m["n"] == captured["n"] > 0
    # the noise-map chance level is far below the oracle
    assert m["miou_chance"] < 0.6 and m["pointing_game_chance"] < 0.5


def test_grounding_counts_are_ints_and_print_whole() -> None:
    from cmcgns_cli.downstream.grounding import summarise
    from cmcgns_cli.downstream.results_table import results_table

    # 3 images, the second's CNR undefined: n = 3, cnr_n = 2
    scores = {
        "pointing_game": np.array([1.0, 0.0, 1.0]),
        "cnr": np.array([0.5, np.nan, 0.3]),
        "miou": np.array([0.2, 0.1, 0.4]),
        "iou": np.full((3, 5), 0.2),
        "area": np.array([0.1, 0.2, 0.3]),
    }
    chance = {"cnr": np.zeros(3), "miou": np.zeros(3)}
    out = summarise(scores, chance, ["a", "b", "a"], n_boot=20)
    m = out["metrics"]
    assert (m["n"], m["pointing_game_n"], m["cnr_n"], m["miou_n"]) == (3, 3, 2, 3)
    assert all(type(m[k]) is int for k in ("n", "pointing_game_n", "cnr_n", "miou_n"))
    from rich.console import Console

    from cmcgns_cli.downstream.seed_summary import summarise_seeds

    result = {"task": "grounding-mscxr", "metric": "pointing_game", "metrics": m, "protocol": {}}
    summary = summarise_seeds([result])  # as evaluate builds what it prints
    assert type(summary["metrics"]["cnr_n"]) is int
    table = results_table("grounding-mscxr", summary)

    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "3.0000" not in text and "2.0000" not in text
