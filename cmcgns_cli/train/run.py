"""`cmcgns pretrain`: the training entry point."""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli.config import Config
from cmcgns_cli.errors import NotBuiltError


def run_pretrain(
    cfg: Config, *, data: Path, out: Path, resume: Path | None, nproc: int, as_json: bool
) -> None:
    raise NotBuiltError("pretrain is not built yet (issue: cmcgns pretrain)")
