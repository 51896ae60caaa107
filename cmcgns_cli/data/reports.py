"""Radiology report text: section extraction, cleaning and sentence splitting.

Used by ``prepare`` (MIMIC-CXR reports, the ``folder`` report column) and by ``embed``
(report text given on the command line), so both sides see the same sentences.

Rules (MGCA's preprocessing, which the paper follows):
- Sections: a header is a line-leading upper-case phrase followed by a colon
  (``FINDINGS:``, ``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``, ...). Known header
  variants are matched case-insensitively. FINDINGS and IMPRESSION are kept; when a report
  has neither, the text outside the preamble sections (EXAMINATION, INDICATION, HISTORY,
  TECHNIQUE, COMPARISON, ...) is used; with no headers at all, the whole text.
  Headers are also found inline (``INDICATION: ... FINDINGS: ... IMPRESSION: ...`` on one
  line) when a known header name in upper case, or any known name after a sentence end,
  is followed by a colon.
- Text as exports write it (Unicode NFKC, so a no-break space is a space; every Unicode
  dash, including the Windows-1252 forms U+0096 / U+0097, separates words like a hyphen;
  soft hyphens and zero-width joiners are dropped). Letters with accents are kept.
- Cleaning: de-identification placeholders (IU's ``XXXX``, MIMIC's ``___``, ``[** **]``,
  ``<NAME>``-style tags) removed, line breaks and runs of space collapsed, lower-cased;
  abbreviations with a period (``Dr.``, ``e.g.``, ``a.m.``, ``no. 5``) end no sentence;
  misspelled FINDINGS / IMPRESSION headers and view-description headers (``CHEST, TWO
  VIEWS:``) are read as those sections (:mod:`cmcgns_cli.data.report_rules`).
- Sentences: split on periods (not decimal points), ``?``/``!``/``;``, numbered items
  (``1.``, ``2)``), at every section end, at blank lines, and at line breaks that start a
  list item (``-``, ``*``, a bullet, ``1.``); a single line break inside a paragraph is a
  hard wrap and keeps the sentence whole. Each sentence is its word tokens (runs of
  Unicode letters and digits: MGCA's ``\\w+`` less the underscore) joined by one space; a
  sentence needs at least ``MIN_SENTENCE_TOKENS`` tokens; a report at least ``min_words``
  in its kept sentences.
- Missing: ``None``, a float NaN, and a cell that is empty or holds only ``nan``,
  ``None``, ``null`` or ``<NA>`` (what a missing value becomes when a table is written as
  text) are a missing report, never the word "nan".
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cmcgns_cli.data import report_rules as rules
from cmcgns_cli.textio import decode

MIN_SENTENCE_TOKENS = 2
MIN_REPORT_WORDS = 3

FINDINGS_HEADERS = frozenset(
    {
        "FINDINGS",
        "FINDING",
        "FINDINGS AND IMPRESSION",
        "FINDINGS AND IMPRESSIONS",
        "FINDINGS/IMPRESSION",
        "REPORT",
        "BODY",
    }
)
IMPRESSION_HEADERS = frozenset(
    {
        "IMPRESSION",
        "IMPRESSIONS",
        "CONCLUSION",
        "CONCLUSIONS",
        "OPINION",
        "SUMMARY",
        "IMPRESSION AND RECOMMENDATION",
        "IMPRESSION AND RECOMMENDATIONS",
    }
)
PREAMBLE_HEADERS = frozenset(
    {
        "FINAL REPORT",
        "EXAMINATION",
        "EXAM",
        "INDICATION",
        "INDICATIONS",
        "HISTORY",
        "CLINICAL HISTORY",
        "CLINICAL INFORMATION",
        "REASON FOR EXAM",
        "REASON FOR EXAMINATION",
        "TECHNIQUE",
        "COMPARISON",
        "COMPARISONS",
        "PROCEDURE",
        "WET READ",
        "TYPE OF EXAMINATION",
        "NOTIFICATION",
        "RECOMMENDATION",
        "RECOMMENDATIONS",
        "RECOMMENDATION(S)",
        "ADDENDUM",
        "REFERRING PHYSICIAN",
        "DATE",
        "STUDY",
    }
)

# A header: at line start (after spaces), an upper-case phrase then a colon. Known names
# are also accepted in any case (``Findings:``), and inline: in upper case after any
# non-letter, in any case after a sentence end (``... cough. Findings: ...``).
_HEADER_UPPER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /()&,\-]{0,48}?)[ \t]*:", re.MULTILINE)
_KNOWN = sorted(FINDINGS_HEADERS | IMPRESSION_HEADERS | PREAMBLE_HEADERS, key=len, reverse=True)
_KNOWN_ALT = "|".join(re.escape(h) for h in _KNOWN)
_HEADER_ANYCASE = re.compile(
    r"^[ \t]*(" + _KNOWN_ALT + r")[ \t]*:",
    re.MULTILINE | re.IGNORECASE,
)
_HEADER_INLINE_UPPER = re.compile(r"(?<![A-Za-z0-9/(&\-])(" + _KNOWN_ALT + r")[ \t]*:")
_HEADER_INLINE_SENTENCE = re.compile(r"[.!?][ \t]+(" + _KNOWN_ALT + r")[ \t]*:", re.IGNORECASE)
_FINAL_REPORT = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE | re.IGNORECASE)
_TOKEN = re.compile(r"[^\W_]+")
# Sentence boundaries: a period not between two digits, ? or !, and a numbered item
# ("1." / "2)" at the start or after whitespace, followed by whitespace or end).
_SPLIT = re.compile(r"(?:(?:^|(?<=\s))\d{1,2}[.)](?=\s|$))|(?<!\d)\.|\.(?!\d)|[?!;]")
# Block boundaries (before whitespace is collapsed): a blank line, or a line break that
# starts a list item. A single line break elsewhere is a hard wrap inside a sentence.
_BLOCK = re.compile(
    r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*\u2022\u2023\u25aa\u25e6\u00b7]|\d{1,2}[.)])[ \t])"
)
# Windows-1252 bytes 0x80-0x9F read as Latin-1 become C1 controls: map them back.
_C1 = {
    i: (bytes([i]).decode("cp1252", errors="replace").replace("\ufffd", " "))
    for i in range(0x80, 0xA0)
}
_DASHES = dict.fromkeys(
    map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-"
)
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200c\u200d\u2060\ufeff"), None)
_INVISIBLE[0x200B] = " "  # zero-width space separates words
MISSING_CELLS = frozenset({"", "nan", "none", "null", "<na>"})


def normalize_text(text: str) -> str:
    """Unicode as exports write it -> plain separators (see the module docstring).

    Windows-1252 C1 forms are mapped back, NFKC applied (no-break and other Unicode
    spaces become spaces), every dash becomes ``-``, soft hyphens and zero-width joiners
    are removed, CR / CRLF become LF. Letters (accented or not) are kept.
    """
    text = text.translate(_C1)
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_DASHES).translate(_INVISIBLE)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_missing_report(value: object) -> bool:
    """True for None, a float NaN, and text that is blank or only ``nan`` / ``None`` /
    ``null`` / ``<NA>`` (any case): what a missing table cell becomes as text."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN
    if not isinstance(value, str):
        return False
    return value.strip().lower() in MISSING_CELLS


def read_report_file(path: str | os.PathLike[str]) -> str:
    """A report file's text in its detected encoding, without a byte-order mark: UTF-8 (with
    or without the mark), UTF-16/32 with a mark, else Windows-1252 for Western European text
    (rules: :func:`cmcgns_cli.textio.decode`).

    Raises OSError when the file cannot be read.
    """
    return decode(Path(path).read_bytes()).text


@dataclass(frozen=True)
class Sections:
    findings: str | None
    impression: str | None
    fallback: str | None = None  # text used when neither section exists

    def text(self, order: tuple[str, ...] = ("findings", "impression")) -> str:
        parts = [getattr(self, name) for name in order]
        parts = [p for p in parts if p]
        if not parts and self.fallback:
            parts = [self.fallback]
        # a blank line between sections: a section end always ends a sentence
        return "\n\n".join(parts)


def extract_sections(text: str) -> Sections:
    """FINDINGS and IMPRESSION of a report (None when absent). Never raises."""
    if not isinstance(text, str):
        return Sections(None, None, None)
    text = normalize_text(text)
    text = _FINAL_REPORT.sub("", text)
    headers: dict[int, tuple[int, str]] = {}
    for rx in (_HEADER_UPPER, _HEADER_ANYCASE, _HEADER_INLINE_UPPER, _HEADER_INLINE_SENTENCE):
        for m in rx.finditer(text):
            name = re.sub(r"\s+", " ", m.group(1).strip().upper())
            headers.setdefault(m.start(1), (m.end(), name))
    for rx in (rules.HEADER_WORD_LINE, rules.HEADER_WORD_INLINE):  # misspelled headers
        for m in rx.finditer(text):
            if rules.misspelled_section(m.group(1)):
                headers.setdefault(m.start(1), (m.end(), m.group(1).upper()))
    # drop headers that start inside another header's span
    spans: list[tuple[int, int, str]] = []
    for start in sorted(headers):
        end, name = headers[start]
        if spans and start < spans[-1][1]:
            continue
        spans.append((start, end, name))
    if not spans:
        body = text.strip()
        return Sections(None, None, body or None)
    found: dict[str, list[str]] = {"findings": [], "impression": [], "other": []}
    lead = text[: spans[0][0]].strip()
    if lead:
        found["other"].append(lead)
    current = "other"
    for i, (start, end, name) in enumerate(spans):
        stop = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        alias = rules.misspelled_section(name)
        # a view-description header ("CHEST, TWO VIEWS:") opens findings, unless it sits
        # inside the impression
        view = rules.is_view_header(name) and current != "impression"
        if name in FINDINGS_HEADERS or name.startswith("FINDING") or alias == "findings" or view:
            current, body = "findings", text[end:stop]
        elif name in IMPRESSION_HEADERS or name.startswith("IMPRESSION") or alias:
            current, body = "impression", text[end:stop]
        elif name in PREAMBLE_HEADERS:
            # a preamble section ends at its first blank line; paragraphs after it are
            # body text of a report that lacks FINDINGS/IMPRESSION headers
            current, body = "preamble", ""
            paragraphs = re.split(r"\n[ \t]*\n", text[end:stop].strip(), maxsplit=1)
            if len(paragraphs) == 2 and paragraphs[1].strip():
                found["other"].append(paragraphs[1].strip())
        else:
            # an unknown upper-case label ("PICC:", "PA AND LATERAL VIEWS:") belongs to
            # the section it sits in; outside findings/impression it is other text
            if current == "preamble":
                current = "other"
            body = text[start:stop]
        body = body.strip()
        if body and current != "preamble":
            found[current].append(body)
    other = found["other"]
    findings = "\n\n".join(found["findings"]) or None
    impression = "\n\n".join(found["impression"]) or None
    fallback = None
    if findings is None and impression is None and other:
        fallback = other[-1]
    return Sections(findings, impression, fallback)


def break_inline_headers(text: str) -> str:
    """``text`` with every known section header on a line of its own, as ``NAME: ``.

    A one-line export (``INDICATION: ... FINDINGS: ... IMPRESSION: ...``), or headers in
    mixed case (``Findings :``), then read like a report with one upper-case header per
    line, so a line-based section parser (the published protocol's) finds its sections.
    Headers are found as in :func:`extract_sections`: a known name at a line start in any
    case, in upper case after any non-letter, or in any case after a sentence end.
    """

    def name(m: re.Match[str]) -> str:
        return "\n" + re.sub(r"\s+", " ", m.group(1).strip().upper()) + ": "

    text = _HEADER_INLINE_SENTENCE.sub(lambda m: m.group(0)[0] + name(m), text)
    text = _HEADER_INLINE_UPPER.sub(name, text)
    return _HEADER_ANYCASE.sub(name, text)


def clean_text(text: str) -> str:
    """Normalise Unicode (:func:`normalize_text`), remove de-identification placeholders
    (``XXXX``, ``___``, ``[** **]``, ``<NAME>``: :mod:`cmcgns_cli.data.report_rules`),
    collapse whitespace, lower-case. Letters with accents are kept."""
    text = rules.remove_placeholders(normalize_text(text))
    return re.sub(r"\s+", " ", text).strip().lower()


def split_sentences(text: str) -> list[str]:
    """Cleaned sentences of ``text``: each its word tokens joined by single spaces.

    Blank lines and line breaks before a list item end a sentence; a single line break
    inside a paragraph does not (hard-wrapped text). Never raises; non-text -> ``[]``.
    """
    if not isinstance(text, str):
        return []
    out = []
    for block in _BLOCK.split(normalize_text(text)):
        for piece in _SPLIT.split(rules.protect_abbreviations(clean_text(block))):
            tokens = _TOKEN.findall(piece)
            if len(tokens) >= MIN_SENTENCE_TOKENS:
                out.append(" ".join(tokens))
    return out


def count_words(sentences: list[str]) -> int:
    return sum(len(s.split()) for s in sentences)


def report_sentences(
    text: str | None,
    *,
    min_words: int = MIN_REPORT_WORDS,
    order: tuple[str, ...] = ("findings", "impression"),
) -> tuple[list[str], str | None]:
    """``(sentences, None)`` for a usable report, ``([], reason)`` otherwise.

    Reasons: ``report_missing`` (None, not text, NaN, or a blank / ``nan`` / ``None`` /
    ``null`` cell: :func:`is_missing_report`), ``report_empty`` (no sections with text),
    ``report_too_short`` (fewer than ``min_words`` kept words).
    """
    if not isinstance(text, str) or is_missing_report(text):
        return [], "report_missing"
    body = extract_sections(text).text(order)
    if not body.strip():
        return [], "report_empty"
    sentences = split_sentences(body)
    if count_words(sentences) < max(min_words, 1):
        return [], "report_too_short"
    return sentences, None
