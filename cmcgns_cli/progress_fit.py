"""A Rich progress display that fits the terminal by dropping whole columns.

Rich's own :class:`~rich.progress.Progress` lays its columns out in a table that shrinks every
column when the line is too long: at 110 columns a pretrain line showed a one-character bar,
an ETA of ``… …`` and the stage name ``sta…``. Here each column has a priority (0 = kept
longest); when the terminal is narrower than the columns need, the lowest-priority columns
are left out whole until the rest fits, so what is shown is never cut into an ellipsis. The
bar is shown at :data:`BAR_MIN` to :data:`BAR_MAX` characters (the room left over) or not at
all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, Progress, ProgressColumn, Task
from rich.progress_bar import ProgressBar
from rich.table import Table

BAR_MIN = 10  # characters: a narrower bar tells nothing, so it is dropped instead
BAR_MAX = 40
GAP = 1  # characters between two columns (the table's padding)


class FitProgress(Progress):
    """:class:`~rich.progress.Progress` whose line never exceeds the console's width.

    ``ranked``: ``(column, priority)`` pairs in display order; a lower priority is kept
    longer. A column whose cells are all empty takes no room. A column's width is the widest
    cell it has shown so far (so a column does not come and go as numbers change length).
    ``**kwargs`` go to :class:`~rich.progress.Progress` (``console``, ``transient``, ...).
    """

    def __init__(self, ranked: Sequence[tuple[ProgressColumn, int]], **kwargs: Any) -> None:
        self.priorities = [int(priority) for _, priority in ranked]
        self._widest: dict[int, int] = {}
        self._ready = False  # Rich renders once while constructing, before a console is set
        super().__init__(*(column for column, _ in ranked), **kwargs)
        self._ready = True

    def visible_columns(self, need: Sequence[int], width: int) -> list[int]:
        """Indices of the columns shown on a line ``width`` characters wide: all that need
        room, less the lowest-priority ones (the later first among equals) until the rest
        fits (the last one left stays). ``need[i]``: column ``i``'s width in characters."""
        keep = [i for i, n in enumerate(need) if n > 0]
        for i in sorted(keep, key=lambda i: (self.priorities[i], i), reverse=True):
            if _line_width([need[k] for k in keep]) <= width or len(keep) == 1:
                break
            keep.remove(i)
        return keep

    def _needs(self, cells: list[list[RenderableType]]) -> list[int]:
        need = []
        options = self.console.options
        for i, column in enumerate(self.columns):
            if isinstance(column, BarColumn):
                need.append(BAR_MIN)
                continue
            widths = [Measurement.get(self.console, options, c).maximum for c in cells[i]]
            self._widest[i] = max(self._widest.get(i, 0), *widths, 0)
            need.append(self._widest[i])
        return need

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        """The table of the visible tasks with only the columns that fit (see
        :meth:`visible_columns`); the bar takes the room left, up to :data:`BAR_MAX`."""
        if not self._ready:
            return Table.grid()
        shown = [t for t in tasks if t.visible]
        cells = [
            [c.format(task=t) if isinstance(c, str) else c(t) for t in shown] for c in self.columns
        ]
        width = self.console.width
        need = self._needs(cells)
        keep = self.visible_columns(need, width)
        spare = max(0, width - _line_width([need[i] for i in keep]))
        bar_width = min(BAR_MAX, BAR_MIN + spare)
        table = Table.grid(padding=(0, GAP), expand=False)
        for i in keep:
            is_bar = isinstance(self.columns[i], BarColumn)
            table.add_column(
                width=bar_width if is_bar else None, min_width=None if is_bar else need[i]
            )
            table.columns[-1].no_wrap = True
            if is_bar:
                for cell in cells[i]:
                    if isinstance(cell, ProgressBar):
                        cell.width = bar_width
        for row in range(len(shown)):
            table.add_row(*(cells[i][row] for i in keep))
        return table


def _line_width(widths: list[int]) -> int:
    return sum(widths) + GAP * max(len(widths) - 1, 0)
