"""Hand-made raw-layout fixtures for the prepare tests (small, written per test session).

Each builder writes one dataset in its original layout, including a few bad inputs, and
returns the ground truth the tests check against.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def gray(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth test image with some structure (gradients + a bright disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 60 + 100 * (xx / max(w - 1, 1)) + 40 * np.sin(yy / max(h, 1) * 6.0)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.15 * min(h, w)
    img += 60 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, img: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(buf.tobytes())


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


def write_dicom(
    path: Path,
    arr: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    rle: bool = False,
    view: str = "PA",
    signed: bool = False,
) -> None:
    """A minimal valid DICOM (Secondary Capture) holding ``arr`` (uint8 or uint16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = path.stem
    ds.ViewPosition = view
    if arr is not None:
        bits = 8 if arr.dtype == np.uint8 else 16
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = bits
        ds.BitsStored = 12 if bits == 16 else 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if signed else 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if voi_lut is not None:
            item = Dataset()
            item.LUTDescriptor = [len(voi_lut), 0, 16]
            item.add_new(0x00283006, "US", [int(v) for v in voi_lut])
            ds.VOILUTSequence = Sequence([item])
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        if rle:
            ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------------------
# Layouts

REPORT_OK = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 FINDINGS:
 The lungs are clear without focal consolidation.  No pleural
 effusion or pneumothorax is seen. Heart size is normal.

 IMPRESSION:
 1. No acute cardiopulmonary process.  2. Stable appearance.
"""


def build_mimic(root: Path) -> dict:
    """5 studies / 9 images: good, lateral, too-short report, missing report, missing image,
    truncated JPEG, zero-byte JPEG, not in split."""
    meta_rows, split_rows, chex_rows = [], [], []
    truth: dict[str, dict] = {}

    def add(dicom, subject, study, view, split, *, image="ok", shape=(300, 240)):
        meta_rows.append(
            dict(dicom_id=dicom, subject_id=subject, study_id=study, ViewPosition=view)
        )
        if split:
            split_rows.append(dict(dicom_id=dicom, study_id=study, subject_id=subject, split=split))
        p = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        if image == "ok":
            write_jpeg(p, gray(*shape, seed=len(meta_rows)))
        elif image == "truncated":
            write_jpeg(p, gray(*shape))
            p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
        elif image == "empty":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
        truth[dicom] = dict(split=split, shape=shape, image=image, view=view, study=study)

    def report(subject, study, text):
        p = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    report("10000001", "50000001", REPORT_OK)
    add("d1", "10000001", "50000001", "PA", "train")
    add("d2", "10000001", "50000001", "LATERAL", "train")
    add("d3", "10000001", "50000001", "AP", "train", shape=(200, 260))
    report("10000002", "50000002", "FINDINGS: Normal.\n")
    add("d4", "10000002", "50000002", "PA", "validate")
    add("d5", "10000003", "50000003", "PA", "test")  # no report file
    report("10000004", "50000004", "IMPRESSION: Small left effusion. Mild edema.\n")
    add("d6", "10000004", "50000004", "AP", "test")
    add("d7", "10000004", "50000004", "PA", "test", image="missing")
    add("d8", "10000004", "50000004", "PA", "test", image="truncated")
    add("d9", "10000004", "50000004", "PA", "test", image="empty")
    add("d10", "10000004", "50000004", "PA", "")  # not in split file
    labels = [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "No Finding",
        "Pleural Effusion",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    ]
    chex_rows.append(
        {
            "subject_id": "10000001",
            "study_id": "50000001",
            **{k: "" for k in labels},
            "No Finding": "1.0",
        }
    )
    chex_rows.append(
        {
            "subject_id": "10000004",
            "study_id": "50000004",
            **{k: "" for k in labels},
            "Pleural Effusion": "1.0",
            "Edema": "-1.0",
        }
    )

    def gz(name, rows, cols):
        df = pd.DataFrame(rows, columns=cols)
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        (root / name).write_bytes(gzip.compress(buf.getvalue().encode()))

    gz(
        "mimic-cxr-2.0.0-metadata.csv.gz",
        meta_rows,
        [
            "dicom_id",
            "subject_id",
            "study_id",
            "PerformedProcedureStepDescription",
            "ViewPosition",
            "Rows",
            "Columns",
        ],
    )
    gz("mimic-cxr-2.0.0-split.csv.gz", split_rows, ["dicom_id", "study_id", "subject_id", "split"])
    gz("mimic-cxr-2.0.0-chexpert.csv.gz", chex_rows, ["subject_id", "study_id", *labels])
    return truth


CHEX_COLS = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def build_chexpert(root: Path, n_train: int = 30) -> dict:
    base = root / "CheXpert-v1.0-small"
    rng = np.random.default_rng(1)
    rows = {"train": [], "valid": []}
    truth = {}
    for split, n in (("train", n_train), ("valid", 6)):
        for i in range(n):
            lateral = split == "train" and i % 10 == 9
            rel = f"CheXpert-v1.0-small/{split}/patient{i:05d}/study1/view1_" + (
                "lateral.jpg" if lateral else "frontal.jpg"
            )
            write_jpeg(root / rel, gray(64, 56, seed=i))
            vals = {c: "" for c in CHEX_COLS[5:]}
            for c in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"):
                vals[c] = str(
                    rng.choice(["1.0", "0.0", "-1.0", ""] if split == "train" else ["1.0", "0.0"])
                )
            rows[split].append(
                {
                    "Path": rel,
                    "Sex": "Male",
                    "Age": "50",
                    "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                    "AP/PA": "" if lateral else "AP",
                    **vals,
                }
            )
            truth[rel] = dict(split=split, lateral=lateral, raw=vals)
    for split in rows:
        pd.DataFrame(rows[split], columns=CHEX_COLS).to_csv(base / f"{split}.csv", index=False)
    return truth


def build_rsna(root: Path, n: int = 12) -> dict:
    """RSNA with 256 x 256 DICOMs (boxes in those pixels); patient 0 has two boxes."""
    rows, truth = [], {}
    for i in range(n):
        pid = f"pid-{i:03d}"
        boxes = []
        if i % 3 == 0:
            boxes = [[20.0 + i, 30.0, 60.0, 80.0]] + (
                [[150.0, 100.0, 40.0, 50.0]] if i == 0 else []
            )
        for b in boxes:
            rows.append(dict(patientId=pid, x=b[0], y=b[1], width=b[2], height=b[3], Target=1))
        if not boxes:
            rows.append(dict(patientId=pid, x="", y="", width="", height="", Target=0))
        if i != n - 1:  # the last one is missing on disk
            write_dicom(
                root / "stage_2_train_images" / f"{pid}.dcm",
                gray(256, 256, seed=i),
                view="AP" if i % 2 else "PA",
            )
        truth[pid] = dict(boxes=boxes, view="AP" if i % 2 else "PA", missing=i == n - 1)
    pd.DataFrame(rows).to_csv(root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame({"patientId": list(truth), "class": "Normal"}).to_csv(
        root / "stage_2_detailed_class_info.csv", index=False
    )
    return truth


def build_siim(root: Path, n: int = 10, side: int = 128) -> dict:
    from cmcgns_cli.data.readers.siim import rle_encode

    rows, truth = [], {}
    for i in range(n):
        image_id = f"1.2.276.0.7230010.3.1.4.{i}"
        mask = np.zeros((side, side), np.uint8)
        parts = []
        if i % 2 == 0:
            a = np.zeros_like(mask)
            a[10 + i : 40 + i, 20:50] = 1
            parts.append(a)
            if i == 0:
                b = np.zeros_like(mask)
                b[80:100, 70:120] = 1
                parts.append(b)
        for p in parts:
            mask |= p
            rows.append({"ImageId": image_id, " EncodedPixels": " " + rle_encode(p)})
        if not parts:
            rows.append({"ImageId": image_id, " EncodedPixels": " -1"})
        d = root / "dicom-images-train" / f"1.2.study.{i}" / f"1.2.series.{i}"
        write_dicom(d / f"{image_id}.dcm", gray(side, side, seed=i))
        truth[image_id] = dict(mask=mask, label=float(bool(parts)))
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)
    return truth


def build_covidx(root: Path, n_train: int = 20, n_test: int = 5) -> dict:
    classes = ["normal", "pneumonia", "COVID-19"]
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            fname = f"{split}-{i}.png" if i % 2 else f"{split}-{i}.jpg"
            img = gray(50 + i, 70, seed=i)
            if i % 4 == 1:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            (write_png if fname.endswith(".png") else write_jpeg)(root / split / fname, img)
            cls = classes[i % 3]
            lines.append(f"P{i // 2} {fname} {cls} cohen")
            truth[fname] = dict(split=split, cls=classes.index(cls))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


def build_object_cxr(root: Path) -> dict:
    """Three train images + two dev: rectangle, ellipse, polygon, none, two objects."""
    anns = {
        "train": {
            "00001": "0 10 20 110 70",
            "00002": "1 50 60 150 200",
            "00003": "2 100 100 200 100 200 200 100 200",
            "00004": "",
            "00005": "0 1 2 3",  # bad annotation
        },
        "dev": {"08001": "0 5 5 25 45;1 200 220 260 300", "08002": ""},
    }
    for split, d in anns.items():
        for name in d:
            write_jpeg(root / split / f"{name}.jpg", gray(400, 320, seed=int(name)))
        pd.DataFrame(
            {"image_name": [f"{k}.jpg" for k in d], "annotation": list(d.values())}
        ).to_csv(root / f"{split}.csv", index=False)
    return anns
