"""Image paths listed in a CSV written on another machine -> files under ``--src``.

A CSV moved between machines records paths that do not exist here as written: Windows
separators (``train\\patient1\\view1.jpg``), an absolute path from the other computer
(``C:\\Users\\me\\CheXpert-v1.0-small\\train\\...``, ``/mnt/data/chexpert/train/...``) or
a different root folder. :class:`PathResolver` resolves each recorded path in this order:

1. as recorded: an absolute path that exists, or the relative path under one of the bases;
2. separators normalised (``\\`` -> ``/``, a drive letter or UNC host and leading ``/``
   removed) under one of the bases;
3. a leading part dropped: the prefixes learned so far, most used first; while fewer than
   ``learn_rows`` rows have tried, a row that still fails tries dropping 1, 2, ...
   leading components (one ``stat`` per candidate, never a walk of the tree) and the
   prefix that works is learned for the rows after it.

What was re-rooted is counted in :meth:`PathResolver.report` (the summary and meta.json
show it); a path that none of this finds is returned as recorded under the first base, so
the writer skips it as ``missing_file`` with that path.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_DRIVE = re.compile(r"^(?:[A-Za-z]:|//[^/]+/[^/]+|\\\\[^\\]+\\[^\\]+)")
LEARN_ROWS = 32


def path_parts(recorded: str) -> list[str]:
    """Components of a recorded path with ``/`` or ``\\`` separators, without a drive letter,
    UNC host/share, empty parts or ``.``: ``C:\\a\\.\\b`` -> ``["a", "b"]``."""
    text = _DRIVE.sub("", recorded.strip())
    return [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]


class PathResolver:
    """Resolve recorded paths against ``bases`` (tried in order); see the module docstring.

    ``first_guess`` (optional) maps a recorded path to the dataset's own convention (e.g.
    CheXpert's ``CheXpert-v1.0-small/`` prefix); a guess that exists counts as recorded
    (a path with backslashes skips it, so normalising them is counted).
    """

    def __init__(
        self,
        bases: Sequence[Path],
        *,
        first_guess: Callable[[str], Path] | None = None,
        learn_rows: int = LEARN_ROWS,
    ) -> None:
        self.bases = [Path(b) for b in bases]
        self.first_guess = first_guess
        self.learn_rows = learn_rows
        self.prefixes: Counter[tuple[str, ...]] = Counter()
        self.counts: Counter[str] = Counter()
        self._tries = 0

    def _under_bases(self, parts: Sequence[str]) -> Path | None:
        if not parts:
            return None
        for base in self.bases:
            cand = base.joinpath(*parts)
            if cand.exists():
                return cand
        return None

    def resolve(self, recorded: str) -> Path:
        """The file for ``recorded`` (see the module docstring); never raises."""
        raw = str(recorded).strip()
        if self.first_guess is not None and "\\" not in raw:
            guess = self.first_guess(raw)
            if guess.exists():
                self.counts["as_recorded"] += 1
                return guess
        path = Path(raw).expanduser()
        if path.is_absolute() and path.exists():
            self.counts["as_recorded"] += 1
            return path
        if not path.is_absolute() and "\\" not in raw:
            found = self._under_bases(path.parts)
            if found is not None:
                self.counts["as_recorded"] += 1
                return found
        parts = path_parts(raw)
        found = self._under_bases(parts)
        if found is not None:
            self.counts["separators_normalised"] += 1
            return found
        for prefix, _ in self.prefixes.most_common():
            k = len(prefix)
            if tuple(parts[:k]) == prefix and (found := self._under_bases(parts[k:])):
                self.prefixes[prefix] += 1
                self.counts["prefix_dropped"] += 1
                return found
        if self._tries < self.learn_rows:
            self._tries += 1
            for k in range(1, len(parts)):
                found = self._under_bases(parts[k:])
                if found is not None:
                    self.prefixes[tuple(parts[:k])] += 1
                    self.counts["prefix_dropped"] += 1
                    return found
        self.counts["not_found"] += 1
        if self.first_guess is not None:
            return self.first_guess(raw)
        return path if path.is_absolute() else self.bases[0] / path

    @property
    def rerooted(self) -> int:
        """Rows found only after normalising separators or dropping a prefix."""
        return self.counts["separators_normalised"] + self.counts["prefix_dropped"]

    def report(self) -> dict[str, Any]:
        """JSON-ready counts: ``as_recorded``, ``separators_normalised``,
        ``prefix_dropped``, ``not_found`` and ``dropped_prefixes`` {prefix: rows}."""
        return {
            "as_recorded": int(self.counts["as_recorded"]),
            "separators_normalised": int(self.counts["separators_normalised"]),
            "prefix_dropped": int(self.counts["prefix_dropped"]),
            "not_found": int(self.counts["not_found"]),
            "dropped_prefixes": {"/".join(p): int(n) for p, n in self.prefixes.most_common()},
            "bases": [str(b) for b in self.bases],
        }
