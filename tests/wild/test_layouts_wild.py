"""Layouts and list files as they turn up in users' data (cases H1, H2, H3, H10).

Through ``cmcgns prepare`` (the in-process CLI); the right values are literals of the case
(counts, classes) or computed by the hand-written encoders of tests/wild/builders.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.data.rawfix import build_chexpert, build_covidx, gray, write_dicom, write_png
from tests.wild.builders import blob, dice, rle_absolute, rle_relative

SIZE = 32


def _prep(cli, dataset, src, out, *extra):
    return cli("prepare", dataset, "--src", src, "--out", out, "--size", SIZE, "--json", *extra)


# ---------------------------------------------------------------------------------------
# A / H1: paths written on another machine


def _rewrite_chexpert_paths(base, fn):
    for name in ("train.csv", "valid.csv"):
        df = pd.read_csv(base / name, dtype=str, keep_default_na=False)
        df["Path"] = df["Path"].map(fn)
        df.to_csv(base / name, index=False)


@pytest.mark.parametrize(
    "rewrite, prefix",
    [
        (lambda p: p.replace("/", "\\"), None),  # H1: relative, Windows separators
        (lambda p: "C:\\Users\\me\\data\\" + p.replace("/", "\\"), "Users/me/data"),
        (lambda p: "/mnt/other/box/" + p, "mnt/other/box"),  # absolute, another machine
        (lambda p: "chexpert_renamed/" + p.split("/", 1)[1], "chexpert_renamed"),
    ],
)
def test_chexpert_paths_from_another_machine(cli, tmp_path, rewrite, prefix):
    truth = build_chexpert(tmp_path / "raw", n_train=12)
    base = tmp_path / "raw" / "CheXpert-v1.0-small"
    _rewrite_chexpert_paths(base, rewrite)
    res = _prep(cli, "chexpert", tmp_path / "raw", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    frontal = sum(1 for t in truth.values() if not t["lateral"])
    assert s["count"] == frontal == 17  # 11 train + 6 valid frontal rows
    assert s["skipped_by_reason"] == {"not_frontal": 1}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    rr = meta["path_rerooting"]
    assert rr["separators_normalised"] + rr["prefix_dropped"] == frontal == s["paths_rerooted"]
    if prefix is None:
        assert rr["separators_normalised"] == frontal and rr["dropped_prefixes"] == {}
    else:
        assert set(rr["dropped_prefixes"]) == {prefix}


def test_chexpert_forward_slashes_not_rerooted(cli, tmp_path):
    build_chexpert(tmp_path / "raw", n_train=12)
    res = _prep(cli, "chexpert", tmp_path / "raw", tmp_path / "out")
    s = json.loads(res.stdout)
    assert s["count"] == 17 and "paths_rerooted" not in s
    assert "path_rerooting" not in json.loads((tmp_path / "out" / "meta.json").read_text())


@pytest.mark.parametrize(
    "fmt",
    ["images\\{n}", "D:\\study\\export\\images\\{n}", "/home/alice/proj/images/{n}", "{n}"],
)
def test_folder_csv_paths_from_another_machine(cli, tmp_path, fmt):
    src = tmp_path / "src"
    names = [f"xr_{i}.png" for i in range(4)]
    for i, n in enumerate(names):
        write_png(src / "images" / n, gray(40, 36, seed=i))
    # bare names: the resolver drops leading parts, it never invents a folder (no walk)
    expected = 0 if fmt == "{n}" else 4
    pd.DataFrame({"path": [fmt.format(n=n) for n in names], "effusion": [0, 1, 0, 1]}).to_csv(
        src / "list.csv", index=False
    )
    res = _prep(cli, "folder", src, tmp_path / "out", "--csv", src / "list.csv",
                "--label-cols", "effusion")  # fmt: skip
    if expected == 0:
        assert res.exit_code == 1 and "missing_file" in res.stderr
        return
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["count"] == expected


# ---------------------------------------------------------------------------------------
# B / H2: a prepare that keeps nothing is a failure


def test_prepare_keeping_nothing_exits_1_without_meta(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"path": ["gone/a.png", "gone/b.png", "gone/c.png"]}).to_csv(
        src / "list.csv", index=False
    )
    out = tmp_path / "out"
    res = _prep(cli, "folder", src, out, "--csv", src / "list.csv")
    assert res.exit_code == 1
    assert "0 of 3 images taken" in res.stderr and "missing_file (3 rows)" in res.stderr
    assert "gone/a.png" in res.stderr
    assert not (out / "meta.json").exists() and (out / "skipped.csv").is_file()


def test_chexpert_without_image_folders_exits_1(cli, tmp_path):
    import shutil

    build_chexpert(tmp_path / "raw", n_train=12)
    base = tmp_path / "raw" / "CheXpert-v1.0-small"
    shutil.rmtree(base / "train")
    shutil.rmtree(base / "valid")
    res = _prep(cli, "chexpert", tmp_path / "raw", tmp_path / "out")
    assert res.exit_code == 1 and "missing_file" in res.stderr
    assert not (tmp_path / "out" / "meta.json").exists()
    # a following finetune sees no finished dataset: a clear error, not an unrelated one
    res2 = cli("finetune", "--task", "chexpert-cls", "--data", tmp_path / "out",
               "--checkpoint", "none", "--out", tmp_path / "ft")  # fmt: skip
    assert res2.exit_code == 2 and "meta.json" in res2.stderr


# ---------------------------------------------------------------------------------------
# F / H10: list files with fields fixed from the end


def test_covidx_patient_id_with_spaces(cli, tmp_path):
    build_covidx(tmp_path / "raw", n_train=9, n_test=3)
    lines = (tmp_path / "raw" / "train.txt").read_text().splitlines()
    # H10 and variants: spaces in the id, a 3-field line with a spaced id, tabs
    write_png(tmp_path / "raw" / "train" / "case04.png", gray(40, 40, seed=4))
    write_png(tmp_path / "raw" / "train" / "case05.png", gray(40, 40, seed=5))
    write_png(tmp_path / "raw" / "train" / "case06.jpeg", gray(40, 40, seed=6))
    lines += [
        "SARS 7 case04.png pneumonia rsna",
        "COVID 19 patient 12 case05.png COVID-19",
        "P 9\tcase06.jpeg\tnormal\tcohen data",
    ]
    (tmp_path / "raw" / "train.txt").write_text("\n".join(lines) + "\n")
    res = _prep(cli, "covidx", tmp_path / "raw", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["count"] == 15 and s["skipped"] == 0
    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("id")
    names = ["normal", "pneumonia", "COVID-19"]
    assert names[man.loc["case04.png", "class_index"]] == "pneumonia"
    assert man.loc["case04.png", "patient_id"] == "SARS 7"
    assert names[man.loc["case05.png", "class_index"]] == "COVID-19"
    assert man.loc["case05.png", "patient_id"] == "COVID 19 patient 12"
    assert names[man.loc["case06.jpeg", "class_index"]] == "normal"


def test_covidx_line_parser_fields_from_the_right():
    from cmcgns_cli.data.readers.covidx import parse_list_line

    assert parse_list_line(["SARS", "7", "case04.png", "pneumonia", "rsna"]) == (
        "SARS 7",
        "case04.png",
        "pneumonia",
        "rsna",
    )
    assert parse_list_line(["3100", "case00.png", "normal"]) == ("3100", "case00.png", "normal", "")
    # no image suffix: the class marks the position
    assert parse_list_line(["a", "b", "img001", "COVID-19", "src"]) == (
        "a b",
        "img001",
        "COVID-19",
        "src",
    )


# ---------------------------------------------------------------------------------------
# G / H3: the two SIIM RLE forms


def _siim(root, encode, h=40, w=56):
    """4 positives (one with two rows), 3 negatives; masks by hand."""
    rows, truth = [], {}
    for i in range(7):
        image_id = f"1.2.826.0.1.3680043.10.9.{i}"
        mask = np.zeros((h, w), np.uint8)
        if i < 4:
            parts = [blob(h, w, 10 + 3 * i, 14 + 5 * i, 6, 9)]
            if i == 0:
                parts.append(blob(h, w, 30, 44, 5, 6))
            for p in parts:
                mask |= p
                rows.append({"ImageId": image_id, " EncodedPixels": " " + encode(p)})
        else:
            rows.append({"ImageId": image_id, " EncodedPixels": " -1"})
        d = root / "dicom-images-train" / f"1.2.s.{i}" / f"1.2.r.{i}"
        write_dicom(d / f"{image_id}.dcm", gray(h, w, seed=i))
        truth[image_id] = mask
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)
    return truth


@pytest.mark.parametrize(
    "encode, expected",
    [
        (rle_relative, "relative"),
        (rle_absolute, "absolute"),
    ],
)
def test_siim_rle_encoding_detected_and_decoded(cli, tmp_path, encode, expected):
    truth = _siim(tmp_path / "raw", encode)
    # grouped: one item per image, so its mask is the union of all its rows
    res = _prep(cli, "siim", tmp_path / "raw", tmp_path / "out", "--protocol", "grouped")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["skipped"] == 0 and s["rle_encoding"] == expected
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["rle_encoding"]["encoding"] == expected
    from cmcgns_cli.data.imageio import letterbox_transform, map_mask

    man = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    masks = np.load(tmp_path / "out" / "masks.npy")
    positives = 0
    for i, image_id in enumerate(man["id"]):
        want = truth[image_id]
        tf = letterbox_transform(*want.shape, SIZE)
        if want.any():
            positives += 1
            assert dice(map_mask(want, tf, SIZE), masks[i]) >= 0.99, image_id
        else:
            assert masks[i].sum() == 0
    assert positives >= 3


def test_siim_rle_mixed_encodings_exit_2(cli, tmp_path):
    _siim(tmp_path / "raw", rle_relative)
    df = pd.read_csv(tmp_path / "raw" / "train-rle.csv", dtype=str)
    m = blob(40, 56, 20, 20, 8, 12)
    df.loc[1, " EncodedPixels"] = " " + rle_absolute(m)
    df.loc[2, " EncodedPixels"] = " " + rle_absolute(blob(40, 56, 12, 30, 7, 10))
    df.to_csv(tmp_path / "raw" / "train-rle.csv", index=False)
    res = _prep(cli, "siim", tmp_path / "raw", tmp_path / "out")
    assert res.exit_code == 2
    assert "absolute" in res.stderr and "relative" in res.stderr and "train-rle.csv" in res.stderr


def test_rle_encoders_agree_with_hand_counts():
    """The builders themselves: a 3x2 mask, column-major pixels 1, 2 and 4 (0-based)."""
    m = np.array([[0, 0], [1, 1], [1, 0]], np.uint8)
    assert rle_relative(m) == "1 2 1 1"
    assert rle_absolute(m) == "2 2 5 1"


def test_object_cxr_image_names_with_windows_paths(cli, tmp_path):
    from tests.data.rawfix import build_object_cxr

    build_object_cxr(tmp_path / "raw")
    base = _prep(cli, "object-cxr", tmp_path / "raw", tmp_path / "out0")
    assert base.exit_code == 0, base.stderr
    n = json.loads(base.stdout)["count"]
    for split in ("train", "dev"):
        df = pd.read_csv(tmp_path / "raw" / f"{split}.csv", dtype=str, keep_default_na=False)
        df["image_name"] = [f"E:\\object-CXR\\{split}\\{x}" for x in df["image_name"]]
        df.to_csv(tmp_path / "raw" / f"{split}.csv", index=False)
    res = _prep(cli, "object-cxr", tmp_path / "raw", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["count"] == n and s["paths_rerooted"] >= n  # skipped rows resolve too
    assert set(s["dropped_prefixes"]) == {"object-CXR"}  # the rest exists under --src
