"""Progress when stderr is not a terminal: plain lines at an interval and at the end."""

from __future__ import annotations

import re

from rich.progress import TextColumn

from cmcgns_cli.console import PlainProgress, err, progress


def test_not_a_terminal_gives_plain_progress():
    assert not err.is_terminal  # pytest captures stderr
    assert isinstance(progress(), PlainProgress)


def test_plain_lines_every_update_with_fields_and_eta(capsys):
    with PlainProgress(TextColumn("{task.fields[info]}"), interval_s=0) as bar:
        task = bar.add_task("stage 1", total=4, info="")
        for step in range(1, 5):
            bar.update(task, completed=step, info=f"ep 1 step {step} loss 2.{step}")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert re.fullmatch(
        r"\[\d\d:\d\d:\d\d\] stage 1, 1/4 \(25%\), ep 1 step 1 loss 2\.1, elapsed 0:00:00, "
        r"ETA (\d:\d\d:\d\d|\?)",
        lines[0],
    ), lines[0]
    assert lines[-1].endswith("elapsed 0:00:00") and "4/4 (100%)" in lines[-1]  # no ETA at end


def test_long_interval_prints_only_the_finish(capsys):
    with PlainProgress(interval_s=3600) as bar:
        task = bar.add_task("features", total=10)
        for _ in range(10):
            bar.advance(task)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "features, 10/10 (100%)" in lines[0]


def test_kv_table_prints_a_list_of_plain_values_as_words() -> None:
    # pretrain's table showed selection_splits as Python's ['validate', 'test']
    from io import StringIO

    from rich.console import Console

    from cmcgns_cli.console import kv_table

    buf = StringIO()
    rows = {"selection_splits": ["validate", "test"], "ci": [0.25, 0.5], "none": []}
    Console(file=buf, width=80).print(kv_table("t", rows))
    text = buf.getvalue()
    assert "validate, test" in text and "0.2500, 0.5000" in text and "[" not in text
    assert text.splitlines()[-2].rstrip().endswith("- │")
