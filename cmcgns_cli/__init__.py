"""cmcgns: CM-CGNS pretraining and evaluation for chest X-rays and radiology reports.

``import cmcgns_cli as cm; model = cm.load("runs/r50")`` gives the Python API
(:mod:`cmcgns_cli.api`); it is imported on first use so that the command line starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Attention", "Model", "load", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Model", "Attention"):
        from cmcgns_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'cmcgns_cli' has no attribute {name!r}")
