"""`cmcgns finetune` and `cmcgns evaluate`."""

from __future__ import annotations

from typing import Any

from cmcgns_cli.errors import NotBuiltError


def run_finetune(**kwargs: Any) -> None:
    raise NotBuiltError(
        "finetune is not built yet (issues: classification, detection/segmentation)"
    )


def run_evaluate(**kwargs: Any) -> None:
    raise NotBuiltError(
        "evaluate is not built yet (issues: classification, detection/segmentation)"
    )
