"""RSNA Pneumonia (stage 2) and SIIM-ACR Pneumothorax: DICOM trees plus their label CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmcgns_cli.synth.common import (
    draw,
    hexid,
    patient,
    rngs,
    truth_record,
    write_bytes,
    write_csv,
)
from cmcgns_cli.synth.dicom import DicomVariant, det_uid, write_dicom
from cmcgns_cli.synth.findings import sample_pathology

# Forced variants for the first images so even a tiny world exercises every reader path.
FORCED = {1: DicomVariant("MONOCHROME1"), 2: DicomVariant(window=True)}


def _variant(i: int, r: np.random.Generator, compress: str) -> DicomVariant:
    if i in FORCED:
        return FORCED[i]
    if i == 3:
        return DicomVariant(compress=compress)
    if i == 4:
        return DicomVariant(bits=12, window=True)
    u = r.random()
    if u < 0.08:
        return DicomVariant("MONOCHROME1", window=r.random() < 0.5)
    if u < 0.16:
        return DicomVariant(window=True, bits=12 if r.random() < 0.5 else 8)
    if u < 0.22:
        return DicomVariant(compress=compress)
    return DicomVariant()


def _uuid(seed: int, *parts) -> str:
    h = hexid(seed, *parts)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _others(r: np.random.Generator) -> list:
    """Non-opacity abnormalities ("No Lung Opacity / Not Normal")."""
    names = ["cardiomegaly", "pleural_effusion", "nodule", "atelectasis"]
    return [sample_pathology(r, k) for k in names if r.random() < 0.25]


def write_rsna(out: Path, n: int, seed: int, size: int, progress=None) -> tuple[list, dict]:
    root = out / "rsna"
    labels, classes, truth = [], [], []
    for i in range(n):
        r_find, r_img, r_var = rngs(seed, "rsna", i, 3)
        p = patient(r_find)
        pid = _uuid(seed, "rsna", i)
        findings = []
        if r_find.random() < 0.35:
            sides = ["right", "left"] if r_find.random() < 0.4 else [None]
            findings += [sample_pathology(r_find, "pneumonia", side=s) for s in sides]
        findings += _others(r_find)
        view = "PA" if r_img.random() < 0.5 else "AP"
        rend = draw(p, findings, r_img, size, size)
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            rend.image,
            sop_uid=det_uid("1.2.276.0.7230010.3.1.4.", seed, "rsna", i),
            study_uid=det_uid("1.2.276.0.7230010.3.1.2.", seed, "rsna", i),
            series_uid=det_uid("1.2.276.0.7230010.3.1.3.", seed, "rsna", i),
            patient_id=pid,
            view=view,
            sex=p.sex,
            age=p.age,
            variant=_variant(i, r_var, "rle"),
        )
        boxes = [b for b, lab in zip(rend.boxes, rend.box_labels, strict=False) if lab == "opacity"]
        target = int(bool(boxes))
        cls = (
            "Lung Opacity" if target else ("No Lung Opacity / Not Normal" if findings else "Normal")
        )
        for b in boxes or [None]:
            row = [pid, *(float(v) for v in b), 1] if b else [pid, None, None, None, None, 0]
            labels.append(row)
            classes.append([pid, cls])
        rec = truth_record(pid, rend, findings, target)
        rec["boxes"], rec["box_labels"] = boxes, ["opacity"] * len(boxes)
        rec["class"] = cls
        truth.append(rec)
        if progress:
            progress()
    write_csv(
        root / "stage_2_train_labels.csv",
        ["patientId", "x", "y", "width", "height", "Target"],
        labels,
    )
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)
    return truth, {"images": n, "rows": len(labels), "positive": sum(t["label"] for t in truth)}


def rle_encode(mask: np.ndarray) -> str:
    """SIIM's RLE: column-major pixel order, starts relative to the previous run's end."""
    flat = np.asarray(mask, bool).T.reshape(-1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flat, [0]]))
    starts = np.nonzero(edges == 1)[0]
    ends = np.nonzero(edges == -1)[0]
    lengths = ends - starts
    rel = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s} {n}" for s, n in zip(rel, lengths, strict=False))


def write_siim(out: Path, n: int, seed: int, size: int, progress=None) -> tuple[list, dict]:
    import cv2

    root = out / "siim"
    rows, truth = [], []
    for i in range(n):
        r_find, r_img, r_var = rngs(seed, "siim", i, 3)
        p = patient(r_find)
        findings = []
        if r_find.random() < 0.35:
            f = sample_pathology(r_find, "pneumothorax")
            if r_find.random() < 0.1:
                f.side = "bilateral"
            findings.append(f)
        rend = draw(p, findings, r_img, size, size)
        image_id = det_uid("1.2.276.0.7230010.3.1.4.", seed, "siim", i)
        study = det_uid("1.2.276.0.7230010.3.1.2.", seed, "siim", i)
        series = det_uid("1.2.276.0.7230010.3.1.3.", seed, "siim", i)
        path = root / "dicom-images-train" / study / series / f"{image_id}.dcm"
        write_dicom(
            path,
            rend.image,
            sop_uid=image_id,
            study_uid=study,
            series_uid=series,
            patient_id=hexid(seed, "siim-pat", i),
            view="PA" if r_img.random() < 0.6 else "AP",
            sex=p.sex,
            age=p.age,
            variant=_variant(i, r_var, "j2k"),
        )
        mask = rend.masks.get("pneumothorax", np.zeros((size, size), bool))
        count, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if count <= 1:
            rows.append([image_id, " -1"])
        for c in range(1, count):  # one row per region, as in the challenge file
            rows.append([image_id, " " + rle_encode(comp == c)])
        png = cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes()
        write_bytes(out / "truth" / "siim_masks" / f"{image_id}.png", png)
        truth.append(truth_record(image_id, rend, findings, int(mask.any())))
        if progress:
            progress()
    write_csv(root / "train-rle.csv", ["ImageId", " EncodedPixels"], rows)
    return truth, {"images": n, "rows": len(rows), "positive": sum(t["label"] for t in truth)}
