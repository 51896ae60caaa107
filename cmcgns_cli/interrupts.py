"""Ctrl-C (SIGINT) and SIGTERM for long commands: stop cleanly, say where, exit 128 + signal.

Two modes (:func:`handle`):

* ``deferred=True`` (pretrain): the first signal only sets a flag; the training loop reads it
  with :func:`requested` after each optimizer step, writes a checkpoint of that step and
  raises :class:`Interrupted`. A second signal stops at once.
* ``deferred=False`` (finetune, prepare): the signal raises :class:`Interrupted` where the
  program is, like Python's KeyboardInterrupt; the command's own bookkeeping (prepare's
  journal) keeps what was finished.

The exit status is the shell's convention for a process ended by a signal: 128 + the signal
number, so 130 for SIGINT and 143 for SIGTERM (POSIX ``wait`` status, as bash reports it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from cmcgns_cli.errors import CmcgnsError

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, object] = {"requested": None, "where": ""}


class Interrupted(CmcgnsError):
    """A command stopped by SIGINT or SIGTERM: exit 128 + the signal number (130, 143).

    The message is one line saying where the run stopped and how to continue; the CLI prints
    it without the ``error:`` prefix.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        where = str(_state["where"])
        super().__init__(message or ("interrupted" + (f" at {where}" if where else "")))


def requested() -> int | None:
    """The signal number received under a deferred :func:`handle`, or None."""
    value = _state["requested"]
    return None if value is None else int(value)  # type: ignore[call-overload]


def at(where: str) -> None:
    """Record where the command is (``"epoch 3, step 12"``) for the interruption message."""
    _state["where"] = where


@contextmanager
def handle(*, deferred: bool) -> Iterator[None]:
    """Install SIGINT/SIGTERM handlers for the duration of a command (main thread only).

    Raises:
        Interrupted: from the handler itself when not deferred (or on a second signal).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if deferred and _state["requested"] is None:
            _state["requested"] = signum
            return
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in SIGNALS}
    _state["requested"], _state["where"] = None, ""
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state["requested"], _state["where"] = None, ""
