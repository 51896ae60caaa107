from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.train.worlds import make_world

# small, fast settings on top of the tiny preset for the 64 px test worlds; 2 + 1 epochs, the
# preset's schedule before it took a third stage-1 epoch (the step counts below assume it).
# An option, not a --set item: a test's own --stage1-epochs then replaces it (the last one
# given wins), where a --set item and the option would contradict each other (exit 2)
TINY = [
    "--preset",
    "tiny",
    "--set",
    "data.image_size=64",
    "--set",
    "data.crop_size=64",
    "--stage1-epochs",
    "2",
    "--batch-size",
    "16",
]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "prepared", n=96, size=64, seed=0)


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``cmcgns ARGS`` in-process through main(); returns the exit code."""
    from cmcgns_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["cmcgns", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
