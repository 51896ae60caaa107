"""Optional TensorBoard logging of the training records (``train.tensorboard = DIR``).

``metrics.jsonl`` stays the record of a run; this mirrors every numeric field of each record
to ``torch.utils.tensorboard.SummaryWriter`` as the scalar ``<kind>/<field>`` at the record's
optimizer step (``train/loss``, ``train/lr``, ``val/val_loss``, ...).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cmcgns_cli.errors import BadInputError

SKIP = {"kind", "step", "stage_step"}


class TensorBoardLog:
    """A SummaryWriter on ``log_dir`` fed with metrics records."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is a dependency, but say so plainly
            raise BadInputError(
                f"train.tensorboard = {log_dir}: the tensorboard package is missing ({exc})"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if not isinstance(step, int | float):
            return
        kind = str(record.get("kind", "record"))
        for key, value in record.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(float(value)):
                self.writer.add_scalar(f"{kind}/{key}", float(value), int(step))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
