"""Exceptions that the CLI turns into exit codes and one-line messages."""

from __future__ import annotations


class CmcgnsError(Exception):
    """Base class: the message is shown as one line on stderr."""

    exit_code = 1


class BadInputError(CmcgnsError):
    """Bad usage or bad input (a missing file, a CSV without a required column): exit 2.

    The message names the file and what is wrong with it.
    """

    exit_code = 2


class NotBuiltError(BadInputError):
    """A subcommand or task whose work has not been built yet: exit 2, no fake output."""


class RunFailedError(CmcgnsError):
    """A run that started but failed (NaN loss, a crashed worker): exit 1."""

    exit_code = 1


class UnhealthyRunError(CmcgnsError):
    """``pretrain --strict-health``: the run finished but collapsed (train/health.py): exit 3.

    The run directory is complete; the message says what collapsed."""

    exit_code = 3
