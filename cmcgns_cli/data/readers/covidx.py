"""COVIDx (v6 three-class, or CXR-2 binary): split files + image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcgns_cli.data import protocol as mgca
from cmcgns_cli.data import splits
from cmcgns_cli.data.readers.base import Item, ReaderResult, Skip, require_file
from cmcgns_cli.errors import BadInputError

THREE = ["normal", "pneumonia", "COVID-19"]
BINARY = ["negative", "positive"]


def _read_split(path: Path) -> list[tuple[str, str, str]]:
    """(patient_id, filename, class) per non-blank line; exit 2 on a line without a class."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise BadInputError(
                f"{path}: line {n} has {len(parts)} field(s), expected "
                "'patient_id filename class [source]' (missing column 'class')"
            )
        # filenames have no spaces in COVIDx; a source with spaces would only add fields
        rows.append((parts[0], parts[1], parts[2]))
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
