"""``OMP_NUM_THREADS`` checked before torch loads (no torch import here).

OpenMP (libgomp) reads ``OMP_NUM_THREADS`` when torch is imported and prints its own
``libgomp: Invalid value for environment variable OMP_NUM_THREADS`` for a bad value. The
console entry point moves a bad value aside (:func:`set_aside_bad_value`) before anything
imports torch, so the commands report it in their own one line: an error when the value
would set the thread count, a warning when ``--threads`` overrides it (``runtime.py``).
"""

from __future__ import annotations

import os

VAR = "OMP_NUM_THREADS"
ASIDE = "_CMCGNS_BAD_OMP_NUM_THREADS"  # where a bad value waits for the command's message
# torch.set_num_threads takes a C int and a larger count overflows it with a traceback; no
# machine this runs on has more cores, and OpenMP would try to start that many threads
MAX_THREADS = 4096


def problem(raw: str) -> str | None:
    """None when ``raw`` is a whole number from 1 to :data:`MAX_THREADS` (surrounding spaces
    allowed), else one clause naming the variable and the value."""
    text = raw.strip()
    if text.isascii() and text.isdigit():
        if 1 <= int(text) <= MAX_THREADS:
            return None
        if int(text) > MAX_THREADS:
            return f"{VAR}={raw!r}: more than {MAX_THREADS} threads"
    return f"{VAR}={raw!r}: not a whole number of at least 1"


def set_aside_bad_value() -> None:
    """Move a bad, non-empty ``OMP_NUM_THREADS`` out of the environment (to :data:`ASIDE`)
    so that OpenMP does not read it; :func:`raw_value` still sees it. An empty value means
    unset here (``OMP_NUM_THREADS=$N`` with ``N`` unset) and is removed: libgomp would call
    it invalid."""
    raw = os.environ.get(VAR)
    if raw is not None and not raw.strip():
        del os.environ[VAR]
    elif raw is not None and problem(raw) is not None:
        os.environ[ASIDE] = os.environ.pop(VAR)


def raw_value() -> str:
    """The value the user gave ``OMP_NUM_THREADS`` ("" when unset), set aside or not."""
    return os.environ.get(VAR) or os.environ.get(ASIDE) or ""
