"""The CLI shell: help, exit codes, one-line errors, --dry-run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", *args], capture_output=True, text=True, timeout=120
    )


# Every documented subcommand (README), written down: a command dropped from the app fails.
SUBCOMMANDS = {
    "prepare", "pretrain", "finetune", "evaluate", "embed", "explain", "clusters", "synth",
    "demo", "compare", "plot", "export", "pretrain-text",
}  # fmt: skip


def test_help_lists_every_subcommand() -> None:
    import typer

    from cmcgns_cli.cli import app

    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert registered == SUBCOMMANDS
    res = run("--help")
    assert res.returncode == 0
    # the help's command table: one "│ name  summary" row per command
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) ", res.stdout, flags=re.MULTILINE))
    assert listed == SUBCOMMANDS, res.stdout


def test_dry_run_prints_resolved_config_as_json(tmp_path: Path) -> None:
    res = run(
        "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "tiny",
        "--set", "train.lr=0.002", "--batch-size", "5", "--variant", "clean", "--dry-run",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["train"]["lr"] == 0.002 and cfg["train"]["batch_size"] == 5
    assert cfg["loss"]["recon_region"] == "masked"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("pretrain", "--data", "x", "--out", "y", "--preset", "huge", "--dry-run"),
        ("prepare", "nosuchdataset", "--src", "x", "--out", "y"),
        ("pretrain", "--data", "x"),
        ("evaluate", "--task", "rsna-cls", "--data", "x", "--checkpoint", "y", "--seeds", "0"),
        ("export", "x", "--out", "y", "--weights", "foo"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    res = run(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


def test_bad_choice_names_the_choices_without_typer_wording() -> None:
    res = run("prepare", "nosuchdataset", "--src", "x", "--out", "y")
    assert res.returncode == 2
    assert "'nosuchdataset' is not one of 'mimic', 'chexpert'" in res.stderr
    assert "Value error" not in res.stderr
