"""Streaming, resumable, atomic, parallel image writer for ``prepare``.

Work happens in ``OUT/.work/``:

- ``images.npy`` (and ``masks.npy``): pre-allocated ``uint8 (N, S, S)`` with
  ``numpy.lib.format.open_memmap`` for the N candidate rows; worker processes open it
  ``r+`` and write their rows in place, so pixels never travel between processes and
  memory stays flat whatever N is.
- ``journal.jsonl``: one line per finished row (its transform, or why it was skipped),
  appended by the parent after the worker returned, i.e. after the pixels were written.
  A killed run leaves rows either journaled (kept on resume) or not (redone).
- ``state.json``: the fingerprint of the job (inputs and parameters); a resume with a
  different fingerprint starts over.

:func:`finalize` copies the kept rows (all, when none failed: then it is a rename) to
``OUT/images.npy`` through a temporary name; ``prepare`` then writes the manifest,
skipped.csv and finally meta.json, whose presence marks a finished dataset.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli import outdir
from cmcgns_cli.data import imageio
from cmcgns_cli.errors import RunFailedError

# Every reason a row can land in skipped.csv (reader-level and decode-level).
SKIP_REASONS: dict[str, str] = {
    "missing_file": "listed in a CSV / split file but not on disk",
    "empty_file": "zero-byte file",
    "unreadable_image": "not a decodable image (corrupt, not an image, unsupported)",
    "truncated_image": "JPEG without end marker, PNG without IEND, short DICOM pixel data",
    "no_pixel_data": "DICOM without PixelData",
    "bad_mask": "mask RLE that does not fit the image",
    "report_missing": "no report file / no report text",
    "report_empty": "report has no text in FINDINGS / IMPRESSION (or at all)",
    "report_too_short": "fewer than --min-words words in the kept sentences",
    "not_radiograph": "DICOM whose Modality is not a projection radiograph (CR, DX, RG, DR): "
    "CT, MR, US, XA, SEG, photos...; the detail names it; --any-modality keeps them",
    "not_frontal": "lateral or unknown view (mimic, chexpert keep PA / AP / frontal)",
    "not_in_split": "mimic image absent from the official split file",
    "no_findings_or_impression": "mimic --protocol mgca: report has neither an IMPRESSION "
    "nor a FINDINGS section (no fall-back, as the authors' code)",
    "unknown_class": "covidx class that is not one of the known labels",
    "bad_annotation": "object-cxr annotation string that cannot be parsed, or an image whose "
    "boxes (object-cxr, rsna) all lie outside the picture or have no area",
    "missing_value:<col>": "a blank value in a required CSV column <col>",
}

WORK = ".work"
JOURNAL = "journal.jsonl"
STATE = "state.json"
CHUNK = 16

# A task: (index, source path, mask spec). Mask spec: None, ("rle", [str], encoding) or
# ("boxes", [[x, y, w, h] original px]).
Task = tuple[int, str, Any]
Result = dict[str, Any]

_STATE: dict[str, Any] = {}


def fingerprint(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


# ---------------------------------------------------------------------------------------
# Worker side


def _init_worker(
    images: str, masks: str | None, size: int, reduce: bool, any_modality: bool = False
) -> None:
    import cv2

    cv2.setNumThreads(1)
    _STATE.clear()
    _STATE.update(
        images=np.load(images, mmap_mode="r+"),
        masks=np.load(masks, mmap_mode="r+") if masks else None,
        size=size,
        reduce=reduce,
        any_modality=any_modality,
    )


def _init_pool_worker(*args: Any) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool and keeps the
    # journal; a worker dying of KeyboardInterrupt would only break the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(*args)


def process_one(task: Task) -> Result:
    """Decode, letterbox and store one row; return its journal record. Never raises."""
    idx, path, mask_spec = task
    size, images, masks = _STATE["size"], _STATE["images"], _STATE["masks"]
    try:
        img, tf, dec = imageio.load_prepared_image(path, size, reduce=_STATE["reduce"])
    except imageio.ImageError as exc:
        return {"i": idx, "skip": exc.reason, "detail": exc.detail[:200]}
    except Exception as exc:  # a decoder bug must not stop a 377k-image run
        return {
            "i": idx,
            "skip": "unreadable_image",
            "detail": f"{type(exc).__name__}: {exc}"[:200],
        }
    wrong = "" if _STATE.get("any_modality") else imageio.not_radiograph(dec.tags)
    if wrong:
        return {"i": idx, "skip": "not_radiograph", "detail": wrong}
    if masks is not None:
        try:
            masks[idx] = _mask(mask_spec, tf, size)
        except ValueError as exc:
            return {"i": idx, "skip": "bad_mask", "detail": str(exc)[:200]}
    images[idx] = img
    return {
        "i": idx,
        "tf": tf.as_dict(),
        "view": dec.view,
        "reduced": dec.reduced,
        "orientation": dec.orientation,
        "fallbacks": ";".join(dec.fallbacks),
        "tags": dec.tags,
    }


def _mask(spec: Any, tf: imageio.Transform, size: int) -> np.ndarray:
    if not spec:
        return np.zeros((size, size), dtype=np.uint8)
    if spec[0] == "rle":
        from cmcgns_cli.data.readers.siim import rle_decode

        full = np.zeros((tf.orig_h, tf.orig_w), dtype=np.uint8)
        encoding = spec[2] if len(spec) > 2 else "relative"
        for rle in spec[1]:
            full |= rle_decode(rle, tf.orig_h, tf.orig_w, encoding)
        return imageio.map_mask(full, tf, size)
    if spec[0] == "boxes":
        boxes = imageio.clip_boxes(spec[1], tf.orig_h, tf.orig_w).boxes
        return imageio.boxes_mask(imageio.map_boxes(boxes, tf), size)
    raise ValueError(f"unknown mask spec {spec[0]!r}")


def process_chunk(chunk: Sequence[Task]) -> list[Result]:
    return [process_one(t) for t in chunk]


# ---------------------------------------------------------------------------------------
# Parent side


def read_journal(path: Path) -> dict[int, Result]:
    done: dict[int, Result] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                done[int(rec["i"])] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
    return done


def run_images(
    out: Path,
    tasks: Sequence[Task],
    *,
    size: int,
    with_masks: bool,
    workers: int,
    reduce: bool,
    job: str,
    any_modality: bool = False,
    on_progress: Callable[..., None] | None = None,
    chunk: int = CHUNK,
) -> tuple[list[Result], int]:
    """Decode every task into ``OUT/.work``; returns (results by index, rows resumed)."""
    work = out / WORK
    n = len(tasks)
    state_path = work / STATE
    state = {"job": job, "n": n, "size": size, "masks": with_masks}
    if work.exists():
        try:
            old = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != state:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    img_path, mask_path = work / "images.npy", work / "masks.npy"
    if not state_path.is_file():
        for p in (img_path, mask_path, work / JOURNAL):
            p.unlink(missing_ok=True)
        # before the first image: room for the image (and mask) arrays, and the manifest
        outdir.check_space(work, (2 if with_masks else 1) * n * size * size + 2**20, "images")
        _alloc(img_path, (n, size, size))
        if with_masks:
            _alloc(mask_path, (n, size, size))
        tmp = work / f".{STATE}.tmp"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, state_path)
    done = read_journal(work / JOURNAL)
    resumed = len(done)
    if on_progress and resumed:
        on_progress(resumed, True)
    todo = [t for t in tasks if t[0] not in done]
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    masks_arg = str(mask_path) if with_masks else None
    with open(work / JOURNAL, "a", encoding="utf-8") as journal:

        def record(results: list[Result]) -> None:
            for rec in results:
                done[rec["i"]] = rec
            journal.write("".join(json.dumps(r) + "\n" for r in results))
            journal.flush()
            if on_progress:
                on_progress(len(results))

        if workers <= 0:
            _init_worker(str(img_path), masks_arg, size, reduce, any_modality)
            try:
                for c in chunks:
                    record(process_chunk(c))
            finally:
                _STATE.clear()
        else:
            _run_pool(
                chunks, workers, (str(img_path), masks_arg, size, reduce, any_modality), record
            )
    results = [done[i] for i in range(n)]
    return results, resumed


def _run_pool(
    chunks: list[list[Task]],
    workers: int,
    initargs: tuple[Any, ...],
    record: Callable[[list[Result]], None],
) -> None:
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    pending: set[Future[list[Result]]] = set()
    it = iter(chunks)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_pool_worker, initargs=initargs
    )
    try:
        while True:
            while len(pending) < 3 * workers:
                c = next(it, None)
                if c is None:
                    break
                pending.add(pool.submit(process_chunk, c))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                record(fut.result())
    except BrokenProcessPool as exc:
        # keep what the surviving workers finished, then report
        for fut in pending:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut.result())
        raise RunFailedError(
            f"a decoder process died ({exc}); finished rows are kept: re-run the same "
            "command to resume"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _alloc(path: Path, shape: tuple[int, int, int]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    del arr
    try:
        # the memory map is sparse: take its blocks now, or a full disk ends the writers
        # with SIGBUS (exit 135, no message) half-way through
        outdir.reserve(tmp, os.path.getsize(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def finalize(out: Path, kept: Sequence[int], *, size: int, with_masks: bool) -> None:
    """Move the kept rows of ``.work/images.npy`` (and masks) to ``OUT`` atomically."""
    work = out / WORK
    names = ["images.npy"] + (["masks.npy"] if with_masks else [])
    kept = np.asarray(kept, dtype=np.int64)
    for name in names:
        src = work / name
        if not src.is_file():
            continue  # moved by an earlier, interrupted finalize
        arr = np.load(src, mmap_mode="r")
        if len(kept) == len(arr) and (len(kept) == 0 or kept[-1] == len(arr) - 1):
            del arr
            os.replace(src, out / name)
            continue
        tmp = out / f".{name}.tmp"
        outdir.check_space(out, len(kept) * size * size, name)
        dst = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(kept), size, size)
        )
        outdir.reserve(tmp, os.path.getsize(tmp))
        step = 1024
        for a in range(0, len(kept), step):
            dst[a : a + step] = arr[kept[a : a + step]]
        dst.flush()
        del dst, arr
        os.replace(tmp, out / name)
        src.unlink()
    if not with_masks:
        (out / "masks.npy").unlink(missing_ok=True)


def cleanup(out: Path) -> None:
    shutil.rmtree(out / WORK, ignore_errors=True)
