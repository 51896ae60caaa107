"""`cmcgns prepare`: raw layouts -> prepared format.

Reader (rows, no pixels) -> writer (decode in worker processes into a pre-allocated
memmap, journaled, resumable) -> manifest.parquet, skipped.csv, meta.json (written last;
its presence marks a finished dataset) -> summary table or JSON on stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from cmcgns_cli import interrupts, jsonio, textio
from cmcgns_cli.data import imageio, writer
from cmcgns_cli.data.prepare_rows import keep_boxes, manifest_frame, manifest_row, relative_source
from cmcgns_cli.data.prepare_summary import emit_summary, summarize
from cmcgns_cli.data.prepared import (
    FORMAT_VERSION,
    MANIFEST,
    META,
    SKIPPED,
    atomic_write_text,
)
from cmcgns_cli.data.protocol import describe as describe_protocol
from cmcgns_cli.data.readers import get_reader
from cmcgns_cli.data.readers.base import Item, ReaderResult
from cmcgns_cli.errors import BadInputError, RunFailedError

DATASETS = ("mimic", "chexpert", "rsna", "siim", "covidx", "object-cxr", "folder")
VERSION_PACKAGES = (
    "cmcgns",
    "numpy",
    "pandas",
    "pyarrow",
    "opencv-python-headless",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "scikit-learn",
    "shapely",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def preprocess_params(dataset: str, size: int, options: dict[str, Any], reduce: bool) -> dict:
    params: dict[str, Any] = {
        "image_size": size,
        "protocol": options.get("protocol", "mgca"),
        "resize": "longer side to image_size (cv2 INTER_AREA when shrinking, INTER_LINEAR "
        "when enlarging), zero-padded to a centred square; x' = x * scale + pad_x",
        "reduced_decode": (
            f"JPEG decoded at 1/2, 1/4 or 1/8 (largest factor) while the decoded longer side "
            f">= {imageio.REDUCE_MIN_RATIO:g} x image_size"
            if reduce
            else "off"
        ),
        "dicom": "colour (YBR_*/RGB) to RGB once by pydicom, then luma; modality LUT, VOI LUT "
        "or first window (LINEAR/LINEAR_EXACT/SIGMOID) to 0..255; no window: full data range "
        "(8-bit data kept as stored); MONOCHROME1 or Presentation LUT Shape INVERSE inverted "
        "once; no preamble/file meta: read with force, defaults in decode_fallback",
        "exif_orientation": "applied (JPEG, PNG eXIf, TIFF, WebP); recorded per row",
        "modality": "any (--any-modality)"
        if options.get("any_modality")
        else "DICOM Modality CR, DX, RG or DR, or none; others skipped as not_radiograph",
        "masks": "uint8 0/1",
    }
    if dataset in ("mimic", "folder"):
        params["min_words"] = int(options.get("min_words", 3))
        params["sentence_rule"] = (
            "split on periods, ?/!/;, numbered items, section ends, blank lines and list-item "
            "line breaks; >= 2 word tokens per sentence; NFKC, Unicode dashes and spaces "
            "separate words; lower-cased Unicode letter/digit tokens joined by spaces; "
            "de-identification placeholders (XXXX, ___, [** **], <NAME>-style tags) removed; "
            "Dr. / e.g. / a.m. / vs. / no. N end no sentence; misspelled FINDINGS / "
            "IMPRESSION headers and view-description headers read as sections"
        )
    if dataset == "object-cxr":
        params["polygon_box"] = options.get("polygon_box") or "pole"
    if dataset == "folder":
        for k in ("csv", "image_col", "report_col", "label_cols", "split_col"):
            params[k] = options.get(k) if k != "csv" else str(options.get(k) or "")
    return params


RULE_KEYS = (
    "split_description",
    "box_rule",
    "box_versions",
    "train_pool",
    "text",
    "sentence_split",
    "pretrain_validate_split",
    "validate_in_train",
)


def protocol_record(name: str, reader_meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json's ``protocol``: its name, the reader's split/box/pool/text rules, the
    default fraction sampler and the library versions that decide them."""
    return describe_protocol(name, {k: reader_meta[k] for k in RULE_KEYS if k in reader_meta})


def _task(i: int, item: Item, masks: bool) -> writer.Task:
    spec = None
    if masks and item.mask:
        spec = ("boxes", item.boxes or []) if item.mask[0] == "boxes" else item.mask
    return (i, item.source_path, spec)


def run_prepare(
    dataset: str,
    *,
    src: Path,
    out: Path,
    size: int,
    workers: int,
    options: dict[str, Any],
    as_json: bool,
    reduce: bool = True,
    chunk: int = writer.CHUNK,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare ``dataset`` from ``src`` into ``out``; prints and returns the summary.

    A finished dataset in ``out`` (its meta.json) made by the same job (dataset, settings,
    source rows) is a no-op; one made by another job is refused with BadInputError (exit 2)
    unless ``overwrite``.
    """
    if dataset not in DATASETS:
        raise BadInputError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise BadInputError(f"{src}: --src is not a folder")
    if size < 16:
        raise BadInputError(f"--size {size}: must be at least 16")
    if options.get("protocol", "mgca") not in ("mgca", "grouped"):
        raise BadInputError(f"--protocol {options.get('protocol')!r}: expected mgca or grouped")
    started = time.perf_counter()
    from cmcgns_cli.console import err

    with err.status(f"reading the {dataset} layout in {src}"):
        result: ReaderResult = get_reader(dataset).read(src, options)
    items = result.items
    params = preprocess_params(dataset, size, options, reduce)
    job = writer.fingerprint(
        {
            "dataset": dataset,
            "params": params,
            "rows": [(it.id, it.source_path, it.split) for it in items],
            "format": FORMAT_VERSION,
        }
    )
    meta_path = out / META
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old.get("job") == job and not (out / writer.WORK).exists():
            summary = old.get("summary", {})
            summary = {**summary, "resumed": summary.get("count", 0), "already_prepared": True}
            emit_summary(summary, as_json)
            return summary
        if old.get("job") != job:
            if not overwrite:
                raise BadInputError(
                    f"{out}: already holds a finished dataset prepared with other settings "
                    f"({_differences(old, dataset, params)}); pass --overwrite to replace it, "
                    "or choose another --out"
                )
            meta_path.unlink()  # from here on the folder is no longer a finished dataset
    out.mkdir(parents=True, exist_ok=True)
    tasks = [_task(i, it, result.masks) for i, it in enumerate(items)]
    from rich.progress import TextColumn

    from cmcgns_cli.console import progress

    prog = progress(TextColumn("{task.fields[rate]} img/s"))
    t0 = time.perf_counter()
    with prog:
        bar = prog.add_task(f"prepare {dataset}", total=len(tasks), rate="-")
        state = {"n": 0}

        def advance(k: int, resumed: bool = False) -> None:
            if not resumed:  # rows resumed from the journal do not count towards the rate
                state["n"] += k
            rate = state["n"] / max(time.perf_counter() - t0, 1e-9)
            prog.update(bar, advance=k, rate=f"{rate:.1f}")

        try:
            with interrupts.handle(deferred=False):
                results, resumed = writer.run_images(
                    out,
                    tasks,
                    size=size,
                    with_masks=result.masks,
                    workers=workers,
                    reduce=reduce,
                    job=job,
                    any_modality=bool(options.get("any_modality")),
                    on_progress=advance,
                    chunk=chunk,
                )
        except interrupts.Interrupted as exc:
            done = int(prog.tasks[0].completed)
            raise interrupts.Interrupted(
                exc.signum,
                f"interrupted after {done} of {len(tasks)} images; resume with: "
                f"cmcgns {shlex.join(sys.argv[1:])}",
            ) from None
    decode_s = time.perf_counter() - t0
    kept, rows, skipped = [], [], []
    box_counts = {"clipped": 0, "dropped": 0}
    for it in result.skipped:
        skipped.append((it.id, relative_source(it.source_path, src), it.reason, it.detail))
    for item, rec in zip(items, results, strict=True):
        if "skip" in rec:
            where = relative_source(item.source_path, src)
            skipped.append((item.id, where, rec["skip"], rec.get("detail", "")))
            continue
        if item.boxes:
            clip = imageio.clip_boxes(item.boxes, rec["tf"]["orig_h"], rec["tf"]["orig_w"])
            box_counts["clipped"] += clip.clipped
            box_counts["dropped"] += clip.dropped
            if not clip.boxes:
                where = relative_source(item.source_path, src)
                detail = (
                    f"all {len(item.boxes)} boxes lie outside the {rec['tf']['orig_w']}x"
                    f"{rec['tf']['orig_h']} picture or have no area"
                )
                skipped.append((item.id, where, "bad_annotation", detail))
                continue
            keep_boxes(item, clip)
        kept.append(rec["i"])
        rows.append(manifest_row(item, rec, result, src))
    manifest = manifest_frame(rows, result)
    skipped_df = pd.DataFrame(skipped, columns=["id", "source_path", "reason", "detail"])
    if not kept:
        _fail_empty(dataset, src, out, skipped_df)
    writer.finalize(out, kept, size=size, with_masks=result.masks)
    _atomic_parquet(manifest, out / MANIFEST)
    tmp = out / f".{SKIPPED}.tmp"
    skipped_df.to_csv(tmp, index=False)
    os.replace(tmp, out / SKIPPED)
    summary = summarize(dataset, manifest, skipped_df, result, len(items))
    if "boxes" in manifest or any(it.boxes for it in items):
        summary["boxes_clipped"] = box_counts["clipped"]
        summary["boxes_dropped"] = box_counts["dropped"]
    meta = {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "image_size": size,
        "count": int(len(manifest)),
        "splits": summary["splits"],
        "source": str(src.resolve()),
        # drawn by `cmcgns synth` (its world keeps the truth beside the layouts)
        "synthetic": (src.resolve().parent / "truth" / "summary.json").is_file(),
        # the encoding each text input was read with, by path below --src (see textio)
        "text_encodings": _encodings_below(src),
        "preprocess": params,
        "versions": package_versions(),
        "skipped": int(len(skipped_df)),
        "skipped_by_reason": summary["skipped_by_reason"],
        "label_names": list(result.meta.get("label_names", [])),
        **{k: v for k, v in result.meta.items() if k != "label_names"},
        "protocol": protocol_record(options.get("protocol", "mgca"), result.meta),
        "paired": result.paired,
        "has_masks": result.masks,
        "job": job,
        "summary": summary,
    }
    for key in ("boxes_clipped", "boxes_dropped"):
        if key in summary:
            meta[key] = summary[key]
    if "images_in_two_splits" in summary:
        meta["images_in_two_splits"] = summary["images_in_two_splits"]
    atomic_write_text(out / META, jsonio.dumps(meta, indent=2, default=str))
    writer.cleanup(out)
    summary = {
        **summary,
        "resumed": resumed,
        "seconds": round(time.perf_counter() - started, 2),
        "images_per_s": round((len(tasks) - resumed) / max(decode_s, 1e-9), 2),
    }
    emit_summary(summary, as_json)
    return summary


def _encodings_below(src: Path) -> dict[str, str]:
    """``{path relative to src: encoding}`` of the text files read from ``src``."""
    root = src.resolve()
    out = {}
    for path, encoding in textio.encodings_read().items():
        full = Path(path).resolve()
        if root in full.parents:
            out[full.relative_to(root).as_posix()] = encoding
    return dict(sorted(out.items()))


def _fail_empty(dataset: str, src: Path, out: Path, skipped: pd.DataFrame) -> None:
    """A prepare that kept nothing is a failed run: skipped.csv is written (it says why),
    meta.json (the mark of a finished dataset) is not; exit 1 with the commonest reason."""
    tmp = out / f".{SKIPPED}.tmp"
    skipped.to_csv(tmp, index=False)
    os.replace(tmp, out / SKIPPED)
    writer.cleanup(out)
    if skipped.empty:
        raise RunFailedError(
            f"prepare {dataset}: 0 images taken: the layout in {src} lists no image rows"
        )
    reason, n = Counter(skipped["reason"]).most_common(1)[0]
    example = skipped.loc[skipped["reason"] == reason].iloc[0]
    where = str(example["source_path"] or example["id"])
    raise RunFailedError(
        f"prepare {dataset}: 0 of {len(skipped)} images taken; commonest skip reason "
        f"{reason} ({n} rows), e.g. {where}; all reasons in {out / SKIPPED}; no meta.json "
        "written"
    )


def _differences(old: dict[str, Any], dataset: str, params: dict[str, Any]) -> str:
    """What differs between a finished dataset's meta.json and this job, for the message."""
    if old.get("dataset") != dataset:  # another dataset: its settings do not compare
        return f"it is a {old.get('dataset')} dataset, this is {dataset}"
    diffs = []
    before = old.get("preprocess", {})
    for key in sorted(set(before) | set(params)):
        if before.get(key) != params.get(key) and key not in ("resize", "dicom", "masks"):
            diffs.append(f"{key} {before.get(key)} -> {params.get(key)}")
    return ", ".join(diffs) or "other source rows or format version"


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
