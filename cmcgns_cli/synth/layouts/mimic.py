"""MIMIC-CXR-JPG 2.0.0 (+ the reports tree): CSV.gz tables, files/pNN/p<subject>/s<study>/."""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli.synth.common import (
    draw,
    general_findings,
    hexid,
    jpeg,
    label_str,
    layout_rng,
    patient,
    portrait,
    rngs,
    truth_record,
    write_bytes,
    write_csv,
)
from cmcgns_cli.synth.labels import MIMIC_LABELS
from cmcgns_cli.synth.reports import make_report

META_COLS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
    "": "",
}
# Study index -> forced report defect, so even a tiny world has each one.
FORCED_DEFECTS = {1: "impression_only", 2: "empty_findings", 3: "non_utf8"}


def _unique_ids(seed: int, tag: str, count: int, base: int, span: int) -> list[int]:
    seen: set[int] = set()
    out = []
    for k in range(count):
        j = 0
        while True:
            v = base + int(hexid(seed, tag, k, j), 16) % span
            if v not in seen:
                break
            j += 1
        seen.add(v)
        out.append(v)
    return out


def _splits(seed: int, n_subj: int) -> list[str]:
    rng = layout_rng(seed, "mimic")
    u = rng.random(n_subj)
    out = ["train" if x < 0.8 else "validate" if x < 0.9 else "test" for x in u]
    need = 2 if n_subj >= 10 else 1 if n_subj >= 3 else 0
    for name in ("validate", "test"):  # guarantee a few held-out subjects even for small n
        k = n_subj - 1
        while out.count(name) < need and k >= 0:
            if out[k] == "train" and out.count("train") > need:
                out[k] = name
            k -= 1
    return out


def _dicom_id(seed: int, i: int, j: int) -> str:
    h = hexid(seed, "mimic-dicom", i, j, n=40)
    return "-".join(h[k : k + 8] for k in range(0, 40, 8))


def write(
    out: Path, n: int, seed: int, size: int, progress=None, normal_share: float | None = None
) -> tuple[list[dict], dict]:
    """n studies and their reports; `normal_share`: see `common.general_findings`."""
    root = out / "mimic-cxr-jpg"
    grp = layout_rng(seed, "mimic", salt=1)  # subject grouping, apart from the split draws
    subj_of = []
    for i in range(n):
        subj_of.append(0 if i == 0 else subj_of[-1] + (grp.random() < 0.65))
    n_subj = subj_of[-1] + 1
    subject_ids = _unique_ids(seed, "mimic-subj", n_subj, 10_000_000, 9_000_000)
    study_ids = _unique_ids(seed, "mimic-study", n, 50_000_000, 9_999_999)
    splits = _splits(seed, n_subj)
    patients = [patient(rngs(seed, "mimic", 10**7 + k, 1)[0]) for k in range(n_subj)]
    meta, split_rows, chex, negbio, truth = [], [], [], [], []
    for i in range(n):
        r_find, r_text, r_view, *r_img = rngs(seed, "mimic", i, 6)
        k = subj_of[i]
        sid, stid = subject_ids[k], study_ids[i]
        findings = general_findings(r_find, normal_share=normal_share)
        n_img = 1 + int(r_view.random() < 0.55) + int(r_view.random() < 0.15)
        u = r_view.random()
        views = ["PA" if u < 0.55 else "AP" if u < 0.95 else ""]
        if n_img > 1:
            views.append("LATERAL" if r_view.random() < 0.85 else "LL")
        if n_img > 2:
            views.append("AP" if r_view.random() < 0.8 else "")
        defect = FORCED_DEFECTS.get(i, "")
        if not defect and i >= 8:
            x = r_text.random()
            defect = (
                "impression_only"
                if x < 0.03
                else "empty_findings"
                if x < 0.05
                else ("non_utf8" if x < 0.06 else "")
            )
        report, labels, sents, sent_findings = make_report(
            findings, r_text, views[0] or "AP", defect
        )
        sentence_truth = [
            {"text": t, "finding": f} for t, f in zip(sents, sent_findings, strict=True)
        ]
        folder = root / "files" / f"p{str(sid)[:2]}" / f"p{sid}"
        write_bytes(folder / f"s{stid}.txt", report)
        date = (
            2110_00_00
            + int(r_view.integers(0, 80)) * 10000
            + int(r_view.integers(1, 13)) * 100
            + int(r_view.integers(1, 29))
        )
        hh, mm, ss, ms = (int(r_view.integers(0, t)) for t in (24, 60, 60, 1000))
        time = f"{hh:02d}{mm:02d}{ss:02d}.{ms:03d}"
        desc = "CHEST (PA AND LAT)" if views[0] == "PA" else "CHEST (PORTABLE AP)"
        h, w = portrait(size, float(r_view.uniform(0.8, 0.9)))
        for j, view in enumerate(views):
            did = _dicom_id(seed, i, j)
            lateral = view in ("LATERAL", "LL")
            rend = draw(patients[k], findings, r_img[j], h, w, lateral=lateral)
            write_bytes(folder / f"s{stid}" / f"{did}.jpg", jpeg(rend.image))
            orient = "Erect" if view == "PA" or lateral else "Recumbent" if view == "AP" else ""
            meta.append(
                [did, sid, stid, desc, view, h, w, date, time, desc, VIEW_MEANING[view], orient]
            )
            split_rows.append([did, stid, sid, splits[k]])
            rec = truth_record(did, rend, findings, labels)
            rec.update(study_id=stid, subject_id=sid, view=view, split=splits[k], defect=defect)
            rec["sentences"] = sentence_truth
            truth.append(rec)
        chex.append([sid, stid] + [label_str(labels[c]) for c in MIMIC_LABELS])
        nb = [
            label_str(
                1.0 if labels[c] == -1.0 and int(hexid(seed, stid, c)[:2], 16) < 128 else labels[c]
            )
            for c in MIMIC_LABELS
        ]
        negbio.append([sid, stid] + nb)
        if progress:
            progress()
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", META_COLS, meta, gz=True)
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        split_rows,
        gz=True,
    )
    head = ["subject_id", "study_id", *MIMIC_LABELS]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", head, chex, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", head, negbio, gz=True)
    return truth, {"studies": n, "images": len(meta), "subjects": n_subj, "reports": n}
