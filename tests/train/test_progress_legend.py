"""Pretraining explains the progress line's short names once per command, before the bars."""

from __future__ import annotations

from cmcgns_cli.train import display
from tests.train.conftest import TINY, cli


def test_a_two_stage_pretrain_prints_the_legend_once(world, tmp_path, monkeypatch, capsys):
    args = ["pretrain", "--data", str(world), "--out", str(tmp_path / "run"), *TINY,
            "--stage1-epochs", "1", "--stage2-epochs", "1",
            "--set", "train.max_steps=1"]  # fmt: skip
    assert cli(args, monkeypatch) == 0
    lines = capsys.readouterr().err.splitlines()
    legend = [i for i, line in enumerate(lines) if line == display.legend_line()]
    assert len(legend) == 1, lines
    # before the first progress line of stage 1 (plain lines under pytest: not a terminal)
    first_bar = next(i for i, line in enumerate(lines) if "stage 1, " in line)
    assert legend[0] < first_bar
    assert any("stage 2, " in line for line in lines)  # both stages ran, one legend
