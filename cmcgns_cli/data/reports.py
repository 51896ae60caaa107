"""Radiology report text: section extraction, cleaning and sentence splitting.

Used by ``prepare`` (MIMIC-CXR reports, the ``folder`` report column) and by ``embed``
(report text given on the command line), so both sides see the same sentences.

Rules (MGCA's preprocessing, which the paper follows):
- Sections: a header is a line-leading upper-case phrase followed by a colon
  (``FINDINGS:``, ``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``, ...). Known header
  variants are matched case-insensitively. FINDINGS and IMPRESSION are kept; when a report
  has neither, the text outside the preamble sections (EXAMINATION, INDICATION, HISTORY,
  TECHNIQUE, COMPARISON, ...) is used; with no headers at all, the whole text.
- Cleaning: ``___`` (de-identified spans) removed, line breaks and runs of space collapsed,
  lower-cased, non-ASCII dropped.
- Sentences: split on periods (not decimal points), ``?``/``!`` and numbered items
  (``1.``, ``2)``); each sentence is its word tokens (runs of ASCII letters and digits:
  MGCA's ``\\w+`` less the underscore) joined by one space; a sentence needs at least
  ``MIN_SENTENCE_TOKENS`` tokens; a report at least ``min_words`` in its kept sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
# are also accepted in any case (``Findings:``).
_HEADER_UPPER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /()&,\-]{0,48}?)[ \t]*:", re.MULTILINE)
_KNOWN = sorted(FINDINGS_HEADERS | IMPRESSION_HEADERS | PREAMBLE_HEADERS, key=len, reverse=True)
_HEADER_ANYCASE = re.compile(
    r"^[ \t]*(" + "|".join(re.escape(h) for h in _KNOWN) + r")[ \t]*:",
    re.MULTILINE | re.IGNORECASE,
)
_FINAL_REPORT = re.compile(r"^[ \t]*FINAL REPORT[ \t]*$", re.MULTILINE | re.IGNORECASE)
_PHI = re.compile(r"_{2,}")
_TOKEN = re.compile(r"[a-z0-9]+")
# Sentence boundaries: a period not between two digits, ? or !, and a numbered item
# ("1." / "2)" at the start or after whitespace, followed by whitespace or end).
_SPLIT = re.compile(r"(?:(?:^|(?<=\s))\d{1,2}[.)](?=\s|$))|(?<!\d)\.|\.(?!\d)|[?!;]")


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
        return "\n".join(parts)


def extract_sections(text: str) -> Sections:
    """FINDINGS and IMPRESSION of a report (None when absent). Never raises."""
    if not isinstance(text, str):
        return Sections(None, None, None)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _FINAL_REPORT.sub("", text)
    headers: dict[int, tuple[int, str]] = {}
    for rx in (_HEADER_UPPER, _HEADER_ANYCASE):
        for m in rx.finditer(text):
            name = re.sub(r"\s+", " ", m.group(1).strip().upper())
            headers.setdefault(m.start(), (m.end(), name))
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
        if name in FINDINGS_HEADERS or name.startswith("FINDING"):
            current, body = "findings", text[end:stop]
        elif name in IMPRESSION_HEADERS or name.startswith("IMPRESSION"):
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
    findings = "\n".join(found["findings"]) or None
    impression = "\n".join(found["impression"]) or None
    fallback = None
    if findings is None and impression is None and other:
        fallback = other[-1]
    return Sections(findings, impression, fallback)


def clean_text(text: str) -> str:
    """Remove ``___``, collapse whitespace, lower-case, drop non-ASCII."""
    text = _PHI.sub(" ", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"\s+", " ", text).strip().lower()


def split_sentences(text: str) -> list[str]:
    """Cleaned sentences of ``text``: each its word tokens joined by single spaces."""
    if not isinstance(text, str):
        return []
    out = []
    for piece in _SPLIT.split(clean_text(text)):
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

    Reasons: ``report_missing`` (None / not text), ``report_empty`` (no text or no
    sections with text), ``report_too_short`` (fewer than ``min_words`` kept words).
    """
    if text is None or not isinstance(text, str):
        return [], "report_missing"
    if not text.strip():
        return [], "report_empty"
    body = extract_sections(text).text(order)
    if not body.strip():
        return [], "report_empty"
    sentences = split_sentences(body)
    if count_words(sentences) < max(min_words, 1):
        return [], "report_too_short"
    return sentences, None
