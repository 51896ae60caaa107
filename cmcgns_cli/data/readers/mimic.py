"""MIMIC-CXR-JPG 2.0.0 + reports: frontal images paired with FINDINGS/IMPRESSION sentences."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cmcgns_cli.data.mgca_text import mgca_report_text, mgca_split_sentences
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, parse_label, read_csv_checked
from cmcgns_cli.data.reports import (
    count_words,
    is_missing_report,
    read_report_file,
    report_sentences,
)

METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz"
LABEL_NAMES = [
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
FRONTAL = ("PA", "AP")
SPLIT_NAMES = {"train": "train", "validate": "validate", "valid": "validate", "test": "test"}


def _find(src: Path, name: str) -> Path:
    for cand in (src / name, src / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    return src / name


def _report_root(src: Path) -> Path:
    for cand in (src / "files", src / "mimic-cxr-reports" / "files", src / "reports" / "files"):
        if cand.is_dir():
            return cand
    return src / "files"


def mgca_sentences(text: str | None, min_words: int) -> tuple[list[str], str | None]:
    """``--protocol mgca`` text: last IMPRESSION then last FINDINGS, no fall-back.

    ``(sentences, None)`` or ``([], reason)``: ``report_missing``,
    ``no_findings_or_impression``, ``report_too_short``.
    """
    if not isinstance(text, str) or is_missing_report(text):
        return [], "report_missing"
    body = mgca_report_text(text)
    if body is None:
        return [], "no_findings_or_impression"
    sentences = mgca_split_sentences(body)  # the authors' sentence rule
    if count_words(sentences) < max(min_words, 1):
        return [], "report_too_short"
    return sentences, None


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    min_words = int(options.get("min_words", 3))
    protocol = options.get("protocol", "mgca")
    meta_df = read_csv_checked(
        _find(src, METADATA), ["dicom_id", "subject_id", "study_id", "ViewPosition"]
    )
    split_df = read_csv_checked(_find(src, SPLIT), ["dicom_id", "split"])
    chex_path = _find(src, CHEXPERT)
    labels_by_study: dict[str, list[float]] = {}
    if chex_path.is_file():
        chex = read_csv_checked(chex_path, ["study_id", *LABEL_NAMES])
        for row in chex[["study_id", *LABEL_NAMES]].itertuples(index=False):
            labels_by_study[str(row[0])] = [parse_label(v) for v in row[1:]]
    split_of = dict(zip(split_df["dicom_id"], split_df["split"], strict=True))
    files = src / "files"
    reports = _report_root(src)
    report_cache: dict[str, tuple[list[str], str | None]] = {}
    items: list[Item] = []
    skipped: list[Skip] = []
    nan_labels = [math.nan] * len(LABEL_NAMES)
    cols = ["dicom_id", "subject_id", "study_id", "ViewPosition"]
    for dicom_id, subject, study, view in meta_df[cols].itertuples(index=False):
        subject, study, view = subject.strip(), study.strip(), view.strip()
        rel = f"p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
        path = str(files / rel)
        if not (dicom_id and subject and study):
            col = "dicom_id" if not dicom_id else ("subject_id" if not subject else "study_id")
            skipped.append(Skip(dicom_id, path, f"missing_value:{col}"))
            continue
        if view.upper() not in FRONTAL:
            skipped.append(Skip(dicom_id, path, "not_frontal", view or "blank ViewPosition"))
            continue
        split = SPLIT_NAMES.get(split_of.get(dicom_id, "").strip().lower())
        if split is None:
            skipped.append(Skip(dicom_id, path, "not_in_split"))
            continue
        if study not in report_cache:
            report_path = reports / f"p{subject[:2]}/p{subject}/s{study}.txt"
            try:
                text: str | None = read_report_file(report_path)
            except OSError:
                text = None
            report_cache[study] = (
                mgca_sentences(text, min_words)
                if protocol == "mgca"
                else report_sentences(text, min_words=min_words)
            )
        sentences, reason = report_cache[study]
        if reason:
            skipped.append(Skip(dicom_id, path, reason))
            continue
        items.append(
            Item(
                id=dicom_id,
                source_path=path,
                split=split,
                patient_id=subject,
                study_id=study,
                view=view.upper(),
                sentences=sentences,
                labels=labels_by_study.get(study, nan_labels),
            )
        )
    meta = {
        "label_names": LABEL_NAMES,
        "label_policy": "CheXpert labeler output per study as given: 1 positive, 0 negative, "
        "-1 uncertain, NaN unmentioned (or study absent from the labels file).",
        "split_description": "official mimic-cxr-2.0.0-split.csv.gz (train / validate / test); "
        "frontal views (PA, AP) only",
        "text": (
            "the last IMPRESSION then the last FINDINGS section (the authors' choice); studies "
            "with neither are dropped; cleaned and split into sentences by the authors' rule "
            "(at digits followed by a period, then at every period)"
            if protocol == "mgca"
            else "FINDINGS then IMPRESSION (all sections of each), falling back to the body "
            "when a report has neither; cleaned and split into sentences"
        ),
        # which sentence rule split the reports (clusters --truth splits its texts the same way)
        "sentence_split": "authors" if protocol == "mgca" else "cmcgns",
        # the authors validate pretraining on the official validate and test studies
        "pretrain_validate_split": "validate+test" if protocol == "mgca" else "validate",
    }
    return ReaderResult(items=items, skipped=skipped, meta=meta, paired=True)
