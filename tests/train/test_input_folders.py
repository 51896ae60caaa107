"""Every command that reads a run folder refuses a missing path, a file and a folder without
the file that makes it a run with exit 2 and one line naming the option (where there is
one) and the path; nothing is made at the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.downstream.test_classification_cli import _write_chexpert_like
from tests.train.conftest import TINY, cli

RUN = "a pretrain run directory"
RUN_OR_BUNDLE = "a pretrain run or an exported bundle"


def _commands(world: Path, tmp: Path) -> dict[str, tuple[list[str], str, str, str]]:
    """name: (argv with P for the path, the option as named (empty: none), what the folder
    should be, the files of which it lacks every one)."""
    reports = tmp / "reports.txt"
    reports.write_text("no acute findings\n")
    # finetune reads its data first: a chexpert-like set its task accepts
    cls_data = _write_chexpert_like(tmp / "cls")
    ft = ["finetune", "--task", "chexpert-cls", "--data", str(cls_data), "--out", str(tmp / "ft")]
    return {
        "pretrain --resume": (["pretrain", "--resume", "P"], "--resume", RUN, "config.json"),
        "pretrain --init-from": (
            [
                "pretrain",
                "--data",
                str(world),
                "--out",
                str(tmp / "run"),
                *TINY,
                "--max-steps",
                "1",
                "--init-from",
                "P",
            ],
            "--init-from",
            RUN_OR_BUNDLE,
            "config.json",
        ),  # fmt: skip
        "pretrain-text --resume": (
            ["pretrain-text", "--resume", "P"],
            "--resume",
            "a pretrain-text folder",
            "pretrain_text.json",
        ),  # fmt: skip
        "finetune --checkpoint": (
            [*ft, "--checkpoint", "P"],
            "--checkpoint",
            RUN_OR_BUNDLE,
            "config.json",
        ),
        "finetune --like": (
            [*ft, "--checkpoint", "none", "--like", "P"],
            "--like",
            "a finetuned head, a pretrain run or an exported bundle",
            "finetune.json or config.json",
        ),  # fmt: skip
        "evaluate --checkpoint": (
            ["evaluate", "--task", "retrieval", "--data", str(world), "--checkpoint", "P"],
            "--checkpoint",
            "a pretrain run, an exported bundle or a finetuned head",
            "config.json or finetune.json",
        ),  # fmt: skip
        "embed --checkpoint": (
            ["embed", "--checkpoint", "P", "--reports", str(reports)],
            "--checkpoint",
            RUN_OR_BUNDLE,
            "config.json",
        ),  # fmt: skip
        "explain --checkpoint": (
            [
                "explain",
                "--checkpoint",
                "P",
                "--image",
                str(reports),
                "--report",
                "clear",
                "--out",
                str(tmp / "ex"),
            ],
            "--checkpoint",
            RUN_OR_BUNDLE,
            "config.json",
        ),  # fmt: skip
        "clusters --checkpoint": (
            ["clusters", "--checkpoint", "P", "--data", str(world)],
            "--checkpoint",
            RUN_OR_BUNDLE,
            "config.json",
        ),  # fmt: skip
        "export RUN": (["export", "P", "--out", str(tmp / "bundle")], "", RUN, "config.json"),
        "plot RUN": (
            ["plot", "P", "--out", str(tmp / "figs")],
            "",
            "a pretrain run or a finetuned directory",
            "metrics.jsonl or history.jsonl",
        ),  # fmt: skip
    }


NAMES = [
    "pretrain --resume", "pretrain --init-from", "pretrain-text --resume",
    "finetune --checkpoint", "finetune --like", "evaluate --checkpoint", "embed --checkpoint",
    "explain --checkpoint", "clusters --checkpoint", "export RUN", "plot RUN",
]  # fmt: skip


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("tokenizer:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_file_or_empty_run_folder_is_one_line(
    name, world, tmp_path, monkeypatch, capsys
) -> None:
    argv, option, what, needs = _commands(world, tmp_path)[name]
    ghost, afile, empty = tmp_path / "ghost", tmp_path / "notes.txt", tmp_path / "empty"
    afile.write_text("mine")
    empty.mkdir()
    where = f"{option} " if option else ""
    cases = (
        (ghost, "not found"),
        (afile, f"a file, not {what}"),
        (empty, f"not {what} (no {needs})"),
    )
    for path, problem in cases:
        code = cli([str(path) if a == "P" else a for a in argv], monkeypatch)
        line = _error_line(capsys.readouterr().err)
        assert (code, line) == (2, f"error: {where}{path}: {problem}")
    # the refusals made nothing at the path and left the others as they were
    assert not ghost.exists() and afile.read_text() == "mine" and list(empty.iterdir()) == []
