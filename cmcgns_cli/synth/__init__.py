"""The synthetic chest X-ray world (phantoms, reports, labels) in six raw layouts."""

from __future__ import annotations

from pathlib import Path

from cmcgns_cli.errors import NotBuiltError


def run_synth(
    *, out: Path, n: int, seed: int, layouts: list[str] | None, image_size: int | None,
    as_json: bool,
) -> None:
    raise NotBuiltError("synth is not built yet")
