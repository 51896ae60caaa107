"""Device and CPU thread choice shared by every subcommand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cmcgns_cli import threads_env
from cmcgns_cli.errors import BadInputError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA device is available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BadInputError(f"--device {name!r}: expected auto, cpu or cuda") from None


def omp_num_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a thread count, or None when it is unset or empty.

    Raises:
        BadInputError: a value that is not a whole number of at least 1 (``abc``, ``0``,
            ``-1``, ``1.5``), as ``--threads`` refuses one: one line naming the variable and
            its value, rather than silently using another count.
    """
    raw = threads_env.raw_value()
    if not raw.strip():
        return None
    problem = threads_env.problem(raw)
    if problem is not None:
        raise BadInputError(
            f"{problem} (as --threads needs); set it to e.g. 4, unset it for the automatic "
            "count, or pass --threads N"
        )
    return int(raw.strip())


def default_threads() -> int:
    """Intra-op CPU threads when ``--threads`` is not given.

    ``OMP_NUM_THREADS`` when set (the user's choice; :func:`omp_num_threads` refuses a bad
    value); else the cores this process may run on
    (its CPU affinity, which also honours ``taskset`` and container CPU sets) less the
    one-minute load average of the others, at least 1. On a loaded machine more threads than
    free cores only wait for each other: on a 2-core machine with a load of about 11, the
    tiny preset trained faster with one thread than with two (see the CHANGELOG, issue 28).
    """
    env = omp_num_threads()
    if env is not None:
        return env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, int(cores or 1))
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, min(cores, round(cores - load)))


def set_threads(threads: int | None) -> int:
    """``--threads N``: set torch's intra-op thread count (``None``: :func:`default_threads`)
    and return it.

    Raises:
        BadInputError: ``threads`` below 1 or above ``threads_env.MAX_THREADS``, or
            (``threads`` None) a bad ``OMP_NUM_THREADS``;
            with ``threads`` given, a bad ``OMP_NUM_THREADS`` is one warning line.
    """
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads {threads}: must be at least 1")
    if threads is not None and threads > threads_env.MAX_THREADS:  # torch would overflow
        raise BadInputError(f"--threads {threads}: at most {threads_env.MAX_THREADS}")
    raw = threads_env.raw_value()
    problem = threads_env.problem(raw) if raw.strip() else None
    if threads is not None and problem is not None:  # not used (--threads wins): said once
        from cmcgns_cli.console import err

        err.print(f"warning: {problem}; ignored, --threads {threads} used", highlight=False,
                  soft_wrap=True)  # fmt: skip
    n = int(threads) if threads is not None else default_threads()
    torch.set_num_threads(n)
    return n


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (stderr stays for our own lines)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()
