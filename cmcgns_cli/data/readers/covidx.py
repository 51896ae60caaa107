"""COVIDx (v6 three-class, or CXR-2 binary): split files + image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data import splits
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, require_file
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.textio import read_text

THREE = ["normal", "pneumonia", "COVID-19"]
BINARY = ["negative", "positive"]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif", ".tiff", ".gif", ".webp")
KNOWN_CLASSES = frozenset(c.lower() for c in THREE + BINARY)


def parse_list_line(parts: list[str]) -> tuple[str, str, str, str] | None:
    """``(patient_id, filename, class, source)`` of one COVIDx list line's fields.

    The layout is ``patient_id filename class [source]``: the filename (the rightmost field
    with an image suffix that a class follows), the class after it and the source after
    that are found from the right, so a patient id with spaces (``SARS 7 case04.png
    pneumonia rsna``) keeps its words together. Without a suffixed field, the rightmost
    known class marks the position; else the fixed layout is read from the end (``id file
    class source`` for 4+ fields, ``id file class`` for 3). None for fewer than 2 fields.
    """
    n = len(parts)
    if n < 2:
        return None
    f = next(
        (i for i in range(n - 2, -1, -1) if parts[i].lower().endswith(IMAGE_SUFFIXES)),
        None,
    )
    if f is None:
        c = next((i for i in range(n - 1, 0, -1) if parts[i].lower() in KNOWN_CLASSES), None)
        f = c - 1 if c is not None else (1 if n == 3 else max(n - 3, 0))
    if f + 1 >= n:
        return None
    return " ".join(parts[:f]), parts[f], parts[f + 1], " ".join(parts[f + 2 :])


def _read_split(path: Path) -> list[tuple[str, str, str]]:
    """(patient_id, filename, class) per non-blank line; exit 2 on a line without a class."""
    rows = []
    for n, line in enumerate(read_text(path).text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        parsed = parse_list_line(parts) if len(parts) >= 3 else None
        if parsed is None:
            raise BadInputError(
                f"{path}: line {n} has {len(parts)} field(s), expected "
                "'patient_id filename class [source]' (missing column 'class')"
            )
        rows.append(parsed[:3])
    return rows


def read(src: Path, options: dict[str, Any]) -> ReaderResult:
    protocol = options.get("protocol", "mgca")
    train = _read_split(require_file(src / "train.txt", "COVIDx split file"))
    test = _read_split(require_file(src / "test.txt", "COVIDx split file"))
    val = _read_split(src / "val.txt") if (src / "val.txt").is_file() else None
    classes_seen = {c.lower() for _, _, c in train + test + (val or [])}
    names = BINARY if classes_seen <= {"positive", "negative"} else THREE
    index = {c.lower(): i for i, c in enumerate(names)}
    train_order = list(range(len(train)))  # position in the published split table
    if val is not None:
        train_split = ["train"] * len(train)
        desc = "train.txt -> train, val.txt -> validate, test.txt -> test"
        folders = {"train": "train", "validate": "val", "test": "test"}
    elif protocol == "grouped":
        train_split = splits.grouped([p for p, _, _ in train], splits.split_train_valid, seed=0)
        desc = (
            "train.txt split 80/20 into train / validate by patient_id (leak-free; "
            "train_test_split(test_size=0.2, random_state=0) over patients); "
            "test = test.txt"
        )
        folders = {"train": "train", "validate": "train", "test": "test"}
    else:
        train_split, train_order = mgca.split_train_valid_ordered(len(train), 0.2)
        desc = (
            "train.txt split 80/20 into train / validate with scikit-learn "
            "train_test_split(test_size=0.2, random_state=0) (MGCA); test = test.txt"
        )
        folders = {"train": "train", "validate": "train", "test": "test"}
    rows = [(r, s, "train", o) for r, s, o in zip(train, train_split, train_order, strict=True)]
    rows += [(r, "validate", "validate", k) for k, r in enumerate(val or [])]
    rows += [(r, "test", "test", k) for k, r in enumerate(test)]
    items: list[Item] = []
    skipped: list[Skip] = []
    for (patient, fname, cls), split, origin, order in rows:
        path = str(src / folders[origin] / fname)
        k = index.get(cls.lower())
        if k is None:
            skipped.append(Skip(fname, path, "unknown_class", cls))
            continue
        onehot = [0.0] * len(names)
        onehot[k] = 1.0
        items.append(
            Item(
                id=fname,
                source_path=path,
                split=split,
                patient_id=patient,
                labels=onehot,
                extra={"class_index": k, "mgca_order": order},
            )
        )
    meta = {
        "label_names": names,
        "label_policy": f"one-hot over {names} (class_index column holds the index); "
        + (
            "classes found: binary positive/negative (CXR-2)"
            if names == BINARY
            else "classes found: v6 three-class"
        ),
        "split_description": desc,
    }
    return ReaderResult(items=items, skipped=skipped, meta=meta)
