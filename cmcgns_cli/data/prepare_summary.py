"""What ``cmcgns prepare`` reports when it is done: the summary dict (``--json``) and its
table, computed from the written manifest and skipped rows."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from cmcgns_cli.data.readers.base import ReaderResult


def summarize(
    dataset: str, manifest: pd.DataFrame, skipped: pd.DataFrame, result: ReaderResult, n_tasks: int
) -> dict[str, Any]:
    """The summary ``prepare`` prints: rows per split, the share of rows labelled positive
    per label (blank = not positive), skipped rows by reason, boxes, the RLE start encoding,
    re-rooted paths and (SIIM) images in two splits. ``n_tasks`` is the number of candidate
    rows the reader gave."""
    names = ["train", "validate", "test"]
    if len(manifest):  # extra splits such as CheXpert's 5x200
        names += sorted(set(manifest["split"]) - set(names))
    splits = {s: int((manifest["split"] == s).sum()) for s in names}
    prevalence: dict[str, float | None] = {}
    names = list(result.meta.get("label_names", []))
    if "labels" in manifest and len(manifest) and names:
        lab = np.stack([np.asarray(v, dtype=np.float64) for v in manifest["labels"]])
        # Share of all rows labelled positive: blanks (not mentioned) count as not positive.
        for j, name in enumerate(names):
            prevalence[name] = round(float((lab[:, j] == 1).mean()), 4)
    summary: dict[str, Any] = {
        "dataset": dataset,
        "count": int(len(manifest)),
        "candidates": n_tasks,
        "splits": splits,
        "label_prevalence": prevalence,
        "skipped": int(len(skipped)),
        "skipped_by_reason": dict(Counter(skipped["reason"]).most_common()) if len(skipped) else {},
    }
    if "body_part" in manifest and len(manifest):
        summary["non_chest_body_parts"] = non_chest_body_parts(manifest["body_part"])
    if "boxes" in manifest:
        summary["boxes"] = int(sum(len(b) for b in manifest["boxes"]))
    if result.meta.get("rle_encoding"):
        summary["rle_encoding"] = result.meta["rle_encoding"]["encoding"]
    rerooting = result.meta.get("path_rerooting")
    if rerooting:
        summary["paths_rerooted"] = int(
            rerooting["separators_normalised"] + rerooting["prefix_dropped"]
        )
        summary["dropped_prefixes"] = dict(rerooting["dropped_prefixes"])
    if dataset == "siim":
        summary["images_in_two_splits"] = images_in_several_splits(manifest)
    return summary


# Body Part Examined values that name the chest (PS3.16 CID 4031 "CHEST", plus the
# free-text forms scanners write).
_CHEST_WORDS = ("CHEST", "THORAX", "THORACIC", "LUNG", "THOR")


def non_chest_body_parts(body_parts: pd.Series) -> dict[str, int]:
    """``{Body Part Examined: rows}`` for the rows whose DICOM names a body part that is not
    the chest (blank = not recorded, not counted), commonest first."""
    counts = Counter(
        str(v)
        for v in body_parts
        if str(v).strip() and not any(w in str(v).upper() for w in _CHEST_WORDS)
    )
    return dict(counts.most_common())


def images_in_several_splits(manifest: pd.DataFrame) -> int:
    """Images (manifest ``id``) with rows in more than one split.

    Under ``--protocol mgca`` SIIM is split over CSV rows as MGCA does, so an image with
    several RLE rows can sit in two splits, each with the part of its mask whose rows fell
    there; ``--protocol grouped`` never does this.
    """
    if not len(manifest):
        return 0
    return int((manifest.groupby("id")["split"].nunique() > 1).sum())


def emit_summary(summary: dict[str, Any], as_json: bool) -> None:
    """Print ``summary`` as JSON on stdout or as a table (a SIIM split note on stderr)."""
    from cmcgns_cli.console import emit_json, err, out

    if summary.get("images_in_two_splits"):
        err.print(
            f"note: {summary['images_in_two_splits']} images sit in two splits, each with part "
            "of its mask (--protocol mgca splits the CSV rows, as MGCA does); "
            "--protocol grouped keeps every image in one split",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    if as_json:
        emit_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"prepared {summary['dataset']}: {summary['count']} images")
    table.add_column("summary")
    table.add_column("value", justify="right")
    for s, n in summary["splits"].items():
        table.add_row(f"split {s}", str(n))
    for name, p in summary.get("label_prevalence", {}).items():
        table.add_row(f"positive {name}", "-" if p is None or math.isnan(p) else f"{p:.3f}")
    for part, n in (summary.get("non_chest_body_parts") or {}).items():
        table.add_row(f"body part {part} (not chest)", str(n))
    if "boxes" in summary:
        table.add_row("boxes", str(summary["boxes"]))
    if summary.get("boxes_clipped") or summary.get("boxes_dropped"):
        table.add_row("boxes clipped to the picture", str(summary.get("boxes_clipped", 0)))
        table.add_row("boxes dropped (no area in the picture)", str(summary["boxes_dropped"]))
    if summary.get("rle_encoding"):
        table.add_row(f"RLE starts: {summary['rle_encoding']}", "")
    if summary.get("paths_rerooted"):
        prefixes = ", ".join(summary.get("dropped_prefixes") or {}) or "separators only"
        table.add_row(f"paths re-rooted ({prefixes})", str(summary["paths_rerooted"]))
    if summary.get("images_in_two_splits"):
        table.add_row("images in two splits", str(summary["images_in_two_splits"]))
    table.add_row("skipped", str(summary["skipped"]))
    for reason, n in summary["skipped_by_reason"].items():
        table.add_row(f"  {reason}", str(n))
    if summary.get("resumed"):
        table.add_row("resumed rows", str(summary["resumed"]))
    out.print(table)
