"""Shared pieces of the layout writers: seeded draws, finding profiles, deterministic I/O."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cmcgns_cli import jsonio
from cmcgns_cli.synth.anatomy import Anatomy, sample_anatomy, sample_pose
from cmcgns_cli.synth.findings import DEVICE_KINDS, OBJECT_KINDS, Finding, sample_pathology
from cmcgns_cli.synth.render import Rendered, render_image

# Fixed per-layout sub-seeds: adding a layout never changes another's draws.
LAYOUT_IDS = {"mimic": 1, "chexpert": 2, "rsna": 3, "siim": 4, "covidx": 5, "object-cxr": 6}

GENERAL_RATES = {
    "cardiomegaly": 0.16,
    "widened_mediastinum": 0.03,
    "pleural_effusion": 0.18,
    "pneumothorax": 0.06,
    "consolidation": 0.1,
    "pneumonia": 0.06,
    "covid": 0.02,
    "edema": 0.1,
    "atelectasis": 0.14,
    "nodule": 0.05,
    "mass": 0.02,
    "fracture": 0.02,
    "pleural_thickening": 0.02,
}


def rngs(seed: int, layout: str, index: int, n: int) -> list[np.random.Generator]:
    """`n` independent generators for one study/image of one layout."""
    ss = np.random.SeedSequence([seed, LAYOUT_IDS[layout], index])
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def layout_rng(seed: int, layout: str, salt: int = 0) -> np.random.Generator:
    """Layout-level draws (grouping, splits) independent of the per-study ones."""
    return np.random.default_rng([seed, LAYOUT_IDS[layout], 10**9 + salt])


def hexid(*parts: object, n: int = 32) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:n]


def general_findings(
    rng: np.random.Generator, device_rate: float = 0.2, normal_share: float | None = None
) -> list[Finding]:
    """The MIMIC / CheXpert mix: independent pathologies plus support devices.

    `normal_share` None: every study draws each pathology at its `GENERAL_RATES` rate and
    devices at `device_rate` (about 27 % of studies come out with nothing, so 9 % of random
    report pairs state the same findings). A value F in [0, 1]: a study is normal (no
    pathology, no device) with probability F; otherwise the draws above are repeated until
    at least one pathology or device comes out, so exactly a share F is normal in
    expectation. Real IU X-ray reports: 65 % normal by their MeSH indexing.
    """
    if normal_share is not None and rng.random() < normal_share:
        return []
    while True:
        out = [sample_pathology(rng, k) for k, p in GENERAL_RATES.items() if rng.random() < p]
        if rng.random() < device_rate:
            kinds = rng.choice(len(DEVICE_KINDS), size=int(rng.integers(1, 3)), replace=False)
            out += [device(rng, DEVICE_KINDS[int(k)]) for k in sorted(kinds)]
        if out or normal_share is None:
            return out


def device(rng: np.random.Generator, kind: str) -> Finding:
    name = "support_device" if kind in DEVICE_KINDS else "foreign_object"
    return Finding(name=name, kind=kind, seed=int(rng.integers(0, 2**31)))


def foreign_objects(rng: np.random.Generator) -> list[Finding]:
    kinds = rng.choice(len(OBJECT_KINDS), size=int(rng.integers(1, 4)), replace=False)
    return [device(rng, OBJECT_KINDS[int(k)]) for k in sorted(kinds)]


@dataclass
class Patient:
    anatomy: Anatomy
    sex: str
    age: int


def patient(rng: np.random.Generator) -> Patient:
    a = sample_anatomy(rng)
    return Patient(a, "F" if a.female else "M", int(rng.integers(18, 95)))


def draw(
    p: Patient,
    findings: list[Finding],
    rng: np.random.Generator,
    h: int,
    w: int,
    lateral: bool = False,
) -> Rendered:
    pose = sample_pose(rng)
    return render_image(p.anatomy, findings, pose, rng, h, w, lateral=lateral)


def portrait(size: int, aspect: float) -> tuple[int, int]:
    """(h, w) with the longer side `size` and w / h = aspect."""
    return (
        (size, max(8, round(size * aspect)))
        if aspect <= 1
        else (max(8, round(size / aspect)), size)
    )


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def jpeg(img: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert ok
    return buf.tobytes()


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> None:
    data = csv_text(header, rows).encode("utf-8")
    if gz:  # mtime=0 and no file name: same rows, same bytes
        bio = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=bio, mtime=0) as g:
            g.write(data)
        data = bio.getvalue()
    write_bytes(path, data)


def label_str(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def truth_record(image_id: str, r: Rendered, findings: list[Finding], label) -> dict:
    h, w = r.image.shape[:2]
    return {
        "image_id": image_id,
        "width": int(w),
        "height": int(h),
        "findings": [f.truth() for f in findings],
        "boxes": r.boxes,
        "box_labels": r.box_labels,
        "label": label,
    }


def write_truth(out: Path, layout: str, records: list[dict]) -> None:
    text = "".join(jsonio.dumps(rec, sort_keys=False) + "\n" for rec in records)
    write_bytes(out / "truth" / f"{layout}.jsonl", text.encode())
