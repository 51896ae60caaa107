"""A user's own data: a CSV with an image path column, optional report and label columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcgns_cli.data import splits
from cmcgns_cli.data.dicomtags import file_header_tags
from cmcgns_cli.data.paths import PathResolver
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, parse_label, read_csv_checked
from cmcgns_cli.data.reports import report_sentences
from cmcgns_cli.errors import BadInputError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validate",
    "valid": "validate",
    "validate": "validate",
    "validation": "validate",
    "dev": "validate",
    "test": "test",
    "testing": "test",
}


def _find_csv(src: Path, csv_opt: Any) -> Path:
    if csv_opt:
        p = Path(csv_opt)
        return p if p.is_absolute() or p.exists() else src / p
    cands = sorted(src.glob("*.csv"))
    if len(cands) == 1:
        return cands[0]
    raise BadInputError(
        f"{src}: give --csv (found {len(cands)} CSV files here; expected exactly one)"
    )


def _looks_dicom(path: Path) -> bool:
    """A DICOM suffix or the ``DICM`` marker at byte 128 (PS3.10 section 7.1)."""
    if str(path).lower().endswith((".dcm", ".dicom", ".dic")):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    csv_path = _find_csv(src, options.get("csv"))
    image_col = options.get("image_col") or "path"
    report_col = options.get("report_col")
    label_cols = list(options.get("label_cols") or [])
    split_col = options.get("split_col")
    min_words = int(options.get("min_words", 3))
    required = [
        image_col,
        *([report_col] if report_col else []),
        *label_cols,
        *([split_col] if split_col else []),
    ]
    df = read_csv_checked(csv_path, required)
    base = csv_path.parent
    patient_col = next((c for c in ("patient_id", "patient", "subject_id") if c in df), None)
    study_col = next((c for c in ("study_id", "study") if c in df), None)
    skipped: list[Skip] = []
    items: list[Item] = []
    resolver = PathResolver([base, src])
    for n, row in enumerate(df.to_dict("records")):
        rel = str(row[image_col]).strip()
        if not rel:
            skipped.append(Skip(f"row{n + 1}", "", f"missing_value:{image_col}"))
            continue
        path = resolver.resolve(rel)
        sentences = None
        if report_col:
            sentences, reason = report_sentences(row[report_col] or None, min_words=min_words)
            if reason:
                skipped.append(Skip(rel, str(path), reason))
                continue
        split = ""
        if split_col:
            split = SPLIT_ALIASES.get(str(row[split_col]).strip().lower(), "")
            if not split:
                skipped.append(
                    Skip(rel, str(path), f"missing_value:{split_col}", str(row[split_col]))
                )
                continue
        patient = str(row[patient_col]).strip() if patient_col else ""
        study = str(row[study_col]).strip() if study_col else ""
        source = "csv" if patient else ""
        if (not patient or not study) and _looks_dicom(path):
            tags = file_header_tags(path)
            if not patient and tags.get("patient_id"):
                patient, source = tags["patient_id"], "dicom"
            study = study or tags.get("study_uid", "")
        items.append(
            Item(
                id=rel,
                source_path=str(path),
                split=split,
                patient_id=patient,
                study_id=study,
                view=str(row.get("view", "")).strip(),
                sentences=sentences,
                labels=[parse_label(row[c]) for c in label_cols] if label_cols else None,
                extra={"patient_source": source},
            )
        )
    if not split_col:
        groups = [it.patient_id or it.id for it in items]
        for it, s in zip(items, splits.grouped(groups, splits.split_70_15_15, seed=0), strict=True):
            it.split = s
        from_dicom = sum(it.extra["patient_source"] == "dicom" for it in items)
        over = "patients" if patient_col else "images"
        if from_dicom:
            over = f"patients ({from_dicom} rows' PatientID from the DICOM header)"
        desc = (
            "no split column: 70/15/15 train / test / validate with scikit-learn "
            "train_test_split(random_state=0) over " + over + " (an image without a patient "
            "is its own group)"
        )
    else:
        desc = f"from column '{split_col}'"
    meta = {
        "label_names": label_cols,
        "split_description": desc,
        "csv": str(csv_path),
        "label_policy": "label columns as given: 1/0/-1, blank -> NaN" if label_cols else "",
    }
    if resolver.rerooted:
        meta["path_rerooting"] = resolver.report()
    return ReaderResult(items=items, skipped=skipped, meta=meta, paired=bool(report_col))
