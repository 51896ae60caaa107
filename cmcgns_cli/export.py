"""`cmcgns export RUN --out BUNDLE`: a pretrain run as a self-describing, verifiable folder.

The layout is described in :mod:`cmcgns_cli.bundle`. The bundle is written under a temporary
name beside ``--out`` and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cmcgns_cli import __version__, jsonio
from cmcgns_cli.bundle import BUNDLE_FORMAT, SUMS, quiet_transformers, sha256_file, write_sums
from cmcgns_cli.card import find_results, model_card, shareable
from cmcgns_cli.console import emit_json, err, kv_table
from cmcgns_cli.console import out as stdout
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.input_folder import RUN_DIR, input_folder
from cmcgns_cli.outdir import RERUN, room_for
from cmcgns_cli.train.health import run_health

TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
TRAIN_IDS = "train_ids.txt"


def training_pairs(run: Any, extra: dict[str, Any], data: Path | None) -> dict[str, Any]:
    """The prepared data a run trained on: its meta.json, the manifest's sha256 and the ids of
    the training pairs (the train-split rows with a non-empty tokenised report, exactly the
    rows ``PairedDataset`` trained on). Raises ``BadInputError`` when the data is absent or
    gives another number of training pairs than the run recorded."""
    from cmcgns_cli.data.paired import PairedDataset
    from cmcgns_cli.data.prepared import open_prepared
    from cmcgns_cli.data.tokenize import token_cache

    recorded = extra.get("dataset") or {}
    root = Path(data) if data is not None else Path(recorded.get("path", ""))
    if not (root / "manifest.parquet").is_file():
        raise BadInputError(
            f"{root}: the run's prepared training data is not there (needed for train_ids.txt "
            "and the manifest checksum); pass --data DIR"
        )
    prepared = open_prepared(root)
    cache = token_cache(prepared, run.tok, fallback_dir=Path(run.path))
    rows = PairedDataset(prepared, "train", cache, run.cfg.data, train=False).rows
    want = recorded.get("train_pairs")
    if want is not None and int(want) != len(rows):
        raise BadInputError(
            f"{root / 'manifest.parquet'}: gives {len(rows)} training pairs, the run trained on "
            f"{want}; this is not the run's training data"
        )
    return {
        "path": str(root),
        "meta": dict(prepared.meta),
        "manifest_sha256": sha256_file(root / "manifest.parquet"),
        "train_ids": [str(x) for x in prepared.manifest["id"].iloc[rows]],
    }


def run_export(
    *,
    run: Path,
    out: Path,
    data: Path | None = None,
    license_id: str = "other",
    weights: str = "auto",
    as_json: bool = False,
) -> dict[str, Any]:
    """Write the bundle of ``run`` to ``out``; return a summary (files, sizes, metrics)."""
    from cmcgns_cli.bundle import is_bundle
    from cmcgns_cli.embedding.runs import open_run
    from cmcgns_cli.train import checkpoint as ckpt
    from cmcgns_cli.train import sizes

    run, out = input_folder(run, RUN_DIR, needs=(ckpt.CONFIG,)), Path(out)
    if is_bundle(run):
        raise BadInputError(f"{run}: already an exported bundle; export reads a run directory")
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        raise BadInputError(f"{out}: exists and is not empty; choose a new --out folder")
    loaded = open_run(run, "cpu", weights=weights)
    extra = json.loads((run / ckpt.CONFIG).read_text(encoding="utf-8"))
    pairs = training_pairs(loaded, extra, data)
    results = find_results(run)

    tmp = out.with_name(f".{out.name}.export.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    source = run / (f"{ckpt.BEST}/{ckpt.MODEL}" if loaded.weights == "best" else ckpt.MODEL)
    enc = loaded.model.image_encoder
    # the weights copied, the image encoder and the BERT written again, train_ids.txt (one id
    # a line: exact; 217k MIMIC-CXR ids of 44 characters are 9.8 MB, more than the margin),
    # the tokenizer as large as the run's, and a margin per file for config, card and sums
    ids_bytes = sum(len(str(i).encode("utf-8")) + 1 for i in pairs["train_ids"])
    tok_dir = run / ckpt.TOKENIZER
    tok_bytes = sum(p.stat().st_size for p in tok_dir.rglob("*") if p.is_file())
    needed = (
        source.stat().st_size
        + sizes.tensor_bytes(enc.state_dict())
        + sizes.tensor_bytes(loaded.model.text_encoder.bert.state_dict())
        + ids_bytes
        + tok_bytes
        + 4 * sizes.MARGIN
    )
    with room_for(out.parent, needed, "the bundle", RERUN):
        _write_bundle(tmp, out, run, loaded, extra, pairs, results, source, license_id)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    summary = {
        "bundle": str(out),
        "run": str(run),
        "weights": loaded.weights,
        "files": len(files),
        "bytes": sum((out / f).stat().st_size for f in files),
        "train_pairs": len(pairs["train_ids"]),
        "results": len(results),
        "checksums": SUMS,
    }
    if as_json:
        emit_json(summary)
    else:
        stdout.print(kv_table(f"export {run} -> {out}", summary))
    err.print(f"wrote {len(files)} files to {out}; verify with: sha256sum -c {SUMS}")
    return summary


def _write_bundle(
    tmp: Path,
    out: Path,
    run: Path,
    loaded: Any,
    extra: dict[str, Any],
    pairs: dict[str, Any],
    results: list[Any],
    source: Path,
    license_id: str,
) -> None:
    """Write the bundle into ``tmp`` and rename it to ``out``; on any failure (a full disk
    included) ``tmp`` is removed and ``out`` is untouched."""
    from cmcgns_cli.model.encoders import export_image_encoder_state
    from cmcgns_cli.train import checkpoint as ckpt

    tmp.mkdir(parents=True)
    try:
        shutil.copyfile(source, tmp / ckpt.MODEL)
        enc = loaded.model.image_encoder
        ckpt.save_weights(
            tmp / ckpt.IMAGE_ENCODER,
            export_image_encoder_state(enc),
            {"arch": enc.name, "library": "torchvision" if enc.kind == "resnet" else "timm"},
        )
        with quiet_transformers():
            loaded.model.text_encoder.bert.save_pretrained(str(tmp / TEXT_ENCODER))
        for path in (tmp / TEXT_ENCODER).iterdir():  # its model.safetensors: owner-only
            ckpt.share_mode(path)
        loaded.tok.save_pretrained(str(tmp / TOKENIZER))
        (tmp / TRAIN_IDS).write_text("".join(f"{i}\n" for i in pairs["train_ids"]), "utf-8")
        bundle = {
            "format": BUNDLE_FORMAT,
            "cmcgns_version": __version__,
            "source_run": run.resolve().name,  # its name only: no local path in a bundle
            "weights": loaded.weights,
            "prepared_size": int(pairs["meta"].get("image_size", 256)),
            "text_encoder": TEXT_ENCODER,
            "tokenizer": TOKENIZER,
            "manifest_sha256": pairs["manifest_sha256"],
            "train_ids": TRAIN_IDS,
            "train_pairs": len(pairs["train_ids"]),
            "health": run_health(run, int(loaded.cfg.train.batch_size)),
        }
        config = shareable({**extra, "bundle": bundle})
        (tmp / ckpt.CONFIG).write_text(jsonio.dumps(config, indent=2), encoding="utf-8")
        card = model_card(loaded.cfg, config, pairs, results, license_id)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_sums(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
