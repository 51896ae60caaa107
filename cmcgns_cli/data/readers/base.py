"""What every raw-layout reader returns: row records (no pixels) and reader-level skips.

Readers parse CSVs, split files and report text; they never decode an image. The writer
decodes ``Item.source_path`` later, in worker processes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.textio import read_text


@dataclass
class Item:
    """One image to prepare. ``boxes`` are ``[x, y, w, h]`` in ORIGINAL pixels."""

    id: str
    source_path: str
    split: str
    patient_id: str = ""
    study_id: str = ""
    view: str = ""
    sentences: list[str] | None = None
    labels: list[float] | None = None
    boxes: list[list[float]] | None = None
    box_labels: list[int] | None = None
    # None, ("rle", [rle strings]) decoded on the image's own grid, or ("boxes",) = filled boxes
    mask: tuple[Any, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skip:
    id: str
    source_path: str
    reason: str
    detail: str = ""


@dataclass
class ReaderResult:
    items: list[Item]
    skipped: list[Skip]
    meta: dict[str, Any]  # label_names, box_classes, split_description, label_policy, ...
    masks: bool = False
    paired: bool = False


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BadInputError(f"{path}: not found ({what})")
    return path


def read_csv_checked(
    path: Path, required: Iterable[str], *, header: bool = True, **kwargs: Any
) -> pd.DataFrame:
    """Read a CSV (plain or .gz, in any encoding: :func:`cmcgns_cli.textio.read_text`) as
    strings; exit 2 naming the file and a missing column.

    Column names are matched after stripping spaces (SIIM's `` EncodedPixels``).
    """
    require_file(path, "expected by this dataset layout")
    text = read_text(path).text  # any encoding, byte-order mark removed (see textio)
    try:
        df = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_values=[],
            header=0 if header else None,
            **kwargs,
        )
    except (pd.errors.ParserError, EOFError, OSError) as exc:
        raise BadInputError(f"{path}: cannot parse as CSV ({exc})") from None
    except pd.errors.EmptyDataError:
        raise BadInputError(f"{path}: empty file") from None
    if header:
        df.columns = [str(c).strip() for c in df.columns]
        for col in required:
            if col not in df.columns:
                raise BadInputError(f"{path}: missing column '{col}'")
    return df


def sniff_header(path: Path) -> list[str]:
    """The column names of a CSV's first line (any encoding, no byte-order mark)."""
    first = read_text(path).text.split("\n", 1)[0]
    return next(csv.reader(io.StringIO(first)), [])


def parse_label(value: str) -> float:
    """``1.0 / 0.0 / -1.0 / blank`` -> float (blank and junk -> NaN)."""
    try:
        return float(value) if str(value).strip() != "" else float("nan")
    except ValueError:
        return float("nan")
