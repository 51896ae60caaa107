"""Which splits selected a pretrain run's checkpoint, and whether an evaluation scores one.

Pretraining keeps the weights with the lowest validation loss (``best/``). Under
``--protocol mgca`` MIMIC-CXR validates on validate + test, as the authors' code does, so the
test split that retrieval and zero-shot later score has already chosen the weights: those
scores are not held out. The run records the splits in ``config.json`` ->
``dataset.selection_splits`` (with the manifest's SHA-256 and whether the data was
synthetic, to recognise the same data later); ``evaluate`` compares the split it scores
with them (:func:`scored_selection`) and warns.

The same data is recognised by the manifest's SHA-256 or, since the manifest also holds
each image's scale and padding, by ``studies_sha256``: the studies, their splits and their
reports, which stay the same when one world is prepared again at another ``--size``.

Imports only ``checksum`` from the package.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cmcgns_cli.checksum import sha256_file

MANIFEST = "manifest.parquet"


def studies_sha256(root: Path) -> str | None:
    """SHA-256 (hex) of the prepared data's studies: ``id``, ``split`` and ``sentences`` of
    each manifest row in id order, one UTF-8 line each (tab and U+001E separated). Unlike the
    manifest's own hash it does not change with the prepared image size. None when the
    manifest cannot be read or has no ``id`` / ``split``."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(Path(root) / MANIFEST).names)
        if not {"id", "split"} <= names:
            return None
        cols = ["id", "split", *(["sentences"] if "sentences" in names else [])]
        table = pq.read_table(Path(root) / MANIFEST, columns=cols).to_pydict()
    except (OSError, ValueError, ImportError):
        return None
    rows = sorted(zip(*(table[c] for c in cols), strict=True), key=lambda r: str(r[0]))
    digest = hashlib.sha256()
    for row in rows:
        sentences = "\x1e".join(str(x) for x in (row[2] or [])) if len(row) > 2 else ""
        digest.update(f"{row[0]}\t{row[1]}\t{sentences}\n".encode())
    return digest.hexdigest()


def selection_record(split: str, meta: dict[str, Any], root: Path) -> dict[str, Any]:
    """What pretraining records about its validation data, for ``config.json`` ->
    ``dataset``: ``selection_splits`` (``"validate+test"`` -> ``["validate", "test"]``),
    ``manifest_sha256`` of ``root/manifest.parquet``, ``studies_sha256``
    (:func:`studies_sha256`) and ``synthetic`` (meta.json says)."""
    return {
        "selection_splits": [s for s in str(split).split("+") if s],
        "manifest_sha256": sha256_file(Path(root) / MANIFEST),
        "studies_sha256": studies_sha256(Path(root)),
        "synthetic": bool(meta.get("synthetic")),
    }


def run_selection(checkpoint: Path) -> dict[str, Any] | None:
    """The ``dataset`` block of the run's (or bundle's) ``config.json`` when it records
    ``selection_splits``; None for runs written before it was recorded, finetuned heads,
    unreadable configs, and bundles of the run's last weights (``export --weights last``:
    no validation chose them)."""
    try:
        cfg = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    if (cfg.get("bundle") or {}).get("weights") == "last":
        return None
    dataset = cfg.get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("selection_splits"):
        return None
    return dataset


def same_data(recorded: dict[str, Any], meta: dict[str, Any], root: Path) -> bool:
    """Whether the prepared data at ``root`` (its ``meta``) holds the splits the run was
    selected on: the same manifest (SHA-256), the same studies (:func:`studies_sha256`,
    another prepared size), or the same public dataset by name (its
    official splits are the same studies whoever prepared it). Two synthetic worlds share a
    name but not their images, so synthetic data must be the same manifest."""
    try:
        digest = sha256_file(Path(root) / MANIFEST)
    except OSError:
        digest = None
    if digest is not None and digest == recorded.get("manifest_sha256"):
        return True
    # the same studies, splits and reports prepared again (e.g. at another --size)
    if recorded.get("studies_sha256") and studies_sha256(Path(root)) == recorded["studies_sha256"]:
        return True
    if recorded.get("synthetic") or meta.get("synthetic"):
        return False
    name = meta.get("dataset")
    return name is not None and name == recorded.get("name")


def scored_selection(
    checkpoint: Path, root: Path, meta: dict[str, Any], split: str
) -> dict[str, Any]:
    """For ``evaluate``: ``selection_splits`` (the splits that selected ``checkpoint``'s
    weights, None when the run does not record them) and ``selection_overlap`` (those of
    them the scored ``split`` of the data at ``root`` includes; ``[]`` when none, or when
    the data is not the data the run validated on)."""
    recorded = run_selection(checkpoint)
    if recorded is None:
        return {"selection_splits": None, "selection_overlap": []}
    chosen = [str(s) for s in recorded["selection_splits"]]
    scored = [s for s in str(split).split("+") if s]
    overlap = [s for s in scored if s in chosen] if same_data(recorded, meta, root) else []
    return {"selection_splits": chosen, "selection_overlap": overlap}


def overlap_warning(selection: dict[str, Any], dataset: str | None, split: str) -> str | None:
    """The one-line warning when the scored split selected the checkpoint, else None."""
    overlap = selection.get("selection_overlap") or []
    if not overlap:
        return None
    chose = " + ".join(selection["selection_splits"])
    return (
        f"warning: split {' + '.join(overlap)} of {dataset or 'this dataset'} selected this "
        f"checkpoint (pretraining validated on {chose}): its {split} scores are not held out"
    )
