"""Help by Typer's conventions: every option documented, closed sets as choices, flags
without a type, one type per option name, --version, one-line usage errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer

from cmcgns_cli import __version__
from cmcgns_cli.cli import TASKS, app

COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)  # type: ignore[attr-defined]


def _help(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "80", "TERMINAL_WIDTH": "80", "PATH": "", "PYTHONPATH": sys.path[0]},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_every_option_has_help_and_one_type_per_name():
    types: dict[str, set[str]] = {}
    for name in COMMANDS:
        for p in COMMAND.commands[name].params:  # type: ignore[attr-defined]
            assert p.help, f"{name} {p.opts}: no help text"
            for opt in p.opts:
                desc = p.type_descriptor
                kind = "choice" if desc.is_choice else getattr(desc.annotation, "__name__", "?")
                types.setdefault(opt, set()).add(kind)
    assert types["--checkpoint"] == {"Path"}
    assert {k: v for k, v in types.items() if len(v) > 1} == {}


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        ("finetune", "--task", TASKS[:8]),
        ("evaluate", "--task", TASKS),
        ("pretrain", "--preset", ("tiny", "small", "paper-resnet50", "paper-vit")),
        ("pretrain", "--variant", ("authors", "clean")),
        ("embed", "--format", ("jsonl", "parquet", "npy")),
        ("prepare", "--polygon-box", ("pole", "bbox")),
    ],
)
def test_closed_sets_are_choices(command, option, choices):
    param = next(p for p in COMMAND.commands[command].params if option in p.opts)  # type: ignore[attr-defined]
    assert param.type_descriptor.is_choice
    assert tuple(str(c.value) for c in param.type_descriptor.choices) == tuple(choices)


def test_help_shows_whole_choices_and_no_bool_on_flags():
    for name in ("finetune", "evaluate", "pretrain", "prepare", "embed"):
        text = _help(name)
        assert "<bool>" not in text, name
        words = set(re.findall(r"[a-z0-9][a-z0-9-]*[a-z0-9]", text))
        if name in ("finetune", "evaluate"):
            missing = [t for t in TASKS[: 7 if name == "finetune" else None] if t not in words]
            assert missing == [], (name, missing)


def test_version_and_one_line_usage_errors():
    res = subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout == f"cmcgns {__version__}\n"
    for args in (("finetune", "--task", "nope"), ("pretrain", "--bogus"), ("embed",)):
        res = subprocess.run(
            [sys.executable, "-m", "cmcgns_cli", *args], capture_output=True, text=True
        )
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert lines[0].endswith(f"(see cmcgns {args[0]} --help)")


def test_every_subcommand_has_help_without_bool_flags():
    from typer.testing import CliRunner

    from tests.test_cli import SUBCOMMANDS

    assert set(COMMANDS) == SUBCOMMANDS
    runner = CliRunner()
    for name in COMMANDS:
        res = runner.invoke(app, [name, "--help"], prog_name="cmcgns", env={"COLUMNS": "100"})
        assert res.exit_code == 0, (name, res.output)
        assert f"Usage: cmcgns {name} " in res.output, res.output
        assert "<bool>" not in res.output, name
