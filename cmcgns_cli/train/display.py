"""What pretraining shows on stderr while it runs: the progress columns and their legend.

A train record becomes named parts (:func:`info_parts`), each its own progress column, so a
narrow terminal leaves out whole parts (the least useful first, see
:mod:`cmcgns_cli.progress_fit`) instead of cutting the line. The short term names are
explained once, when training starts (:func:`legend_line`).
"""

from __future__ import annotations

from typing import Any

from rich.progress import ProgressColumn, Task
from rich.text import Text

from cmcgns_cli.console import PRIORITY_ETA, PRIORITY_EXTRA
from cmcgns_cli.train.records import TERMS as RECORD_TERMS

# the loss terms and accuracies after the total loss, in the order they are shown
TERMS = RECORD_TERMS[1:]
SHORT = {
    "global": "glob",
    "local_image": "li",
    "local_text": "lt",
    "cluster_fn": "cfn",
    "recon": "rec",
    "acc_i2t": "i2t",
    "acc_t2i": "t2i",
}
# what each short name stands for (printed once as the legend); metrics.jsonl keys in brackets
MEANING = {
    "ep": "epoch, counted from 1 over both stages",
    "glob": "global image-report InfoNCE (global)",
    "li": "local image loss, patch vs its report context (local_image)",
    "lt": "local text loss, sentence vs its image context (local_text)",
    "cfn": "cluster false-negative loss (cluster_fn)",
    "rec": "masked-image reconstruction, stage 2 (recon)",
    "i2t": "in-batch image-to-report top-1 accuracy (acc_i2t)",
    "t2i": "in-batch report-to-image top-1 accuracy (acc_t2i)",
}
# the part names in display order with their priorities (lower = kept longer as the
# terminal narrows): the loss with the ETA, then epoch/step, the terms in order, the rate
PARTS = (
    ("where", PRIORITY_EXTRA),
    ("loss", PRIORITY_ETA),
    *((k, PRIORITY_EXTRA + 2 + i) for i, k in enumerate(TERMS)),
    ("rate", PRIORITY_EXTRA + 2 + len(TERMS)),
)


def info_parts(record: dict[str, Any], stage: int) -> dict[str, str]:
    """A train record's progress text as ``{part: text}`` (:data:`PARTS` order): ``where``
    (``ep E step S``), ``loss``, one entry per loss term or accuracy present (``recon`` not in
    stage 1) with its short name (:data:`SHORT`), ``rate`` (``P pairs/s``)."""
    parts = {"where": f"ep {record['epoch']} step {record['step']}"}
    parts["loss"] = f"loss {record['loss']:.3f}"
    for k in TERMS:
        if record.get(k) is not None and not (k == "recon" and stage == 1):
            parts[k] = f"{SHORT[k]} {record[k]:.3f}"
    if record.get("pairs_per_s"):
        parts["rate"] = f"{record['pairs_per_s']:.1f} pairs/s"
    return parts


def fmt_info(record: dict[str, Any], stage: int) -> str:
    """The whole progress text of a train record on one line (the plain log line's)."""
    return " ".join(info_parts(record, stage).values())


def legend_line() -> str:
    """One line explaining the short names the progress shows, e.g. ``li = local image
    loss ...``."""
    return "progress: " + "; ".join(f"{k} = {v}" for k, v in MEANING.items())


class PartColumn(ProgressColumn):
    """One named part of a task's ``parts`` field (empty until the first record)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def render(self, task: Task) -> Text:
        """The part's text, in cyan; an empty text when the task has no such part."""
        return Text(str((task.fields.get("parts") or {}).get(self.key, "")), style="cyan")


def columns() -> list[tuple[ProgressColumn, int]]:
    """The pretrain progress columns as ``(column, priority)`` pairs for
    :func:`cmcgns_cli.console.progress`."""
    return [(PartColumn(key), priority) for key, priority in PARTS]


def batch_words(per_process: int, world: int, pairs: int) -> str:
    """The batch of the start line: ``32 x 1 pairs``, or the whole split where it is smaller
    than one batch (``29 pairs (the whole train split; --batch-size 32)``)."""
    if pairs < per_process * world:
        return f"{pairs} pairs (the whole train split; --batch-size {per_process})"
    return f"{per_process} x {world} pairs"
