"""MIMIC-CXR report text as the published protocol chooses it (``--protocol mgca``).

The authors' preprocessing (MGCA, after the MIMIC-CXR section parser of the dataset's
maintainers) splits a report at upper-case ``HEADER:`` lines, normalises the header names
(``CONCLUSION`` -> impression, ``FINDINGS AND IMPRESSION`` -> impression, ``PA AND
LATERAL`` -> findings, common misspellings, ...), drops empty findings/impression
sections, keeps only the LAST impression and the LAST findings section, and pairs the
image with ``impression + " " + findings`` (here joined by a blank line; the authors' sentence
rule below reads it as the space theirs has). A study with neither is dropped: there is no
fall-back to other text.

Sentences (:func:`mgca_split_sentences`) follow the authors' rule: line breaks become
spaces, the text is cut at every run of digits followed by a period (a numbered item ``2.``,
but also the ``1.`` of ``1.5 cm``), then at every remaining period. ``;``, ``?``, ``!`` and
blank lines do not end a sentence, so an impression without a final full stop runs into the
first findings sentence, as in the authors' data. The words of each piece are then cleaned as
everywhere else in cmcgns (:func:`cmcgns_cli.data.reports.clean_text` and its word tokens).
"""

from __future__ import annotations

import re

from cmcgns_cli.data.reports import (
    MIN_SENTENCE_TOKENS,
    break_inline_headers,
    clean_text,
    normalize_text,
)

# header at a line start: upper-case words, spaces and ( ) / , - then a colon and space
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,\-]*):\s", re.MULTILINE)
_EXACT = {
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "chest, two views": "findings",
    "reference findings": "findings",
    "finding": "findings",
    "ndication": "impression",
    **{
        typo: "impression"
        for typo in (
            "impresson",
            "imprression",
            "imoression",
            "impressoin",
            "imprssion",
            "impresion",
            "imperssion",
            "mpression",
            "impession",
        )
    },  # fmt: skip
    **{
        typo: "findings"
        for typo in (
            "findins",
            "findindgs",
            "findgings",
            "findngs",
            "findnings",
            "finidngs",
        )
    },  # fmt: skip
}
# the authors' first cut: any run of ASCII digits followed by a period
_NUMBERED = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"[^\W_]+")  # the word tokens of cmcgns_cli.data.reports
_OTHER_MAIN = ("history", "comparison", "addendum")
_FINDINGS_LIKE = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|"
    "two views|frontal view|pa view|ap view|one view|lateral view|bone window|"
    "frontal upright|frontal semi-upright|ribs|pa and lat"
)


def section_kind(header: str) -> str:
    """Normalised name of a section header: ``impression``, ``findings`` or other text."""
    name = header.strip().lower()
    if name in _EXACT:
        return _EXACT[name]
    for main in ("impression", "findings", *_OTHER_MAIN):
        if main in name:
            return main
    return "findings" if _FINDINGS_LIKE.search(name) else name


def mgca_report_text(text: str | None) -> str | None:
    """``last IMPRESSION + "\n\n" + last FINDINGS`` of a report, or None when it has neither.

    Sections are the text between one header and the next; empty ones do not count.
    Never raises.
    """
    if not isinstance(text, str):
        return None
    # Unicode spaces/dashes normalised and inline headers put on their own lines, so a
    # one-line export is parsed like the line-per-header reports the authors' parser reads.
    text = break_inline_headers(normalize_text(text.replace("\r\n", "\n").replace("\r", "\n")))
    heads = list(_HEADER.finditer(text))
    last: dict[str, str] = {}
    for k, m in enumerate(heads):
        kind = section_kind(m.group(1))
        if kind not in ("impression", "findings"):
            continue
        stop = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        body = text[m.end() : stop].strip()
        if body:
            last[kind] = body
    parts = [last[k] for k in ("impression", "findings") if k in last]
    # a blank line between the two: mgca_split_sentences reads it as the authors' space (an
    # impression without a final full stop runs on), a blank-line-aware splitter as a break
    return "\n\n".join(parts) if parts else None


def mgca_split_sentences(text: str | None) -> list[str]:
    """Sentences of ``text`` by the authors' rule (``--protocol mgca``); each its word tokens
    joined by single spaces, lower case.

    The text is cleaned first (Unicode normalised, ``___`` removed, every run of whitespace,
    line breaks included, made one space), then split at each ``[0-9]+\\.`` and each
    remaining ``.``; nothing else ends a sentence. A piece with fewer than
    ``MIN_SENTENCE_TOKENS`` words is dropped (the authors drop one-word pieces). Never
    raises; non-text -> ``[]``.
    """
    if not isinstance(text, str):
        return []
    out = []
    for point in _NUMBERED.split(clean_text(text)):
        for piece in point.split("."):
            tokens = _WORD.findall(piece)
            if len(tokens) >= MIN_SENTENCE_TOKENS:
                out.append(" ".join(tokens))
    return out
