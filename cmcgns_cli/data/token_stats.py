"""How reports fare in the text encoder's window: truncation counts and tokenizer
fragmentation.

A report longer than ``max_length`` tokens (or ``max_sentences`` sentences) loses its
later sentences in :meth:`cmcgns_cli.data.tokenize.TokenCache.encode`; these helpers count
that, so nothing is cut without a word. Fragmentation is word pieces per word, the usual
measure of how well a WordPiece vocabulary fits a corpus (a word the vocabulary holds
whole is one piece).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Above this share of truncated reports a run warns (once).
TRUNCATION_WARN_SHARE = 0.01


@dataclass(frozen=True)
class Truncation:
    """``reports``: rows with at least one token; ``truncated``: rows that lost at least one
    sentence (or the end of a first sentence longer than the window); ``sentences_lost``:
    sentences not seen; ``worst``: (kept, total) sentences of the row that lost the most."""

    reports: int
    truncated: int
    sentences_lost: int
    worst: tuple[int, int]

    @property
    def share(self) -> float:
        return self.truncated / self.reports if self.reports else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "reports": self.reports,
            "reports_truncated": self.truncated,
            "sentences_lost": self.sentences_lost,
            "truncated_share": round(self.share, 4),
            "worst_kept_of": list(self.worst),
        }


def kept_sentences(lengths: np.ndarray, max_length: int, max_sentences: int) -> tuple[int, bool]:
    """``(kept, cut)`` for one report whose non-empty sentences have ``lengths`` tokens,
    by the rule of ``TokenCache.encode``: whole sentences while they fit in
    ``max_length - 2`` tokens ([CLS] and [SEP]), at most ``max_sentences``; a first sentence
    longer than the window is kept cut (``cut`` is then True)."""
    budget = max(1, int(max_length) - 2)
    used = kept = 0
    for n in lengths:
        if kept >= max_sentences:
            break
        if used + int(n) > budget:
            if kept == 0:
                return 1, True
            break
        used += int(n)
        kept += 1
    return kept, False


def truncation(cache: Any, max_length: int, max_sentences: int) -> Truncation:
    """:class:`Truncation` of every row of a ``TokenCache``-like object (``sent_offsets``,
    ``row_offsets``)."""
    lengths = np.diff(np.asarray(cache.sent_offsets))
    rows = np.asarray(cache.row_offsets)
    reports = truncated = lost = 0
    worst = (0, 0)
    worst_lost = -1
    for r in range(len(rows) - 1):
        sent = lengths[rows[r] : rows[r + 1]]
        sent = sent[sent > 0]
        if len(sent) == 0:
            continue
        reports += 1
        kept, cut = kept_sentences(sent, max_length, max_sentences)
        n_lost = len(sent) - kept
        if n_lost or cut:
            truncated += 1
            lost += n_lost
            if n_lost > worst_lost:
                worst, worst_lost = (kept, len(sent)), n_lost
    return Truncation(reports, truncated, lost, worst)


def truncation_warning(t: Truncation, max_length: int, where: str) -> str | None:
    """The one-line warning when more than 1 % of reports are truncated, else None."""
    if t.share <= TRUNCATION_WARN_SHARE:
        return None
    kept, total = t.worst
    return (
        f"{where}: {t.truncated} of {t.reports} reports ({100 * t.share:.1f} %) lost "
        f"{t.sentences_lost} sentences past max_length={max_length} (worst kept {kept} of "
        f"{total}); raise --set data.max_length or data.max_sentences to keep them"
    )


def fragmentation(tok: Any, sentences: Iterable[str]) -> dict[str, Any]:
    """Word pieces per word of ``tok`` on ``sentences`` (words as the tokenizer's own
    pre-tokenizer splits them), the share of words kept whole (one piece), the share of
    word occurrences that map to ``[UNK]``, and the vocabulary size."""
    backend = tok.backend_tokenizer
    unk = tok.unk_token_id
    words = pieces = whole = unknown = 0
    batch = [s for s in sentences if s]
    for start in range(0, len(batch), 4096):
        for enc in backend.encode_batch(batch[start : start + 4096], add_special_tokens=False):
            word_ids = [w for w in enc.word_ids if w is not None]
            if not word_ids:
                continue
            counts = np.bincount(np.asarray(word_ids))
            counts = counts[counts > 0]
            words += len(counts)
            pieces += int(counts.sum())
            whole += int((counts == 1).sum())
            unknown += sum(1 for i in enc.ids if i == unk)
    return {
        "words": words,
        "pieces_per_word": round(pieces / words, 4) if words else None,
        "whole_word_share": round(whole / words, 4) if words else None,
        "unk_share": round(unknown / words, 4) if words else None,
        "vocab_size": int(tok.vocab_size) if hasattr(tok, "vocab_size") else None,
    }
