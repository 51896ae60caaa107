from __future__ import annotations

import numpy as np
import pytest

from cmcgns_cli.data import tokenize as tk
from cmcgns_cli.data.prepared import open_prepared

CORPUS = [
    "there is a left pleural effusion.",
    "the heart is enlarged.",
    "no pneumothorax.",
    "lungs are clear.",
] * 20


def test_trained_wordpiece_loads_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    tk.train_wordpiece(CORPUS, 200, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    ids = tok("The heart is enlarged.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids  # the corpus words are in the vocabulary
    assert tok.decode(ids, skip_special_tokens=True) == "the heart is enlarged."
    assert tk.tokenizer_fingerprint(
        tk.load_tokenizer(tmp_path / "tok")
    ) == tk.tokenizer_fingerprint(tok)


def _cache(sentences_per_row: list[list[list[int]]]) -> tk.TokenCache:
    lens = [len(s) for row in sentences_per_row for s in row]
    tokens = np.array([t for row in sentences_per_row for s in row for t in s], dtype=np.int32)
    sent_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    row_offsets = np.concatenate([[0], np.cumsum([len(r) for r in sentences_per_row])])
    return tk.TokenCache(tokens, sent_offsets, row_offsets.astype(np.int64), 2, 3, 0)


def test_encode_keeps_whole_sentences_and_marks_indices():
    cache = _cache([[[10, 11], [], [12, 13, 14], [15, 16, 17, 18]]])
    ids, sidx, n = cache.encode(0, max_length=9, max_sentences=8)
    # budget 7: 2 + 3 fit, the 4-token sentence does not -> dropped whole; empty skipped
    assert ids.tolist() == [2, 10, 11, 12, 13, 14, 3]
    assert sidx.tolist() == [-1, 0, 0, 1, 1, 1, -1]
    assert n == 2
    ids, sidx, n = cache.encode(0, max_length=64, max_sentences=1)
    assert ids.tolist() == [2, 10, 11, 3] and n == 1


def test_encode_cuts_a_first_sentence_longer_than_max_length():
    cache = _cache([[list(range(10, 30)), [40, 41]]])
    ids, sidx, n = cache.encode(0, max_length=8, max_sentences=4)
    assert ids.tolist() == [2, 10, 11, 12, 13, 14, 15, 3]
    assert n == 1 and sidx.tolist() == [-1, 0, 0, 0, 0, 0, 0, -1]


def test_token_cache_is_built_once_per_tokenizer(world, tmp_path, monkeypatch):
    prepared = open_prepared(world)
    sents = [s for row in prepared.manifest["sentences"] for s in row]
    tok = tk.train_wordpiece(sents, 300, tmp_path / "tok")
    first = tk.token_cache(prepared, tok)
    assert first.path is not None and first.path.is_file()
    row0 = list(prepared.manifest["sentences"].iat[0])
    expect = [tok(s, add_special_tokens=False)["input_ids"] for s in row0]
    assert [list(x) for x in first.row_sentences(0)] == expect

    def boom(*a, **k):
        raise AssertionError("re-tokenised")

    monkeypatch.setattr(tk, "_tokenize_manifest", boom)
    again = tk.token_cache(prepared, tok)
    assert again.path == first.path and again.key == first.key
    np.testing.assert_array_equal(again.tokens, first.tokens)
    other = tk.train_wordpiece(sents, 120, tmp_path / "tok2")  # another tokenizer, another key
    with pytest.raises(AssertionError, match="re-tokenised"):
        tk.token_cache(prepared, other)
