"""jsonio.read_lines, the one JSON Lines parser (plot's metrics.jsonl, embed's reports)."""

from __future__ import annotations

import pytest

from cmcgns_cli import jsonio
from cmcgns_cli.errors import BadInputError


def test_blank_lines_are_skipped_and_indices_count_them():
    text = '{"a": 1}\n\n  \n[2, 3]\n"x"\n'
    assert jsonio.read_lines(text, "f.jsonl") == [(0, {"a": 1}), (3, [2, 3]), (4, "x")]


def test_a_bad_line_names_the_file_and_its_one_based_line():
    with pytest.raises(BadInputError) as exc:
        jsonio.read_lines('{"a": 1}\n{"a": \n', "runs/m.jsonl")
    assert str(exc.value).startswith("runs/m.jsonl: line 2 is not JSON (")
    assert "\n" not in str(exc.value)
