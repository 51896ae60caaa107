"""`cmcgns embed`: images and reports to vectors."""

from __future__ import annotations

from typing import Any

from cmcgns_cli.errors import NotBuiltError


def run_embed(**kwargs: Any) -> None:
    raise NotBuiltError("embed is not built yet (issue: cmcgns embed)")
