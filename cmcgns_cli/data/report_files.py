"""Report files as users give them: ``(id, text)`` per report from a CSV with a text column,
JSON Lines with a ``text`` field, plain text one report a line, or a whole file as one report
(``--reports-format lines|file``). Text is decoded by :mod:`cmcgns_cli.textio` (detected
encoding, no byte-order mark). Used by ``embed --reports``, ``explain --report`` and
``pretrain-text --reports``.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TextIO

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.textio import read_text

TEXT_COLUMNS = ("text", "report", "reports", "report_text", "findings", "impression")
ID_COLUMNS = ("id", "report_id", "study_id", "dicom_id")
REPORTS_FORMATS = ("lines", "file")


def read_reports(
    spec: str, stdin: TextIO | None = None, fmt: str = "lines"
) -> list[tuple[str, str]]:
    """``(id, text)`` per report. ``fmt`` (``--reports-format``): ``lines`` reads a CSV
    with a text column (and an id column when present), JSON Lines with a ``text`` field
    (by suffix), or plain text one report a non-blank line; ``file`` reads the whole file
    as one report (id = the file name, ``0`` for stdin), as ``explain --report FILE`` does
    by default.

    Without an id column / field, the id is the 0-based row index, one convention for all
    three: the CSV data row (header excluded), the JSON Lines line and the text line (blank
    lines count but give no report, so ids stay the rows' places in the file).
    Raises BadInputError."""
    if fmt not in REPORTS_FORMATS:
        raise BadInputError(f"--reports-format {fmt!r}: expected lines or file")
    if spec == "-":
        # already decoded by Python; a byte-order mark would otherwise become part of an id
        text, name = (stdin or sys.stdin).read().removeprefix("\ufeff"), "<stdin>"
    else:
        path = Path(spec)
        if not path.is_file():
            raise BadInputError(f"{spec}: no such reports file")
        text = read_text(path, name=spec).text  # detected encoding, no byte-order mark
        name = str(path)
        check_not_binary(text, spec)
    if fmt == "file":
        return [("0" if spec == "-" else Path(name).name, text)] if text.strip() else []
    if name.lower().endswith(".csv"):
        return _csv_reports(text, name)
    if name.lower().endswith((".jsonl", ".ndjson")):
        return _jsonl_reports(text, name)
    return [(str(i), ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]


# C0 control characters that text files hold (tab, line feed, vertical tab, form feed, CR)
TEXT_CONTROLS = frozenset("\t\n\x0b\x0c\r")
BINARY_SHARE = 0.01  # more control characters than this share of the text: not text


def check_not_binary(text: str, name: str) -> None:
    """Refuse a file that decoded to binary data (an image, an archive given as reports):
    any NUL, or more than 1 % of its characters C0 controls other than tab / line breaks.
    Every byte decodes in some single-byte code page, so without this a JPEG gave dozens
    of "reports" of noise.

    Raises BadInputError naming the file and the count."""
    controls = sum(1 for ch in text if ch < " " and ch not in TEXT_CONTROLS)
    if "\x00" in text or controls > BINARY_SHARE * len(text):
        raise BadInputError(
            f"{name}: binary data, not report text ({controls} control characters in "
            f"{len(text)}); give a CSV, JSON Lines or plain text file"
        )


def _csv_reports(text: str, name: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    lower = {c.lower().strip(): c for c in cols}
    text_col = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    if text_col is None and len(cols) == 1:
        text_col = cols[0]
    if text_col is None:
        raise BadInputError(
            f"{name}: no report text column (one of {', '.join(TEXT_COLUMNS)}); "
            f"found {', '.join(cols) or 'no header'}"
        )
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    out = []
    for i, row in enumerate(reader):
        rid = str(row.get(id_col) or i) if id_col else str(i)
        out.append((rid, row.get(text_col) or ""))
    return out


def _jsonl_reports(text: str, name: str) -> list[tuple[str, str]]:
    out = []
    for i, obj in jsonio.read_lines(text, name):
        if not isinstance(obj, dict):
            raise BadInputError(f"{name}: line {i + 1} is not a JSON object")
        out.append((str(obj.get("id", i)), str(obj.get("text", ""))))
    return out
