"""Benchmark: `prepare` throughput with reduced JPEG decode vs full decode + resize.

Writes a synthetic MIMIC-CXR-JPG layout whose images are MIMIC-size (2500 x 3000, 8-bit
grayscale JPEG, quality 95), prepares it twice in the same run (reduced decode on, then
off; same --size and workers), and prints images/s for both, the ratio, and the mean
absolute pixel difference between the two prepared image arrays. Not a test.

    python bench/bench_prepare.py [--n 24] [--size 256] [--workers 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cmcgns_cli.data import imageio
from cmcgns_cli.data.prepare import run_prepare
from cmcgns_cli.data.prepared import open_prepared

REPORT = "FINDINGS: The lungs are clear. No pleural effusion.\nIMPRESSION: No acute process.\n"


def xray_like(h: int, w: int, seed: int) -> np.ndarray:
    """A chest-X-ray-like 8-bit image: smooth anatomy, ribs, edges and film-grain noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 40 + 80 * np.exp(-(((xx - w / 2) / (0.35 * w)) ** 2))
    for side in (-1, 1):  # lungs: darker ellipses
        cx, cy = w / 2 + side * 0.2 * w, 0.45 * h
        img -= 35 * ((((xx - cx) / (0.15 * w)) ** 2 + ((yy - cy) / (0.3 * h)) ** 2) < 1)
    img += 25 * (np.sin(yy / h * 60 + np.abs(xx - w / 2) / w * 8) > 0.7)  # ribs
    img += rng.normal(0, 6, size=(h, w))
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_layout(root: Path, n: int, h: int, w: int) -> None:
    meta, split = [], []
    base = xray_like(h, w, 0)
    for i in range(n):
        subject, study, dicom = f"1{i:07d}", f"5{i:07d}", f"img{i:04d}"
        d = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (d / f"s{study}").mkdir(parents=True, exist_ok=True)
        img = np.roll(base, shift=i * 7, axis=1)  # distinct images, same cost
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (d / f"s{study}" / f"{dicom}.jpg").write_bytes(buf.tobytes())
        (d / f"s{study}.txt").write_text(REPORT)
        meta.append(dict(dicom_id=dicom, subject_id=subject, study_id=study, ViewPosition="PA"))
        split.append(dict(dicom_id=dicom, study_id=study, subject_id=subject, split="train"))
    for name, rows in (("metadata", meta), ("split", split)):
        buf = io.StringIO()
        pd.DataFrame(rows).to_csv(buf, index=False)
        (root / f"mimic-cxr-2.0.0-{name}.csv.gz").write_bytes(
            gzip.compress(buf.getvalue().encode())
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--width", type=int, default=2500)
    ap.add_argument(
        "--min-ratio",
        type=float,
        default=imageio.REDUCE_MIN_RATIO,
        help="reduced decode while decoded longer side >= this x size",
    )
    args = ap.parse_args()
    imageio.REDUCE_MIN_RATIO = args.min_ratio
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        write_layout(tmp / "raw", args.n, args.height, args.width)
        opts = {"protocol": "mgca", "min_words": 3}
        rates = {}
        for mode, reduce in (("reduced", True), ("full", False)):
            out = tmp / mode
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_prepare(
                    "mimic",
                    src=tmp / "raw",
                    out=out,
                    size=args.size,
                    workers=args.workers,
                    options=opts,
                    as_json=True,
                    reduce=reduce,
                )
            rates[mode] = args.n / (time.perf_counter() - t0)
        a = np.asarray(open_prepared(tmp / "reduced").images, dtype=np.int16)
        b = np.asarray(open_prepared(tmp / "full").images, dtype=np.int16)
        diff = np.abs(a - b)
        ratio = rates["reduced"] / rates["full"]
        print(
            f"images: {args.n} x {args.width}x{args.height} JPEG -> {args.size}, "
            f"workers={args.workers}, reduce while side >= {args.min_ratio:g} x size",
            file=sys.stderr,
        )
        print(f"reduced decode: {rates['reduced']:.2f} img/s")
        print(f"full decode + resize: {rates['full']:.2f} img/s")
        print(f"mean |diff|: {diff.mean():.3f} grey levels (max {int(diff.max())})")
        print(f"speed-up reduced/full: {ratio:.2f}x, mean abs diff {diff.mean():.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
