"""COVIDx (train.txt / test.txt + image folders) and Object-CXR (train.csv / dev.csv)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cmcgns_cli.synth.common import (
    draw,
    foreign_objects,
    hexid,
    jpeg,
    patient,
    png,
    portrait,
    rngs,
    truth_record,
    write_bytes,
    write_csv,
)
from cmcgns_cli.synth.findings import sample_pathology

SOURCES = ("cohen", "fig1", "actmed", "sirm", "ricord", "rsna")


def write_covidx(out: Path, n: int, seed: int, size: int, progress=None) -> tuple[list, dict]:
    """Mixed sizes and formats (PNG/JPEG, some RGB); ~20% (at least 1) in test.txt."""
    root = out / "covidx"
    n_test = max(1 if n >= 2 else 0, round(0.2 * n))
    lines = {"train": [], "test": []}
    truth = []
    for i in range(n):
        split = "test" if i >= n - n_test else "train"
        r_find, r_img, r_fmt = rngs(seed, "covidx", i, 3)
        p = patient(r_find)
        cls = ("normal", "pneumonia", "COVID-19")[i % 3 if i < 3 else int(r_find.integers(0, 3))]
        findings = []
        if cls == "pneumonia":
            findings = [sample_pathology(r_find, "pneumonia")]
        elif cls == "COVID-19":
            findings = [sample_pathology(r_find, "covid")]
        side = int(size * r_fmt.uniform(0.6, 1.0))
        h, w = portrait(side, float(r_fmt.uniform(0.8, 1.25)))
        rend = draw(p, findings, r_img, h, w)
        img = rend.image
        ext = ".png" if r_fmt.random() < 0.5 else ".jpg"
        if i == 1 or r_fmt.random() < 0.2:  # RGB exports with a faint colour cast
            img = cv2.merge([img, img, np.clip(img.astype(np.int16) + 3, 0, 255).astype(np.uint8)])
        source = SOURCES[int(r_fmt.integers(0, len(SOURCES)))]
        stem = f"{source}-{hexid(seed, 'covidx', i, n=12)}"
        fname = stem + ext
        write_bytes(root / split / fname, png(img) if ext == ".png" else jpeg(img, 90))
        pid = f"{int(hexid(seed, 'covidx-p', i, n=8), 16) % 100000}"
        lines[split].append(f"{pid} {fname} {cls} {source}\n")
        rec = truth_record(fname, rend, findings, cls)
        rec["split"] = split
        truth.append(rec)
        if progress:
            progress()
    for split in ("train", "test"):
        write_bytes(root / f"{split}.txt", "".join(lines[split]).encode())
    return truth, {"images": n, "train": len(lines["train"]), "test": len(lines["test"])}


def _annotation(objects: list[tuple[int, np.ndarray]]) -> str:
    parts = []
    for t, pts in objects:
        coords = " ".join(str(int(v)) for v in np.asarray(pts).reshape(-1))
        parts.append(f"{t} {coords}")
    return ";".join(parts)


def write_object_cxr(out: Path, n: int, seed: int, size: int, progress=None) -> tuple[list, dict]:
    """About half the images carry foreign objects; ~20% (at least 1) go to dev."""
    root = out / "object-cxr"
    n_dev = max(1 if n >= 2 else 0, round(0.2 * n))
    rows = {"train": [], "dev": []}
    truth = []
    for i in range(n):
        split = "dev" if i >= n - n_dev else "train"
        r_find, r_img, r_fmt = rngs(seed, "object-cxr", i, 3)
        p = patient(r_find)
        findings = foreign_objects(r_find) if (i == 0 or r_find.random() < 0.5) else []
        side = int(size * r_fmt.uniform(0.75, 1.0))
        h, w = portrait(side, float(r_fmt.uniform(0.8, 1.2)))
        rend = draw(p, findings, r_img, h, w)
        name = f"{i + (1 if split == 'train' else 8001):05d}.jpg"
        write_bytes(root / split / name, jpeg(rend.image, 90))
        rows[split].append([name, _annotation(rend.objects)])
        rec = truth_record(name, rend, findings, int(bool(rend.objects)))
        rec["split"] = split
        rec["types"] = [t for t, _ in rend.objects]
        truth.append(rec)
        if progress:
            progress()
    for split in ("train", "dev"):
        write_csv(root / f"{split}.csv", ["image_name", "annotation"], rows[split])
    return truth, {"images": n, "train": len(rows["train"]), "dev": len(rows["dev"])}
