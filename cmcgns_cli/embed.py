"""`cmcgns embed`: images and reports to vectors (Parquet, .npy + ids, or JSON Lines).

Rows: ``id`` (the path as given, or the report id), ``kind`` (image | report),
``embedding`` (the global vector, L2-normalised; null when the input failed), ``error``
(null, or why the input failed); with ``--local`` also ``local`` (image: P x D patch vectors;
report: S x D sentence vectors) and, for reports, ``sentences``. A bad input never stops
the run: it becomes a row with an error and a note on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcgns_cli import jsonio
from cmcgns_cli.console import err, progress
from cmcgns_cli.embedding.encode import image_embeddings, text_embeddings, to_device
from cmcgns_cli.embedding.inputs import (
    ImagePrep,
    TextPrep,
    expand_images,
    prepared_size,
    read_reports,
    text_sentences,
)
from cmcgns_cli.embedding.runs import open_run
from cmcgns_cli.errors import BadInputError, RunFailedError
from cmcgns_cli.runtime import resolve_device

FORMATS = ("jsonl", "parquet", "npy")


def _format(fmt: str, out: Path | None) -> str:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if out is not None and fmt == "jsonl":  # the default: let the file name decide
        suffix = out.suffix.lower()
        if suffix in (".parquet", ".npy"):
            fmt = suffix[1:]
    if fmt in ("parquet", "npy") and out is None:
        raise BadInputError(f"--format {fmt} needs --out FILE (JSON Lines go to stdout)")
    return fmt


def iter_image_rows(
    run: Any, paths: list[str], batch_size: int, local: bool
) -> Iterator[dict[str, Any]]:
    prep = ImagePrep(run.cfg, prepared_size(_run_extra(run.path)))
    for a in range(0, len(paths), batch_size):
        chunk = paths[a : a + batch_size]
        loaded = [prep.load(p) for p in chunk]
        ok = [i for i, (t, _) in enumerate(loaded) if t is not None]
        emb = None
        if ok:
            x = torch.stack([loaded[i][0] for i in ok]).to(run.device)
            emb = image_embeddings(run.model, x)
        pos = {i: j for j, i in enumerate(ok)}
        for i, path in enumerate(chunk):
            row: dict[str, Any] = {"id": path, "kind": "image", "embedding": None, "error": None}
            if i in pos:
                row["embedding"] = emb["global"][pos[i]].cpu().numpy()
                if local:
                    row["local"] = emb["local"][pos[i]].float().cpu().numpy()
            else:
                row["error"] = loaded[i][1]
                if local:
                    row["local"] = None
            yield row


def iter_report_rows(
    run: Any, reports: list[tuple[str, str]], batch_size: int, local: bool
) -> Iterator[dict[str, Any]]:
    tp = TextPrep(run.cfg, run.tok)
    for a in range(0, len(reports), batch_size):
        chunk = reports[a : a + batch_size]
        parsed = [text_sentences(text) for _, text in chunk]
        items = tp.items([s for s, _ in parsed])
        ok = [i for i, it in enumerate(items) if it is not None]
        emb = None
        if ok:
            emb = text_embeddings(
                run.model, to_device(tp.collate([items[i] for i in ok]), run.device)
            )
        pos = {i: j for j, i in enumerate(ok)}
        for i, (rid, _) in enumerate(chunk):
            row: dict[str, Any] = {"id": rid, "kind": "report", "embedding": None, "error": None}
            if i in pos:
                j = pos[i]
                row["embedding"] = emb["global"][j].cpu().numpy()
                if local:
                    n = int(emb["sentence_mask"][j].sum())
                    row["local"] = emb["sentences"][j, :n].float().cpu().numpy()
                    row["sentences"] = parsed[i][0][:n]
            else:
                row["error"] = parsed[i][1] or "report_empty: no token after cleaning"
                if local:
                    row["local"], row["sentences"] = None, parsed[i][0]
            yield row


def _run_extra(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}


def run_embed(
    *,
    checkpoint: Path,
    images: str | None,
    reports: str | None,
    out: Path | None,
    fmt: str,
    local: bool,
    batch_size: int,
    device: str,
    workers: int = 0,
    stdin: Any = None,
    stdout: Any = None,
) -> dict[str, int]:
    if images is None and reports is None:
        raise BadInputError("give --images and/or --reports")
    if images == "-" and reports == "-":
        raise BadInputError("--images - and --reports -: only one of them can read stdin")
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: must be at least 1")
    fmt = _format(fmt, out)
    if fmt == "npy" and local:
        raise BadInputError("--local needs --format parquet or jsonl (.npy holds one vector a row)")
    run = open_run(checkpoint, resolve_device(device))
    paths = expand_images(images, stdin) if images is not None else []
    texts = read_reports(reports, stdin) if reports is not None else []
    total = len(paths) + len(texts)
    if total == 0:
        raise BadInputError(f"embed: no inputs in {images if images is not None else reports}")
    sink = stdout or sys.stdout
    rows: list[dict[str, Any]] = []
    failed = 0
    dim = int(run.cfg.model.embed_dim)

    def stream() -> Iterator[dict[str, Any]]:
        yield from iter_image_rows(run, paths, batch_size, local)
        yield from iter_report_rows(run, texts, batch_size, local)

    with progress() as bar:
        task = bar.add_task("embed", total=total)
        for row in stream():
            if row["error"] is not None:
                failed += 1
                err.print(f"skipped {row['kind']} {row['id']}: {row['error']}", highlight=False)
            if fmt == "jsonl":
                line = jsonio.dumps(_jsonable(row))
                if out is None:
                    sink.write(line + "\n")
                    sink.flush()
                else:
                    rows.append(line)  # type: ignore[arg-type]
            else:
                rows.append(row)
            bar.advance(task)
    if total and failed == total:
        # nothing embedded: no output file that looks like a result, and exit 1
        first = f"{paths[0] if paths else texts[0][0]}"
        raise RunFailedError(
            f"embed: all {total} inputs failed (none embedded; e.g. {first}, see the reasons "
            "above)" + (f"; {out} not written" if out else "")
        )
    if fmt == "jsonl" and out is not None:
        _atomic_text(Path(out), "".join(f"{ln}\n" for ln in rows))
    elif fmt == "parquet":
        write_parquet(Path(out), rows, local)
    elif fmt == "npy":
        write_npy(Path(out), rows, dim)
    err.print(
        f"embedded {total - failed} of {total} inputs ({failed} failed) with {run.path} "
        f"({run.weights} weights) on {run.device}" + (f" -> {out}" if out else ""),
        highlight=False,
    )
    return {"total": total, "failed": failed}


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_parquet(path: Path, rows: list[dict[str, Any]], local: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "kind": pa.array([r["kind"] for r in rows], pa.string()),
        "embedding": pa.array(
            [None if r["embedding"] is None else r["embedding"].tolist() for r in rows],
            pa.list_(pa.float32()),
        ),
    }
    if local:
        cols["local"] = pa.array(
            [None if r.get("local") is None else r["local"].tolist() for r in rows],
            pa.list_(pa.list_(pa.float32())),
        )
        cols["sentences"] = pa.array([r.get("sentences") for r in rows], pa.list_(pa.string()))
    cols["error"] = pa.array([r["error"] for r in rows], pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table(cols), tmp)
    os.replace(tmp, path)


def npy_paths(path: Path) -> tuple[Path, Path]:
    """``OUT.npy`` and its ids file ``OUT.ids.txt``."""
    base = path.with_suffix("") if path.suffix.lower() == ".npy" else path
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".ids.txt")


def write_npy(path: Path, rows: list[dict[str, Any]], dim: int) -> None:
    arr = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        if r["embedding"] is not None:
            arr[i] = r["embedding"]
    npy, ids = npy_paths(path)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, npy)
    _atomic_text(ids, "".join(f"{r['id']}\n" for r in rows))
