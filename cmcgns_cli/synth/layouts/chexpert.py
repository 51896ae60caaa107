"""CheXpert-v1.0-small: train.csv / valid.csv and train|valid/patientNNNNN/studyK/viewJ_*.jpg."""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli.synth.common import (
    draw,
    general_findings,
    jpeg,
    label_str,
    patient,
    portrait,
    rngs,
    truth_record,
    write_bytes,
    write_csv,
)
from cmcgns_cli.synth.labels import CHEXPERT_LABELS, truth_labels
from cmcgns_cli.synth.reports import make_report

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
DS = "CheXpert-v1.0-small"


def write(
    out: Path, n: int, seed: int, size: int, progress=None, normal_share: float | None = None
) -> tuple[list[dict], dict]:
    """n images; about 10% (at least 2 when n >= 10) go to valid/ with radiologist labels."""
    root = out / "chexpert" / DS
    n_valid = max(2 if n >= 10 else 1 if n >= 3 else 0, round(0.1 * n))
    rows = {"train": [], "valid": []}
    truth = []
    img = 0
    pat = 0
    while img < n:
        split = "valid" if img >= n - n_valid else "train"
        r_pat, r_plan = rngs(seed, "chexpert", 10**7 + pat, 2)
        p = patient(r_pat)
        pat += 1
        for st in range(1 + int(r_plan.random() < 0.3)):
            if img >= n:
                break
            r_find, r_text, r_view, r_img0, r_img1 = rngs(seed, "chexpert", img, 5)
            findings = general_findings(r_find, normal_share=normal_share)
            ap = "AP" if r_view.random() < 0.6 else "PA"
            _, rep_labels, _, _ = make_report(findings, r_text, ap)
            labels = truth_labels([f.name for f in findings]) if split == "valid" else rep_labels
            h, w = portrait(size, float(r_view.uniform(0.78, 0.86)))
            views = [("frontal", ap)]
            if r_view.random() < 0.2 and img + 1 < n:
                views.append(("lateral", ""))
            for j, (fl, apa) in enumerate(views):
                rel = f"{DS}/{split}/patient{pat:05d}/study{st + 1}/view{j + 1}_{fl}.jpg"
                rend = draw(p, findings, (r_img0, r_img1)[j], h, w, lateral=fl == "lateral")
                write_bytes(out / "chexpert" / rel, jpeg(rend.image, 90))
                vals = [label_str(labels[c]) for c in CHEXPERT_LABELS]
                rows[split].append(
                    [rel, "Female" if p.sex == "F" else "Male", p.age, fl.capitalize(), apa, *vals]
                )
                rec = truth_record(rel, rend, findings, labels)
                rec.update(split=split, view=fl)
                truth.append(rec)
                img += 1
                if progress:
                    progress()
    write_csv(root / "train.csv", HEADER, rows["train"])
    write_csv(root / "valid.csv", HEADER, rows["valid"])
    return truth, {"images": img, "train": len(rows["train"]), "valid": len(rows["valid"])}
