"""SIIM-ACR run-length encodings: the two forms ``train-rle.csv`` circulated in.

Both list ``start length`` pairs over the pixels counted down the columns first
(column-major). They differ in what a start is:

- ``relative`` (the stage-1 ``train-rle.csv``): each start is the number of pixels skipped
  after the end of the previous run (the first: from pixel 0);
- ``absolute`` (the stage-2 / Kaggle-standard form): each start is a pixel index, 1-based
  (0-based when some start is 0).

:func:`detect_rle_encoding` decides per file from the rows themselves (and the image size
when known): an absolute row has strictly increasing, non-overlapping runs that fit the
image; a relative row's gaps and lengths sum to at most the image. A file whose rows
disagree is an error (exit 2) naming the encoding, never a silent guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmcgns_cli.errors import BadInputError

RELATIVE = "relative"
ABSOLUTE = "absolute"


@dataclass(frozen=True)
class RleEncoding:
    """What :func:`detect_rle_encoding` found: ``kind`` relative / absolute, ``base`` 0/1
    (absolute only), and the evidence as one sentence."""

    kind: str
    base: int
    evidence: str

    @property
    def spec(self) -> str:
        """Compact form carried with each mask: ``relative``, ``absolute-1``, ``absolute-0``."""
        return self.kind if self.kind == RELATIVE else f"{ABSOLUTE}-{self.base}"

    def as_dict(self) -> dict[str, object]:
        return {"encoding": self.kind, "base": self.base, "evidence": self.evidence}


def parse_rle(text: str) -> np.ndarray:
    """``"s l s l ..."`` -> int64 (n_runs, 2); ``-1`` / blank -> (0, 2). Raises ValueError
    for an odd count or a negative value."""
    text = str(text).strip()
    if text in ("", "-1"):
        return np.zeros((0, 2), dtype=np.int64)
    nums = np.array([int(t) for t in text.split()], dtype=np.int64)
    if len(nums) % 2:
        raise ValueError("odd number of RLE values")
    if (nums < 0).any():
        raise ValueError("negative RLE value")
    return nums.reshape(-1, 2)


def _absolute_fits(runs: np.ndarray, n_pixels: int | None) -> bool:
    starts, lengths = runs[:, 0], runs[:, 1]
    if (np.diff(starts) <= 0).any() or (starts[1:] < starts[:-1] + lengths[:-1]).any():
        return False
    return n_pixels is None or int(starts[-1] + lengths[-1]) <= n_pixels + 1


def _relative_fits(runs: np.ndarray, n_pixels: int | None) -> bool:
    return n_pixels is None or int(runs.sum()) <= n_pixels


def detect_rle_encoding(
    rles: Sequence[str], *, n_pixels: int | None = None, source: str = "train-rle.csv"
) -> RleEncoding:
    """The encoding of one file's RLE strings (see the module docstring).

    ``n_pixels`` is height * width of the images when known (it separates the forms for
    rows with few runs). Raises :class:`BadInputError` when some rows fit only the relative
    form and others only the absolute one, or a row fits neither.
    """
    n_abs = n_rel = n_both = 0
    zero_start = False
    for text in rles:
        try:
            runs = parse_rle(text)
        except ValueError:
            continue  # the writer reports the row as bad_mask
        if len(runs) == 0:
            continue
        zero_start |= bool(runs[0, 0] == 0)
        if len(runs) < 2 and n_pixels is None:
            continue  # one run without the image size: both forms read it alike
        a, r = _absolute_fits(runs, n_pixels), _relative_fits(runs, n_pixels)
        if a and r:
            # a relative row looks absolute only when every gap exceeds the previous start
            # plus its run: plausible for two runs, implausible for many
            if len(runs) >= 4:
                n_abs += 1
            else:
                n_both += 1
        elif a:
            n_abs += 1
        elif r:
            n_rel += 1
        else:
            raise BadInputError(
                f"{source}: an EncodedPixels row fits neither RLE encoding (relative starts: "
                "gaps after the previous run; absolute starts: pixel indices) for images of "
                f"{n_pixels} pixels"
            )
    if n_abs and n_rel:
        raise BadInputError(
            f"{source}: mixed RLE encodings: {n_abs} row(s) read only as absolute starts "
            f"(pixel indices) and {n_rel} only as relative starts (gaps after the previous "
            "run); use one encoding per file"
        )
    if n_abs:
        base = 0 if zero_start else 1
        return RleEncoding(
            ABSOLUTE,
            base,
            f"{n_abs} row(s) have increasing, non-overlapping pixel-index starts "
            f"({base}-based)" + ("" if n_pixels is None else " that fit the image"),
        )
    if n_rel:
        return RleEncoding(
            RELATIVE, 0, f"{n_rel} row(s) have starts that are gaps after the previous run"
        )
    return RleEncoding(
        RELATIVE,
        0,
        "no row tells the forms apart (single runs or ambiguous rows); relative (the "
        "stage-1 form) assumed",
    )


def rle_decode(rle: str, height: int, width: int, encoding: str = RELATIVE) -> np.ndarray:
    """SIIM RLE -> 0/1 uint8 (height, width), pixels counted down the columns first.

    ``encoding``: ``relative``, ``absolute-1`` or ``absolute-0`` (:attr:`RleEncoding.spec`).
    ``-1`` or blank -> empty. Raises ValueError for a run outside the image.
    """
    mask = np.zeros(width * height, dtype=np.uint8)
    runs = parse_rle(rle)
    if len(runs):
        if encoding == RELATIVE:
            ends = np.cumsum(runs.sum(axis=1))
            starts = ends - runs[:, 1]
        elif encoding.startswith(ABSOLUTE):
            base = int(encoding.rpartition("-")[2] or 1) if "-" in encoding else 1
            starts = runs[:, 0] - base
            if (starts < 0).any():
                raise ValueError(f"RLE start below {base} in a {base}-based encoding")
        else:
            raise ValueError(f"unknown RLE encoding {encoding!r}")
        ends = starts + runs[:, 1]
        if int(ends.max()) > mask.size:
            raise ValueError("RLE run past the end of the image")
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            mask[s:e] = 1
    return mask.reshape(width, height).T.copy()
