"""Inputs for inference: image paths and report text -> the tensors the model reads.

Images go through ``prepare``'s own decoder and letterbox (DICOM VOI LUT / windowing,
MONOCHROME1, resize the longer side and pad to a square) at the prepared size the run was
trained from, then through the run's eval transform (resize to ``data.image_size``, centre
crop ``data.crop_size``, normalise to [-1, 1]) -- exactly what ``PairedDataset`` gives the
model at evaluation time. Reports go through ``report_sentences`` (the sections, cleaning and
sentence split of ``prepare``) and the run's tokenizer in the ``TokenCache`` layout.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import numpy as np
import torch

from cmcgns_cli import jsonio
from cmcgns_cli.data.imageio import DICOM_SUFFIXES, ImageError, load_prepared_image
from cmcgns_cli.data.paired import PairedDataset, collate_paired
from cmcgns_cli.data.reports import clean_text, report_sentences, split_sentences
from cmcgns_cli.data.tokenize import TokenCache, _tokenize_manifest
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.textio import read_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)
TEXT_COLUMNS = ("text", "report", "reports", "report_text", "findings", "impression")
ID_COLUMNS = ("id", "report_id", "study_id", "dicom_id")
DEFAULT_PREPARED_SIZE = 256  # prepare's --size default


def _lines(stream: TextIO) -> list[str]:
    return [ln.strip() for ln in stream.read().splitlines() if ln.strip()]


def expand_images(spec: str, stdin: TextIO | None = None) -> list[str]:
    """``-`` (paths on stdin, one a line), a directory (image files below it, sorted), a
    glob pattern, or one file."""
    if spec == "-":
        return _lines(stdin or sys.stdin)
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise BadInputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) below it")
        return sorted(str(p) for p in files)
    if any(ch in spec for ch in "*?["):
        files = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise BadInputError(f"--images {spec}: the pattern matches no file")
        return files
    if path.is_file():
        return [str(path)]
    raise BadInputError(f"{spec}: no such file, directory or pattern")


def read_reports(spec: str, stdin: TextIO | None = None) -> list[tuple[str, str]]:
    """``(id, text)`` per report: a CSV with a text column (and an id column when present),
    JSON Lines with a ``text`` field, or plain text one report a line (id = line number)."""
    if spec == "-":
        # already decoded by Python; a byte-order mark would otherwise become part of an id
        text, name = (stdin or sys.stdin).read().removeprefix("\ufeff"), "<stdin>"
    else:
        path = Path(spec)
        if not path.is_file():
            raise BadInputError(f"{spec}: no such reports file")
        text = read_text(path, name=spec).text  # detected encoding, no byte-order mark
        name = str(path)
    if name.lower().endswith(".csv"):
        return _csv_reports(text, name)
    if name.lower().endswith((".jsonl", ".ndjson")):
        return _jsonl_reports(text, name)
    return [(str(i + 1), ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]


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


def prepared_size(run_extra: dict[str, Any] | None) -> int:
    """The letterbox size of the dataset the run was trained on (meta.json), else 256."""
    path = (run_extra or {}).get("dataset", {}).get("path")
    if path:
        try:
            meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
            return int(meta["image_size"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return DEFAULT_PREPARED_SIZE


class ImagePrep:
    """Path -> (1, crop, crop) float tensor, as prepare + the eval transform would give."""

    def __init__(self, cfg: Any, prep_size: int = DEFAULT_PREPARED_SIZE) -> None:
        self.prep_size = int(prep_size)
        # PairedDataset.transform reads only these two attributes in eval mode
        self._tf = SimpleNamespace(
            image_size=int(cfg.data.image_size), crop_size=int(cfg.data.crop_size)
        )

    def prepared(self, path: str) -> np.ndarray:
        """uint8 (S, S): what ``prepare`` would store for this file."""
        arr, _, _ = load_prepared_image(path, self.prep_size)
        return arr

    def tensor(self, prepared: np.ndarray) -> torch.Tensor:
        return PairedDataset.transform(self._tf, np.asarray(prepared), None)

    def load(self, path: str) -> tuple[torch.Tensor | None, str | None]:
        """``(tensor, None)`` or ``(None, reason)``: never raises for a bad file."""
        try:
            return self.tensor(self.prepared(path)), None
        except ImageError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any unreadable input becomes a missing row
            return None, f"{type(exc).__name__}: {exc}"


def text_sentences(text: str) -> tuple[list[str], str | None]:
    """The sentences ``prepare`` would keep for this report (one short line allowed)."""
    sents, reason = report_sentences(text, min_words=1)
    if reason is None:
        return sents, None
    if reason == "report_too_short":  # a prompt of one word: still something to embed
        fallback = split_sentences(clean_text(text or ""))
        if fallback:
            return fallback, None
        words = clean_text(text or "").split()
        if words:
            return [" ".join(words)], None
    return [], reason


class TextPrep:
    """Sentence lists -> padded token batches in the training collate's layout."""

    def __init__(self, cfg: Any, tok: Any) -> None:
        self.tok = tok
        self.max_length = int(cfg.data.max_length)
        self.max_sentences = int(cfg.data.max_sentences)

    def items(self, sentence_lists: list[list[str]]) -> list[dict[str, Any] | None]:
        """One item per report (None when no token survives)."""
        tokens, sent_offsets, row_offsets = _tokenize_manifest(sentence_lists, self.tok)
        cache = TokenCache(
            tokens,
            sent_offsets,
            row_offsets,
            self.tok.cls_token_id,
            self.tok.sep_token_id,
            self.tok.pad_token_id,
        )
        out: list[dict[str, Any] | None] = []
        for r in range(len(sentence_lists)):
            if cache.row_token_count(r) == 0:
                out.append(None)
                continue
            ids, sidx, n = cache.encode(r, self.max_length, self.max_sentences)
            out.append(
                {
                    "image": torch.zeros(1, 1, 1),
                    "input_ids": ids,
                    "sentence_index": sidx,
                    "num_sentences": n,
                    "index": r,
                }
            )
        return out

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate_paired(items, self.tok.pad_token_id)
        batch.pop("images")
        return batch
