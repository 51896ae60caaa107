"""Report text as real collections write it: de-identification placeholders, abbreviations
with a period, misspelled section headers and view-description headers.

Used by :mod:`cmcgns_cli.data.reports` (so by ``prepare`` and ``embed`` alike).

Placeholder rule (one rule, everywhere): a de-identified span is removed, with the hyphen
or slash that joins it to a word, before tokens are taken. Spans are

- runs of ``X`` that stand for a word (IU X-ray's ``XXXX``, also inside words:
  ``x-XXXX``): two or more upper-case ``X``, or three or more ``x`` in any case;
- runs of two or more underscores (MIMIC-CXR's ``___``);
- ``[** ... **]`` (MIMIC-II/III);
- a tag of upper-case letters, digits, ``_``, ``-`` or spaces in angle, square or curly
  brackets (``<NAME>``, ``[DATE]``, ``{PERSON}``, ``[REDACTED]``).

Abbreviation rule: the periods of ``Dr.``, ``Drs.``, ``Mr.``, ``Mrs.``, ``Ms.``,
``Prof.``, ``a.m.``, ``p.m.``, ``e.g.``, ``i.e.``, ``vs.``, ``approx.``, ``cf.``,
``fig.``, ``incl.`` and ``no.`` before a number do not end a sentence (they become
spaces, so the tokens are those the text had).

Header rule: a line-leading single word before a colon that is within two edits
(insertions, deletions, substitutions, adjacent swaps; optimal string alignment) of
FINDINGS or IMPRESSION and starts with the same letter is that section (``FINIDNGS:``,
``IMPRESSON:``, ``Impresion:``); an upper-case header that only describes the view
(its words all from :data:`VIEW_WORDS` and naming the chest or a view, as ``CHEST, TWO
VIEWS:`` or ``PORTABLE AP CHEST:``) opens FINDINGS, as the public MIMIC-CXR section parser
(``section_parser.py``, its ``frequent_sections`` map) maps them.
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(
    r"[-/]?(?:X{2,}|[Xx]{3,}|_{2,}|\[\*\*.*?\*\*\]|[<\[{][ \t]*[A-Z][A-Z0-9_ \-]*[ \t]*[>\]}])"
)

_ABBREV = re.compile(
    r"\b(?:(?:drs?|mrs?|ms|prof|vs|approx|cf|fig|incl)\.|(?:a\.m|p\.m|e\.g|i\.e)\.?|no\.(?=\s*\d))",
    re.IGNORECASE,
)

VIEW_WORDS = frozenset(
    [
        "CHEST",
        "THORAX",
        "VIEW",
        "VIEWS",
        "OF",
        "THE",
        "AND",
        "PA",
        "AP",
        "LAT",
        "LATERAL",
        "PORTABLE",
        "UPRIGHT",
        "SUPINE",
        "ERECT",
        "SEMI",
        "SEMIUPRIGHT",
        "SEMI-UPRIGHT",
        "SEMI-ERECT",
        "SINGLE",
        "FRONTAL",
        "ONE",
        "TWO",
        "THREE",
        "RADIOGRAPH",
        "RADIOGRAPHS",
        "X-RAY",
        "XRAY",
        "FILM",
        "FILMS",
        "AXR",
        "CXR",
        "DECUBITUS",
        "LEFT",
        "RIGHT",
        "LORDOTIC",
    ]
)
_VIEW_NAMES = frozenset({"CHEST", "THORAX", "VIEW", "VIEWS", "CXR", "RADIOGRAPH"})


def remove_placeholders(text: str) -> str:
    """``text`` with every de-identification placeholder (module docstring) replaced by a
    space. Case-sensitive for ``XX`` and bracketed tags, so run it before lower-casing."""
    return PLACEHOLDER.sub(" ", text)


def count_placeholders(text: str) -> int:
    """How many placeholder spans :func:`remove_placeholders` would remove."""
    return len(PLACEHOLDER.findall(text))


def protect_abbreviations(text: str) -> str:
    """``text`` with the periods of the known abbreviations (module docstring) replaced by
    spaces, so a sentence splitter on periods does not end a sentence there."""
    return _ABBREV.sub(lambda m: m.group(0).replace(".", " "), text)


def _osa(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def misspelled_section(name: str) -> str | None:
    """``"findings"`` / ``"impression"`` for a one-word header name within two edits of it
    (same first letter), else None. ``name`` is compared upper-cased."""
    word = name.strip().upper()
    if not word.isalpha() or len(word) < 5:
        return None
    for target, section in (("FINDINGS", "findings"), ("IMPRESSION", "impression")):
        if word[0] == target[0] and _osa(word, target) <= 2:
            return section
    return None


def is_view_header(name: str) -> bool:
    """True for an upper-case header that only describes the radiograph's view."""
    words = [w for w in re.split(r"[\s,/()&]+", name.strip().upper()) if w]
    return (
        bool(words) and all(w in VIEW_WORDS for w in words) and any(w in _VIEW_NAMES for w in words)
    )


# Candidate headers the known-name patterns miss: a line-leading single word in any case,
# or one after a sentence end, before a colon (classified by misspelled_section).
HEADER_WORD_LINE = re.compile(r"^[ \t]*([A-Za-z]{5,14})[ \t]*:", re.MULTILINE)
HEADER_WORD_INLINE = re.compile(r"[.!?][ \t]+([A-Za-z]{5,14})[ \t]*:")
