"""Rank and world-size handling in one place.

Pretraining runs as one process today (CPU or one GPU). ``torchrun`` support lands in a
later issue; when it does, only this module should need to learn about process groups.
"""

from __future__ import annotations

import os

from cmcgns_cli.errors import BadInputError


def world_size() -> int:
    """Number of training processes (always 1 until DDP lands)."""
    return 1


def rank() -> int:
    """This process's rank (always 0 until DDP lands)."""
    return 0


def is_main() -> bool:
    """True on the process that writes checkpoints, metrics and progress."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op with one process)."""


def check_single_process() -> None:
    """Refuse to run under a launcher that started several processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1:
        raise BadInputError(
            f"WORLD_SIZE={launched}: distributed pretraining (torchrun / DDP) lands in a later "
            "issue; run one process (CPU or one GPU) for now"
        )


def torchrun_command(argv: list[str], nproc: int) -> str:
    """The torchrun line a user will run once DDP lands (argv without the program name)."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        rest.append(arg)
    return f"torchrun --nproc_per_node={nproc} -m cmcgns_cli " + " ".join(rest)
