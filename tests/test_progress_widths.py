"""The progress line on a terminal at fixed widths: whole columns are left out by priority as
the terminal narrows, nothing is cut into an ellipsis, the bar is at least BAR_MIN wide or
absent; pretraining explains its short names once."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from rich.console import Console, Group
from rich.progress import TextColumn

from cmcgns_cli import console
from cmcgns_cli.progress_fit import BAR_MAX, BAR_MIN
from cmcgns_cli.train import display

RECORD = {"epoch": 3, "step": 120, "loss": 1.2345, "global": 0.5, "local_image": 0.3,
          "local_text": 0.2, "cluster_fn": 0.1, "recon": 0.05, "acc_i2t": 0.25,
          "acc_t2i": 0.125, "pairs_per_s": 12.3}  # fmt: skip
# every part of the line, whole, in display order (stage 2: recon is shown)
PARTS = ["stage 2", "120/400", "ep 3 step 120", "loss 1.234", "glob 0.500", "li 0.300",
         "lt 0.200", "cfn 0.100", "rec 0.050", "i2t 0.250", "t2i 0.125",
         "12.3 pairs/s"]  # fmt: skip
BAR_CHARS = "━╸╺"


def _render(width: int, monkeypatch: pytest.MonkeyPatch, *columns, **fields) -> str:
    term = Console(width=width, file=StringIO(), force_terminal=True, color_system=None)
    monkeypatch.setattr(console, "err", term)
    bar = console.progress(*columns)
    bar.add_task("stage 2", total=400, completed=120, **fields)
    term.print(Group(*bar.get_renderables()))
    return term.file.getvalue().rstrip("\n")


def _bar_width(line: str, before: str, after: str) -> int:
    """Characters of the bar between the ``before`` and ``after`` columns (0: no bar)."""
    middle = line.split(before + " ", 1)[1].split(after, 1)[0]
    return len(middle) - 1 if any(c in middle for c in BAR_CHARS) else 0


@pytest.mark.parametrize("width", [60, 80, 110, 200])
def test_pretrain_line_fits_with_whole_columns(width, monkeypatch):
    parts = display.info_parts(RECORD, 2)
    line = _render(width, monkeypatch, *display.columns(), info="", parts=parts)
    assert "\n" not in line and len(line) <= width, line
    assert "…" not in line, line
    shown = [p for p in PARTS if p in line]
    # each part is there whole or not at all: the line is the shown parts, the bar and times
    rest = line
    for p in shown:
        rest = rest.replace(p, "", 1)
    assert re.fullmatch(rf"[\s{BAR_CHARS}\d:\-]*", rest), (line, rest)
    assert shown[:4] == ["stage 2", "120/400", "ep 3 step 120", "loss 1.234"]
    assert re.search(r"-:--:--|\d:\d\d:\d\d", line), line  # the ETA stays
    assert _bar_width(line, "stage 2", "120/400") in (0, *range(BAR_MIN, BAR_MAX + 1))
    if width == 200:
        assert shown == PARTS  # everything fits
    # the elapsed time (0:00:00 here; the ETA of a task not started is -:--:--) goes first
    assert ("0:00:00" in line) == (width == 200), line
    if width <= 80:
        assert "pairs/s" not in line and "t2i" not in line  # the least useful go first
    # dropped by priority: a shown loss term means every term before it is shown too
    terms = PARTS[4:11]
    flags = [t in line for t in terms]
    assert flags == sorted(flags, reverse=True), line


@pytest.mark.parametrize("width", [60, 80, 110, 200])
def test_other_commands_keep_the_name_count_and_eta_whole(width, monkeypatch):
    """A command's own text column (finetune's ``ep E loss L``) at each width."""
    line = _render(
        width, monkeypatch, TextColumn("{task.fields[info]}"), info="ep 12 loss 0.6931 " * 3
    )
    assert "…" not in line and len(line) <= width, line
    assert line.startswith("stage 2 ") and "120/400" in line
    long_text = ("ep 12 loss 0.6931 " * 3).strip()
    # name 7 + count 7 + text 54 + ETA 7 + 3 gaps = 78 characters; the bar needs 11 more
    assert (long_text in line) == (width >= 78), line  # whole or absent
    assert (_bar_width(line, "stage 2", "120/400") >= BAR_MIN) == (width >= 78 + 1 + BAR_MIN)


def test_the_old_layout_cut_columns_into_ellipses(monkeypatch):
    """The fault this guards against: Rich's plain layout at 110 columns (measured before
    the change: a 1-character bar, an ETA of '… …', the name 'sta…')."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    term = Console(width=110, file=StringIO(), force_terminal=True, color_system=None)
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                   MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=term, expand=True)  # fmt: skip
    bar.add_task("stage 2", total=400, completed=120, info=display.fmt_info(RECORD, 2))
    term.print(Group(*bar.get_renderables()))
    assert "…" in term.file.getvalue()


def test_legend_names_every_short_name_once():
    legend = display.legend_line()
    assert "\n" not in legend
    for short in display.SHORT.values():
        assert len(re.findall(rf"(?:^|; |: ){short} = ", legend)) == 1, short
    assert "li = local image loss" in legend and "cfn = cluster false-negative" in legend


def test_the_elapsed_time_goes_before_any_loss_term(monkeypatch):
    """A stage-1 line (no rec) at 110 columns: name 7 + bar 10 + count 7 + where 13 + loss 10
    + glob 10 + li 8 + lt 8 + cfn 9 + i2t 9 + ETA 7 + 10 gaps = 108 fits, t2i does not;
    the elapsed time (7) must not take i2t's place."""
    parts = display.info_parts(RECORD, 1)
    line = _render(110, monkeypatch, *display.columns(), info="", parts=parts)
    assert "i2t 0.250" in line and "t2i" not in line and "rec " not in line, line
    assert "0:00:00" not in line, line
