"""`cmcgns prepare`: raw layouts -> prepared format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcgns_cli.errors import NotBuiltError


def run_prepare(
    dataset: str, *, src: Path, out: Path, size: int, workers: int, options: dict[str, Any],
    as_json: bool,
) -> None:
    raise NotBuiltError("prepare is not built yet (issue: cmcgns prepare)")
