"""`cmcgns prepare chexpert` and `cmcgns prepare folder` with their options, through the CLI.

Expected values come from the raw files themselves (pandas on the CSVs, pixels drawn here)
and from the README's rules: CheXpert keeps frontal images, blank -> 0, uncertain (-1) -> 1
for Atelectasis, Edema, Pleural Effusion and -> 0 for Cardiomegaly, Consolidation.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2] / "sample_data" / "chexpert"
CHX = ROOT / "CheXpert-v1.0-small"
FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
UNCERTAIN_TO = {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Consolidation": 0.0, "Edema": 1.0,
                "Pleural Effusion": 1.0}  # fmt: skip


def _prepare(cli, *args) -> dict:
    res = cli("prepare", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_prepare_chexpert_options_and_label_policy(cli, tmp_path: Path) -> None:
    out = tmp_path / "chx"
    summary = _prepare(cli, "chexpert", "--src", ROOT, "--out", out, "--size", "48",
                       "--protocol", "grouped", "--workers", "2")  # fmt: skip
    raw = pd.concat([pd.read_csv(CHX / "train.csv"), pd.read_csv(CHX / "valid.csv")])
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"].set_index("Path")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image_size"] == 48 and meta["protocol"]["name"] == "grouped"
    assert meta["label_names"] == FIVE
    manifest = pd.read_parquet(out / "manifest.parquet")
    not_in_split = summary["skipped_by_reason"].pop("not_in_split", 0)
    assert summary["count"] + not_in_split == len(frontal) == len(manifest) + not_in_split
    assert np.load(out / "images.npy", mmap_mode="r").shape == (len(manifest), 48, 48)
    assert summary["skipped_by_reason"] == {"not_frontal": int((raw["Frontal/Lateral"] !=
                                                                "Frontal").sum())}  # fmt: skip
    seen_uncertain = set()
    for image_id, labels in zip(manifest["id"], manifest["labels"], strict=True):
        row = frontal.loc[image_id]
        for name, got in zip(FIVE, labels, strict=True):
            v = row[name]
            want = 0.0 if pd.isna(v) else UNCERTAIN_TO[name] if v == -1 else float(v)
            seen_uncertain |= {name} if v == -1 else set()
            assert got == want, (image_id, name, v, got)
    assert {"Edema", "Cardiomegaly"} <= seen_uncertain  # both policies exercised
    # grouped: no patient in two splits (the 5x200 split included)
    patients = manifest.assign(patient=manifest["id"].str.split("/").str[2])
    assert patients.groupby("patient")["split"].nunique().max() == 1
    assert not_in_split > 0  # the sample world has 5x200 patients with other studies
    # --protocol mgca instead: the official valid.csv is the test split
    out2 = tmp_path / "chx-mgca"
    _prepare(cli, "chexpert", "--src", ROOT, "--out", out2, "--size", "48")
    m2 = pd.read_parquet(out2 / "manifest.parquet")
    valid = pd.read_csv(CHX / "valid.csv")
    valid_frontal = set(valid.loc[valid["Frontal/Lateral"] == "Frontal", "Path"])
    assert set(m2.loc[m2["split"] == "test", "id"]) == valid_frontal


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "mine"
    (src / "imgs").mkdir(parents=True)
    sizes = [(96, 48), (48, 96), (64, 64), (80, 40), (40, 80), (50, 50)]  # (h, w)
    rows = []
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(src / "imgs" / f"x{i}.png"), np.full((h, w), 40 * (i + 1), np.uint8))
        rows.append({"file": f"imgs/x{i}.png", "text": f"FINDINGS: The heart is enlarged "
                     f"{WORDS[i]}. IMPRESSION: Small left effusion.", "effusion": i % 2,
                     "nodule": (i + 1) % 2, "part": ["train", "val", "test"][i % 3]})  # fmt: skip
    rows.append({"file": "imgs/gone.png", "text": "The lungs are clear today.", "effusion": 0,
                 "nodule": 0, "part": "train"})  # fmt: skip
    pd.DataFrame(rows).to_csv(src / "list.csv", index=False)
    return src


def test_prepare_folder_options(cli, tmp_path: Path) -> None:
    src = _folder(tmp_path)
    out = tmp_path / "prep"
    summary = _prepare(cli, "folder", "--src", src, "--csv", src / "list.csv", "--image-col",
                       "file", "--report-col", "text", "--label-cols", "effusion,nodule",
                       "--split-col", "part", "--size", "32", "--out", out)  # fmt: skip
    assert summary["count"] == 6 and summary["skipped_by_reason"] == {"missing_file": 1}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_names"] == ["effusion", "nodule"] and meta["image_size"] == 32
    m = pd.read_parquet(out / "manifest.parquet").set_index("id")
    images = np.load(out / "images.npy")
    assert images.shape == (6, 32, 32)
    for i in range(6):
        row = m.loc[f"imgs/x{i}.png"]
        assert list(row["labels"]) == [float(i % 2), float((i + 1) % 2)]
        assert row["split"] == ["train", "validate", "test"][i % 3]
        assert list(row["sentences"]) == [f"the heart is enlarged {WORDS[i]}",
                                          "small left effusion"]  # fmt: skip
    # letterbox: x0 is 96 x 48 (h x w) -> 32 x 16, centred with 8 px of zero padding each side
    pos = list(m.index).index("imgs/x0.png")
    x0 = images[pos]
    assert (x0[:, 8:24] == 40).all() and (x0[:, :8] == 0).all() and (x0[:, 24:] == 0).all()
    assert m.loc["imgs/x0.png", "pad_x"] == 8 and m.loc["imgs/x0.png", "scale"] == pytest.approx(
        1 / 3
    )
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["reason"].tolist() == ["missing_file"]
    # a label column the CSV lacks: exit 2 naming the file and the column
    bad = cli("prepare", "folder", "--src", src, "--csv", src / "list.csv", "--image-col", "file",
              "--label-cols", "effusion,mass", "--out", tmp_path / "bad")  # fmt: skip
    assert bad.exit_code == 2 and "list.csv" in bad.stderr and "mass" in bad.stderr
