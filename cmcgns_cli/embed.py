"""`cmcgns embed`: images and reports to vectors (Parquet, .npy + ids, or JSON Lines).

Rows: ``id`` (the path as given, or the report id), ``kind`` (image | report),
``embedding`` (the global vector, L2-normalised; null when the input failed), ``error``
(null, or why the input failed); with ``--local`` also ``local`` (image: P x D patch vectors;
report: S x D sentence vectors) and, for reports, ``sentences``. A bad input never stops
the run: it becomes a row with an error and a note on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cmcgns_cli import interrupts, jsonio
from cmcgns_cli.api import load, resolve_location
from cmcgns_cli.console import err, progress
from cmcgns_cli.data.token_stats import TRUNCATION_WARN_SHARE
from cmcgns_cli.embedding.inputs import read_reports, scan_images
from cmcgns_cli.errors import BadInputError, RunFailedError
from cmcgns_cli.outdir import RERUN, atomic_file, check_space, check_writable, room_for
from cmcgns_cli.train.sizes import SLACK

FORMATS = ("jsonl", "parquet", "npy")


def _format(fmt: str, out: Path | None) -> str:
    """The output format: the ``--out`` file's suffix (.jsonl, .parquet, .npy) decides when
    ``--format`` is left at its default (jsonl); a file with another suffix, or a suffix that
    contradicts an explicit ``--format``, is refused (BadInputError) rather than written in a
    format its name does not say."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if out is not None:
        by_name = {f".{f}": f for f in FORMATS}.get(out.suffix.lower())
        if by_name is None:
            raise BadInputError(f"--out {out}: name the file .jsonl, .parquet or .npy")
        if fmt != "jsonl" and fmt != by_name:
            raise BadInputError(f"--out {out}: the name says {by_name}, --format says {fmt}")
        fmt = by_name
    if fmt in ("parquet", "npy") and out is None:
        raise BadInputError(f"--format {fmt} needs --out FILE (JSON Lines go to stdout)")
    return fmt


def iter_image_rows(
    model: Any, paths: list[str], batch_size: int, local: bool
) -> Iterator[dict[str, Any]]:
    """``embed``'s image rows: :meth:`cmcgns_cli.api.Model.image_rows` plus id and kind."""
    for path, row in zip(paths, model.image_rows(paths, batch_size, local), strict=True):
        yield {"id": path, "kind": "image", **row}


def iter_report_rows(
    model: Any, reports: list[tuple[str, str]], batch_size: int, local: bool
) -> Iterator[dict[str, Any]]:
    """``embed``'s report rows: :meth:`cmcgns_cli.api.Model.report_rows` plus id and kind."""
    texts = [text for _, text in reports]
    for (rid, _), row in zip(reports, model.report_rows(texts, batch_size, local), strict=True):
        yield {"id": rid, "kind": "report", **row}


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
    reports_format: str = "lines",
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
    if out is not None:
        check_writable(Path(out).parent, "--out")
    with interrupts.handle(deferred=False):
        try:
            return _embed(
                checkpoint=checkpoint, images=images, reports=reports, out=out, fmt=fmt,
                local=local, batch_size=batch_size, device=device, stdin=stdin, stdout=stdout,
                reports_format=reports_format,
            )  # fmt: skip
        except interrupts.Interrupted as exc:
            where = str(exc).removeprefix("interrupted").strip().removeprefix("at ")
            raise interrupts.Interrupted(
                exc.signum,
                f"interrupted{' ' + where if where else ''}; "
                + (
                    f"{out} not written"
                    if out is not None
                    else "the lines on stdout are whole rows"
                )
                + ": run the same command again",
            ) from None


def _embed(
    *,
    checkpoint: Path,
    images: str | None,
    reports: str | None,
    out: Path | None,
    fmt: str,
    local: bool,
    batch_size: int,
    device: str,
    stdin: Any,
    stdout: Any,
    reports_format: str,
) -> dict[str, int]:
    model = load(resolve_location(checkpoint, "--checkpoint"), device)
    paths, not_taken = scan_images(images, stdin) if images is not None else ([], [])
    for path, why in not_taken:  # every file of --images DIR is named: taken or why not
        err.print(f"not taken {path}: {why}", highlight=False)
    texts = read_reports(reports, stdin, reports_format) if reports is not None else []
    total = len(paths) + len(texts)
    if total == 0:
        raise BadInputError(f"embed: no inputs in {images if images is not None else reports}")
    sink = stdout or sys.stdout
    rows: list[dict[str, Any]] = []
    failed = done = 0
    truncated = {"reports": 0, "sentences": 0}
    dim = model.embed_dim
    if out is not None:
        # the vectors alone (N x D float32) before any work: a lower bound for every format;
        # each file's own size is checked again right before it is written
        check_space(Path(out).parent, total * dim * 4, Path(out).name, RERUN)

    def stream() -> Iterator[dict[str, Any]]:
        yield from iter_image_rows(model, paths, batch_size, local)
        yield from iter_report_rows(model, texts, batch_size, local)

    with progress() as bar:
        task = bar.add_task("embed", total=total)
        for row in stream():
            if row.get("sentences_lost"):
                truncated["reports"] += 1
                truncated["sentences"] += int(row["sentences_lost"])
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
            done += 1
            interrupts.at(f"after {done} of {total} inputs")
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
    if texts and truncated["reports"] / len(texts) > TRUNCATION_WARN_SHARE:
        err.print(
            f"warning: {truncated['reports']} of {len(texts)} reports lost "
            f"{truncated['sentences']} sentences past max_length={model.cfg.data.max_length} / "
            f"max_sentences={model.cfg.data.max_sentences} (column sentences_lost)",
            highlight=False,
        )
    err.print(
        f"embedded {total - failed} of {total} inputs ({failed} failed) with {model.path} "
        f"({model.weights} weights) on {model.device}"
        + (f" -> {out}" if out else "")
        + (f"; {len(not_taken)} files of {images} not taken (named above)" if not_taken else ""),
        highlight=False,
    )
    return {"total": total, "failed": failed}


def _atomic_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    with room_for(path.parent, len(data), path.name, RERUN), atomic_file(path) as tmp:
        tmp.write_bytes(data)


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
    cols["sentences_lost"] = pa.array([r.get("sentences_lost", 0) for r in rows], pa.int32())
    cols["error"] = pa.array([r["error"] for r in rows], pa.string())
    table = pa.table(cols)
    # Dictionaries for the text columns only: a dictionary of distinct float32 values is as
    # large as the values, and pyarrow writes it beside its indices until it gives up (a
    # 1000 x 128 table of 598,015 bytes made a 797,139-byte file). Without them the file is
    # the columns' bytes, the lists' repetition levels (at most 2 bits a float value: 1/16
    # of its 4 bytes) and a footer and page headers (in the slack).
    text = [c for c in ("id", "kind", "sentences", "error") if c in table.column_names]
    needed = int(table.nbytes) + int(table.nbytes) // 16 + SLACK
    with room_for(path.parent, needed, path.name, RERUN), atomic_file(path) as tmp:
        pq.write_table(table, tmp, use_dictionary=text)


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
    # N x D x 4 bytes and the .npy header (128 bytes for a 2-d float32 array)
    with (
        room_for(npy.parent, arr.nbytes + 128, npy.name, RERUN),
        atomic_file(npy, suffix=".npy") as tmp,
    ):
        np.save(tmp, arr)
    _atomic_text(ids, "".join(f"{r['id']}\n" for r in rows))
