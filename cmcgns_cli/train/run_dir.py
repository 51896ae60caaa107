"""The run folder around a pretrain: which files a start leaves before its first checkpoint
(what ``--resume-if-exists`` may start over), whether a folder holds work worth keeping after
a failed start, and whether every process of a multi-node run sees the same folder."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import torch

from cmcgns_cli import outdir
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.train import checkpoint as ckpt
from cmcgns_cli.train import dist

SHARED_CHECK = ".shared-check.json"  # rank 0's token for the shared-filesystem check

RUN_PARTIALS = frozenset(
    {ckpt.CONFIG, ckpt.METRICS, ckpt.TOKENIZER, "cache", outdir.LOCK, outdir.HOLDER}
    | {SHARED_CHECK}
    | {f".{ckpt.STATE}.new", f".{ckpt.BEST}.new"}
)


def logged_a_step(run: Path) -> bool:
    """Whether ``run`` holds work worth keeping: a checkpoint, or a ``train`` record in its
    metrics.jsonl (the ``text_window`` record a start writes first is no step)."""
    if (run / ckpt.MODEL).exists():
        return True
    try:
        with open(run / ckpt.METRICS, encoding="utf-8") as fh:
            return any('"kind": "train"' in line for line in fh)
    except OSError:
        return False


def check_restartable(out: Path, tensorboard: str | None = None) -> None:
    """Refuse (exit 2, one line) to start a fresh run with ``--resume-if-exists`` in ``out``
    when it holds anything but a run's partial files (:data:`RUN_PARTIALS`, and the run's own
    ``--tensorboard`` folder when that lies inside ``out``): it is someone else's folder, and
    a run written into it would mix with its files.

    Raises:
        BadInputError: naming the folder and up to three of the entries that are not ours.
    """
    if not out.is_dir():
        return
    ours = {Path(tensorboard).resolve()} if tensorboard else set()
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                     if p.name not in RUN_PARTIALS and p.resolve() not in ours)  # fmt: skip
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise BadInputError(
            f"--out {out}: holds {', '.join(foreign[:3])}{more}, not a run of ours (no "
            f"{ckpt.MODEL} to resume); --resume-if-exists starts a new run only in an empty "
            "folder or one a start left before its first checkpoint: choose another --out"
        )


def check_shared_run_dir(run: Path, device: torch.device) -> None:
    """Under several processes, stop every rank with one clear error unless all of them see
    the run directory rank 0 writes (the tokenizer, checkpoints and ``best/`` are written by
    rank 0 and read by the others, so multi-node runs need a shared filesystem). Rank 0
    writes a random token there; the others read it after a barrier. Raises BadInputError."""
    if dist.world_size() == 1:
        return
    token = secrets.token_hex(8) if dist.is_main() else None
    if dist.is_main():
        ckpt.atomic_write_json(run / SHARED_CHECK, {"token": token})
    token = dist.broadcast_object(token)
    dist.barrier()
    try:
        seen = json.loads((run / SHARED_CHECK).read_text(encoding="utf-8"))["token"]
    except (OSError, ValueError, KeyError):
        seen = None
    missing = dist.any_rank(seen != token, device)
    dist.barrier()
    if dist.is_main():
        (run / SHARED_CHECK).unlink(missing_ok=True)
    if missing:
        raise BadInputError(
            f"{run}: not the same directory on every process (rank 0's files are not visible "
            "on some node); multi-node pretraining needs --out (and --data) on a filesystem "
            "every node sees"
        )
