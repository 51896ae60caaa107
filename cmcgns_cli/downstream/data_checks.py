"""What finetune and evaluate check about the data before they start.

Splits: retrieval and zero-shot refuse a ``--split`` the dataset has no rows in, naming the
splits it has (``5x200`` exists only in data prepared from CheXpert).

Sizes: a one-line warning when data was prepared at another image size than the model it
meets was trained on.

``prepare --size S`` fixes how much detail each image keeps; the model's input transform then
resizes to its own input size either way, so a mismatch runs without error but the encoder
sees other detail than it was trained on (64 px data upsampled for a head finetuned at 256 px
is blurred), and the scores are not comparable with the head's own. ``finetune`` records the
size of the data it trained on (``finetune.json``: ``data_image_size``); a pretrain run
records the path of its dataset (``config.json``: ``dataset.path``), read when it still
exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmcgns_cli.console import err
from cmcgns_cli.data.prepared import META, open_prepared
from cmcgns_cli.errors import BadInputError, CmcgnsError


def check_split(task: str, data: Path, split: str) -> None:
    """Refuse (exit 2, one line) to score retrieval or zero-shot on a split the dataset does
    not have (``--split 5x200`` exists only in data prepared from CheXpert); other tasks pass.

    A zero-shot task on another dataset than its own is refused first (before the split, and
    before ``evaluate`` warns about the splits that selected the checkpoint).

    Raises:
        BadInputError: a zero-shot task's wrong dataset (``zeroshot.check_dataset``); or
            ``split`` has no rows in ``data``: the message names the task, the split and the
            splits the dataset has with their row counts.
    """
    if task != "retrieval" and not task.startswith("zeroshot"):
        return
    prepared = open_prepared(data)
    if task.startswith("zeroshot"):  # the wrong dataset first: its split is beside the point
        from cmcgns_cli.downstream.zeroshot import DATASETS, check_dataset

        if task in DATASETS:
            check_dataset(task, prepared.meta, data)
    if len(prepared.split_indices(split)):
        return
    counts = prepared.manifest["split"].value_counts()
    have = ", ".join(f"{name} ({int(n)} rows)" for name, n in counts.items() if n > 0)
    hint = " (5x200 is made by cmcgns prepare chexpert)" if "5x200" in split.split("+") else ""
    raise BadInputError(
        f"{data}: evaluate --task {task} --split {split}: this {prepared.meta.get('dataset')} "
        f"dataset has no {split} rows; its splits: {have or 'none'}{hint}"
    )


def prepared_size(data: str | Path | None) -> int | None:
    """The side in px of the images of the prepared dataset ``data`` (``prepare --size``);
    None when it cannot be read (moved, removed, not a prepared dataset)."""
    if not data:
        return None
    try:
        meta = json.loads((Path(data) / META).read_text(encoding="utf-8"))
        if isinstance(meta.get("image_size"), int):
            return int(meta["image_size"])
        return int(open_prepared(data).image_size)
    except (OSError, ValueError, CmcgnsError):
        return None


def size_warning(data: Path, size: int | None, trained: int | None, what: str) -> str | None:
    """The warning line when ``size`` (px of ``data``) and ``trained`` (px of the data
    ``what`` was trained on) are both known and differ; else None."""
    if size is None or trained is None or size == trained:
        return None
    return (
        f"warning: {data} was prepared at {size} px but {what} was trained on data prepared "
        f"at {trained} px; scores are not comparable (prepare it again with --size {trained})"
    )


def warn_evaluate(data: Path, record: dict[str, Any], finetuned: Path) -> str | None:
    """Print (to stderr) and return the warning for scoring the head in ``finetuned``
    (its ``finetune.json`` ``record``) on ``data``; None when the sizes agree or are not
    known (a head finetuned before ``data_image_size`` was recorded falls back to the size
    of the dataset named in ``record['data']``, when that still exists)."""
    trained = record.get("data_image_size")
    if not isinstance(trained, int):
        trained = prepared_size(record.get("data"))
    line = size_warning(Path(data), prepared_size(data), trained, f"the head in {finetuned}")
    if line:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    return line


def warn_finetune(data: Path, checkpoint: str) -> str | None:
    """Print and return the warning for finetuning the pretrain run or bundle ``checkpoint``
    on ``data``; None when the sizes agree, or ``checkpoint`` is ``none`` or does not name
    its dataset (or the dataset is gone)."""
    if str(checkpoint).lower() == "none":
        return None
    try:
        cfg = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dataset = cfg.get("dataset") if isinstance(cfg, dict) else None
    trained = prepared_size(dataset.get("path")) if isinstance(dataset, dict) else None
    line = size_warning(Path(data), prepared_size(data), trained, f"the encoder in {checkpoint}")
    if line:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    return line
