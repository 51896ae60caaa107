"""Shared fixtures: run the real console entry point in-process."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from cmcgns_cli.cli import main

# One intra-op thread for the whole session: on a 2-core machine shared with other jobs, two
# torch threads spin against each other and a tiny pretrain takes 10-20x longer.
torch.set_num_threads(1)
# the commands' --threads default reads it: every in-process command keeps that one thread
os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Call ``cmcgns ARGS...`` through ``main()`` (exit codes and error mapping included)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["cmcgns", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """(prepared data, run dir) of one small tiny-preset pretrain shared across folders."""
    from tests.embed.shared import shared_world

    return shared_world(tmp_path_factory)
