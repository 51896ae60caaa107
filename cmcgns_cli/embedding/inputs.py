"""Inputs for inference: image paths and report text -> the tensors the model reads.

Images go through ``prepare``'s own decoder and letterbox (DICOM VOI LUT / windowing,
MONOCHROME1, resize the longer side and pad to a square) at the prepared size the run was
trained from, then through the run's eval transform (resize to ``data.image_size``, centre
crop ``data.crop_size``, normalise to [-1, 1]) -- exactly what ``PairedDataset`` gives the
model at evaluation time. Reports go through ``report_sentences`` (the sections, cleaning and
sentence split of ``prepare``) and the run's tokenizer in the ``TokenCache`` layout.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import numpy as np
import torch

from cmcgns_cli.data.imageio import DICOM_SUFFIXES, ImageError, load_prepared_image
from cmcgns_cli.data.paired import PairedDataset, collate_paired
from cmcgns_cli.data.report_files import (  # noqa: F401  (re-exported: embed, api and tests read here)
    ID_COLUMNS,
    REPORTS_FORMATS,
    TEXT_COLUMNS,
    read_reports,
)
from cmcgns_cli.data.reports import clean_text, report_sentences, split_sentences
from cmcgns_cli.data.tokenize import TokenCache, _tokenize_manifest
from cmcgns_cli.errors import BadInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)
DEFAULT_PREPARED_SIZE = 256  # prepare's --size default


def _lines(stream: TextIO) -> list[str]:
    return [ln.strip() for ln in stream.read().splitlines() if ln.strip()]


# What a file's first bytes say it is: (signature test, name). DICOM also by its
# ``DICM`` marker after the 128-byte preamble (PS3.10 section 7.1) or a bare data set.
_SIGNATURES = (
    (lambda b: b[:2] == b"\xff\xd8", "JPEG"),
    (lambda b: b[:8] == b"\x89PNG\r\n\x1a\n", "PNG"),
    (lambda b: b[:2] == b"BM", "BMP"),
    (lambda b: b[:4] in (b"II*\x00", b"MM\x00*"), "TIFF"),
)


def sniff_image(path: Path) -> str | None:
    """The kind of image a file holds by its content (``DICOM``, ``JPEG``, ``PNG``, ``BMP``,
    ``TIFF``), or None. Reads at most 132 bytes; an unreadable file is None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if (len(head) >= 132 and head[128:132] == b"DICM") or (
        head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"
    ):
        return "DICOM"
    return next((name for test, name in _SIGNATURES if test(head)), None)


def scan_images(spec: str, stdin: TextIO | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """``(paths, not_taken)`` for ``--images``: ``-`` (paths on stdin, one a line), a
    directory, a glob pattern, or one file. Below a directory a file is taken when its
    suffix is an image suffix or its content is an image (a suffix-less DICOM by its
    ``DICM`` marker: :func:`sniff_image`); every other file is in ``not_taken`` with the
    reason, so none is dropped without a word. Raises BadInputError when nothing is taken."""
    if spec == "-":
        return _lines(stdin or sys.stdin), []
    path = Path(spec)
    if path.is_dir():
        taken: list[str] = []
        not_taken: list[tuple[str, str]] = []
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            if p.suffix.lower() in IMAGE_SUFFIXES or sniff_image(p):
                taken.append(str(p))
            else:
                not_taken.append(
                    (str(p), "neither an image suffix nor DICOM/JPEG/PNG/BMP/TIFF content")
                )
        if not taken:
            example = f", e.g. {not_taken[0][0]}" if not_taken else ""
            raise BadInputError(
                f"{path}: no image below it ({len(not_taken)} files, none with an image "
                f"suffix ({', '.join(IMAGE_SUFFIXES)}) or image content{example})"
            )
        return taken, not_taken
    if any(ch in spec for ch in "*?["):
        files = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise BadInputError(f"--images {spec}: the pattern matches no file")
        return files, []
    if path.is_file():
        return [str(path)], []
    raise BadInputError(f"{spec}: no such file, directory or pattern")


def expand_images(spec: str, stdin: TextIO | None = None) -> list[str]:
    """The paths :func:`scan_images` takes (the files it does not take are left out)."""
    return scan_images(spec, stdin)[0]


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
                    "pixels": torch.zeros(1, 1, 1, dtype=torch.uint8),
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
