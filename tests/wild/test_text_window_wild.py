"""Nothing cut silently (issue 27 kind D): reports longer than the text window are counted
(sentences lost) in pretrain, embed and explain; the scratch tokenizer's fragmentation is
reported. Expected counts are worked out by hand from the sentence lengths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmcgns_cli.data.token_stats import (
    fragmentation,
    kept_sentences,
    truncation,
    truncation_warning,
)
from cmcgns_cli.data.tokenize import train_wordpiece
from tests.wild.builders import picture, png_bytes


@pytest.mark.parametrize(
    "lengths, max_length, max_sentences, expect",
    [
        ([3, 3, 3], 12, 32, (3, False)),  # 9 tokens fit the 10-token budget
        ([3, 3, 3, 3], 12, 32, (3, False)),  # 12 do not: the fourth is lost
        ([5, 6], 12, 32, (1, False)),  # 11 > 10
        ([15, 2], 12, 32, (1, True)),  # a first sentence longer than the window is cut
        ([1, 1, 1, 1], 100, 2, (2, False)),  # max_sentences
    ],
)
def test_kept_sentences(lengths, max_length, max_sentences, expect):
    assert kept_sentences(np.asarray(lengths), max_length, max_sentences) == expect


class _Cache:
    def __init__(self, rows):
        lengths = [n for r in rows for n in r]
        self.sent_offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.row_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])


def test_truncation_counts_rows_and_sentences():
    rows = [[3, 3, 3], [3, 3, 3, 3, 3], [20], [], [4, 4, 4, 4, 4, 4, 4, 4]]
    t = truncation(_Cache(rows), 12, 32)
    # row 1 keeps 3 of 5, row 2 is cut inside its only sentence, row 4 keeps 2 of 8
    assert (t.reports, t.truncated, t.sentences_lost) == (4, 3, 2 + 0 + 6)
    assert t.worst == (2, 8)
    msg = truncation_warning(t, 12, "pretrain")
    assert msg and "3 of 4 reports" in msg and "8 sentences" in msg
    assert truncation_warning(truncation(_Cache([[3]] * 200 + [[3] * 5]), 12, 32), 12, "x") is None


def test_fragmentation_counts_pieces_per_word(tmp_path):
    corpus = ["lung lung lung heart"] * 5 + ["lungs"] * 3
    tok = train_wordpiece(corpus, 40, tmp_path / "tok")
    pieces = {w: len(tok.tokenize(w)) for w in ("lung", "heart", "lungs", "zebra")}
    f = fragmentation(tok, ["lung heart", "lungs zebra"])
    assert f["words"] == 4
    assert f["pieces_per_word"] == pytest.approx(sum(pieces.values()) / 4, abs=1e-4)
    assert f["whole_word_share"] == pytest.approx(
        sum(n == 1 for n in pieces.values()) / 4, abs=1e-4
    )


def test_trained_run_records_its_text_window(trained):
    _, run = trained
    cfg = json.loads((Path(run) / "config.json").read_text())
    window = cfg["text_window"]
    assert window["reports"] > 0 and window["reports_truncated"] == 0
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    rec = [r for r in map(json.loads, lines) if r["kind"] == "text_window"]
    assert len(rec) == 1 and rec[0]["reports_truncated"] == 0
    assert rec[0]["max_length"] == 96 and rec[0]["reports"] == window["reports"]
    frag = cfg["tokenizer"]["fragmentation"]
    assert frag["pieces_per_word"] >= 1.0 and frag["words"] > 0


def test_embed_and_explain_count_lost_sentences(trained, tmp_path, cli):
    _, run = trained
    long = " ".join(f"There is a small nodule number {k} in the left lung." for k in range(30))
    short = "Heart size is normal. Lungs are clear."
    f = tmp_path / "r.csv"
    f.write_text(f'id,text\nlong,"{long}"\nshort,"{short}"\n')
    out = tmp_path / "e.jsonl"
    res = cli("embed", "--checkpoint", run, "--reports", f, "--out", out)
    assert res.exit_code == 0, res.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["short"]["sentences_lost"] == 0
    # tiny preset: 96 tokens; each sentence is at least 10 word pieces, so at most 9 fit
    assert rows["long"]["sentences_lost"] >= 30 - 9
    assert "warning: 1 of 2 reports lost" in res.stderr
    img = tmp_path / "cxr.png"
    img.write_bytes(png_bytes(picture(64, 64)))
    res = cli("explain", "--checkpoint", run, "--image", img, "--report", long, "--out",
              tmp_path / "x")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    ex = json.loads((tmp_path / "x" / "explain.json").read_text())
    assert ex["sentences_in_report"] == 30
    assert ex["sentences_lost"] == 30 - len(ex["sentences"]) > 0
    assert "the model sees the first" in res.stderr
