"""Benchmark: the prepared-format training loader vs decoding raw JPEGs on the fly.

Writes a synthetic MIMIC-CXR-JPG layout of MIMIC-size images (2500 x 3000 grayscale JPEG,
quality 95; bench_prepare.write_layout), prepares it (``cmcgns prepare mimic``, 256 px), then
feeds the same pairs through two DataLoaders with the same workers, batch and output
(a 1 x 224 x 224 crop by ``--augment``, default the preset's ``random_crop``; tokens from
the same cache):

* prepared: ``PairedDataset`` reading the uint8 memmap (what ``cmcgns pretrain`` uses);
* raw: decode the full JPEG with OpenCV, resize the longer side to 256 and pad (what peers'
  loaders do every step), then the same crop.

Then the batches as the worker processes hand them over (shared memory; on CUDA then
pinned and copied): the model-ready collate (float32 (B, 3, 224, 224), normalised on the
CPU, what the trainer shipped before issue 31) against the wire collate (1-channel uint8
pixels, normalised in the main process as the trainer does on the device): bytes per batch
and batches/s, normalisation included.

Prints images/s for both and the ratio; the last line is the ratio. Not a test.

    python bench/bench_loader.py [--n 48] [--workers 2] [--epochs 2] [--skip-raw]
        [--augment random_crop|resized_crop]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import write_layout  # noqa: E402

from cmcgns_cli.config import preset  # noqa: E402
from cmcgns_cli.data.paired import PadCollate, PairedDataset  # noqa: E402
from cmcgns_cli.data.prepare import run_prepare  # noqa: E402
from cmcgns_cli.data.prepared import open_prepared  # noqa: E402
from cmcgns_cli.data.tokenize import token_cache, train_wordpiece  # noqa: E402


class RawJPEGPairs(Dataset):
    """The peers' way: full JPEG decode + resize per item, then the same crop/jitter."""

    def __init__(self, paired: PairedDataset, paths: list[Path]) -> None:
        self.paired, self.paths = paired, paths

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, k: int) -> dict:
        ds = self.paired
        row = int(ds.rows[k])
        img = cv2.imread(str(self.paths[row]), cv2.IMREAD_GRAYSCALE)
        s = ds.image_size
        h, w = img.shape
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        square = np.zeros((s, s), dtype=np.uint8)
        square[(s - nh) // 2 : (s - nh) // 2 + nh, (s - nw) // 2 : (s - nw) // 2 + nw] = small
        rng = np.random.default_rng([ds.seed, ds.epoch, row])
        ids, sidx, n = ds.tokens.encode(row, ds.max_length, ds.max_sentences)
        return {
            "pixels": ds.pixels(square, rng),
            "input_ids": ids,
            "sentence_index": sidx,
            "num_sentences": n,
            "index": row,
        }


def rate(ds: Dataset, pad: int, workers: int, batch: int, epochs: int) -> float:
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=PadCollate(pad),
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up epoch: worker start, page cache
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in loader:
            n += int(b["images"].shape[0])
    return n / (time.perf_counter() - t0)


def collate_rate(
    ds: Dataset, pad: int, workers: int, batch: int, epochs: int, wire: bool
) -> tuple[float, int, int, str]:
    """(batches/s, image bytes a batch, all bytes a batch, image dtype) with
    ``PadCollate(pad, wire)``;
    a wire batch is normalised after it arrives (``speed.to_device`` on the CPU)."""
    from cmcgns_cli.train import speed

    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=PadCollate(pad, wire=wire),
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up epoch
        pass
    t0 = time.perf_counter()
    n = image_bytes = all_bytes = 0
    dtype = ""
    for _ in range(epochs):
        for b in loader:
            image = b["pixels" if wire else "images"]
            image_bytes, dtype = int(image.nbytes), str(image.dtype).removeprefix("torch.")
            all_bytes = sum(int(v.nbytes) for v in b.values() if isinstance(v, torch.Tensor))
            if wire:
                b = speed.to_device(b, torch.device("cpu"), False)
            n += 1
    return n / (time.perf_counter() - t0), image_bytes, all_bytes, dtype


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip-raw", action="store_true", help="only the collate comparison")
    ap.add_argument("--augment", choices=("random_crop", "resized_crop"), default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        write_layout(tmp / "raw", args.n, 3000, 2500)
        with contextlib.redirect_stdout(io.StringIO()):
            run_prepare(
                "mimic",
                src=tmp / "raw",
                out=tmp / "prepared",
                size=256,
                workers=args.workers,
                options={"protocol": "mgca", "min_words": 3},
                as_json=True,
            )
        prepared = open_prepared(tmp / "prepared")
        rows = prepared.split_indices("train")
        sents = (str(s) for r in rows for s in list(prepared.manifest["sentences"].iat[r]))
        tok = train_wordpiece(sents, 200, tmp / "tok")
        cfg = preset("paper-resnet50")  # 256 px prepared, 224 px crops
        cfg.data.augment = args.augment or cfg.data.augment
        paired = PairedDataset(prepared, "train", token_cache(prepared, tok, tmp), cfg.data, True)
        jpgs = {p.stem: p for p in (tmp / "raw").rglob("*.jpg")}
        man = prepared.manifest
        if "source_path" in man.columns:
            paths = [jpgs[Path(str(p)).stem] for p in man["source_path"]]
        else:
            paths = [jpgs[str(i)] for i in man["id"]]
        pad = tok.pad_token_id
        print(
            f"{len(paired)} pairs, 2500x3000 JPEG sources, 224 px crops, workers={args.workers}, "
            f"batch={args.batch}, cpus={os.cpu_count()}, augment={cfg.data.augment}"
        )
        old = collate_rate(paired, pad, args.workers, args.batch, args.epochs, wire=False)
        new = collate_rate(paired, pad, args.workers, args.batch, args.epochs, wire=True)
        for name, (bps, img, total, dtype) in (("3-channel", old), ("1-channel", new)):
            print(
                f"{dtype} {name:9s} batches: {img / 2**20:6.2f} MiB images, "
                f"{total / 2**20:6.2f} MiB in all a batch, {bps:6.2f} batches/s"
            )
        print(f"bytes a batch {old[2] / new[2]:.1f}x fewer, batches/s {new[0] / old[0]:.2f}x")
        if args.skip_raw:
            return
        fast = rate(paired, pad, args.workers, args.batch, args.epochs)
        slow = rate(RawJPEGPairs(paired, paths), pad, args.workers, args.batch, args.epochs)
        print(f"prepared memmap loader : {fast:8.1f} images/s")
        print(f"raw JPEG decode+resize : {slow:8.1f} images/s")
        print(f"ratio prepared / raw: {fast / slow:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
