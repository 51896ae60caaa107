"""An MS-CXR-style phrase-grounding file for the synthetic MIMIC world's test split.

MS-CXR (Boecking et al., ECCV 2022; PhysioNet "MS-CXR" v1.1.0) pairs a phrase from a MIMIC-CXR
report with the radiologist's bounding box of the finding it names, one row per box, in the
file ``MS_CXR_Local_Alignment_v1.1.0.csv`` with the columns

    dicom_id, category_name, label_text, path, x, y, w, h, image_width, image_height, split

(``x, y`` the top-left corner, ``w, h`` the size, all in pixels of the original image of
``image_width x image_height``; ``path`` is the image's path under MIMIC-CXR-JPG).

We write the same columns from the drawn truth (``truth/mimic.jsonl``): every box of a
pathology we draw with a box (consolidation, pneumonia, COVID-like opacity, atelectasis,
nodule, mass; support-device boxes are not findings and are left out) on a frontal image of
the official test split, with a short phrase naming the finding, its side and lobe, the way
MS-CXR phrases read ("right lower lobe consolidation"). The side of a box of a bilateral
finding is taken from where the box lies (patient right = image left).
"""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli.synth.common import write_csv
from cmcgns_cli.synth.reports import LOBES

FILE = "ms-cxr/MS_CXR_Local_Alignment_v1.1.0.csv"
COLUMNS = [
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
    "split",
]
# box label of the drawing -> finding names that draw it
BOX_FINDINGS = {
    "opacity": ("consolidation", "pneumonia", "covid"),
    "atelectasis": ("atelectasis",),
    "nodule": ("nodule",),
    "mass": ("mass",),
}
CATEGORY = {
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "covid": "Lung Opacity",
    "atelectasis": "Atelectasis",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
}
FRONTAL = ("PA", "AP")


def phrase(name: str, side: str, zone: str) -> str:
    """A short MS-CXR-like phrase for one finding on one side."""
    lobe = LOBES.get((side, zone), f"{side} lung")
    if name == "atelectasis":
        return f"{side} basilar atelectasis"
    if name == "covid":
        return f"patchy peripheral opacity in the {side} lung"
    if name in ("nodule", "mass"):
        return f"{name} in the {lobe}"
    return f"{lobe} {name}"


def _finding_for(label: str, side: str, findings: list[dict]) -> dict | None:
    names = BOX_FINDINGS.get(label, ())
    cands = [f for f in findings if f["name"] in names]
    same = [f for f in cands if f.get("side") in (side, "bilateral")]
    return (same or cands or [None])[0]


def mscxr_rows(truth: list[dict]) -> list[list]:
    """The CSV rows (in ``COLUMNS`` order) for the frontal test images of ``truth``."""
    rows = []
    for rec in truth:
        if rec.get("split") != "test" or rec.get("view") not in FRONTAL:
            continue
        sub, study = str(rec["subject_id"]), str(rec["study_id"])
        path = f"files/p{sub[:2]}/p{sub}/s{study}/{rec['image_id']}.jpg"
        for (x, y, w, h), label in zip(rec["boxes"], rec["box_labels"], strict=True):
            side = "right" if x + w / 2 < rec["width"] / 2 else "left"
            f = _finding_for(label, side, rec["findings"])
            if f is None:
                continue
            rows.append([
                rec["image_id"], CATEGORY[f["name"]], phrase(f["name"], side, f.get("zone", "")),
                path, x, y, w, h, rec["width"], rec["height"], "test",
            ])  # fmt: skip
    return rows


def write_mscxr(out: Path, truth: list[dict]) -> int:
    """Write ``OUT/ms-cxr/MS_CXR_Local_Alignment_v1.1.0.csv``; return the number of rows."""
    rows = mscxr_rows(truth)
    write_csv(Path(out) / FILE, COLUMNS, rows)
    return len(rows)
