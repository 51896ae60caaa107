"""Reading a user's text file (CSV, plain text, JSON Lines) whatever its encoding.

Every command reads text input through :func:`decode` / :func:`read_text`, so a file is read
the same way everywhere and no letter is dropped or replaced:

1. a byte-order mark decides (UTF-8, UTF-16 or UTF-32) and is removed, so a mark never ends
   up in a column name or an id;
2. bytes that are valid UTF-8 are UTF-8 (a strong signal: random 8-bit text is almost never
   valid UTF-8);
3. bytes with NULs and no mark are UTF-16 or UTF-32 without a mark: the ``charset-normalizer``
   detector picks among those;
4. any other bytes go to the detector; an answer in the Western European single-byte family
   (including no answer) is read as Windows-1252, the encoding of text saved by Windows in
   those languages (the detector cannot tell cp1252 from cp1250 or Latin-1 on a few accented
   words, and they agree on the common letters). Another answer (Cyrillic, Greek, East Asian
   encodings) is used only when at least 30 % of the printable bytes are above 127, as in a
   script other than Latin: on mostly-ASCII text with a few accents the detector's answer is
   noise. Latin-1, which maps every byte, is the last resort.

Decoding is strict in every step: a letter is never replaced by U+FFFD or dropped.

The encoding of each file read is remembered (:func:`encodings_read`) so a command can record
it (``prepare`` writes it into meta.json as ``text_encodings``).
"""

from __future__ import annotations

import codecs
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

from cmcgns_cli.errors import BadInputError

# (mark, Python codec): UTF-32 before UTF-16, whose little-endian mark starts UTF-32's
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# the detector's names for single-byte Western European code pages: read as Windows-1252
WESTERN = {
    "ascii", "cp1252", "windows_1252", "cp1250", "windows_1250", "latin_1", "iso8859_1",
    "iso8859_2", "iso8859_15", "iso8859_9", "cp1254", "cp1257", "iso8859_13", "mac_roman",
    "mac_latin2", "cp850", "cp437", "cp858", "iso8859_4", "iso8859_3", "iso8859_10",
    "iso8859_14", "iso8859_16", "cp1258", "hp_roman8",
}  # fmt: skip
# bytes above 127 among the printable ones from which a non-Western guess is believed
NON_LATIN_SHARE = 0.3
WIDE = ["utf_16_le", "utf_16_be", "utf_32_le", "utf_32_be"]

_seen: dict[str, str] = {}


@dataclass(frozen=True)
class Decoded:
    """A decoded file: ``text`` (str, without a byte-order mark) and the ``encoding`` it was
    read with (a Python codec name, e.g. ``utf-8``, ``utf-8-sig``, ``cp1252``, ``utf-16``)."""

    text: str
    encoding: str


def _detect(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    if b"\x00" in data:
        best = from_bytes(data, cp_isolation=WIDE).best()
    else:  # text without NULs is not UTF-16/32 (the detector may say so of a short line)
        best = from_bytes(data, cp_exclusion=[*WIDE, "utf_16", "utf_32", "utf_7"]).best()
    return None if best is None else str(best.encoding)


def decode(data: bytes) -> Decoded:
    """Decode ``data`` (bytes) by the rules in this module's docstring; never raises."""
    for mark, codec in BOMS:
        if data.startswith(mark):
            try:
                return Decoded(data.decode(codec), codec)
            except UnicodeDecodeError:
                break  # a mark followed by bytes of another encoding: detect as usual
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    guess = _detect(data)
    # a script other than Latin is mostly bytes above 127; Western European text is mostly
    # ASCII with a few accented letters, where the detector's guess is noise (it reads one
    # "é" in "Opacité" as Urdu's cp1006)
    printable = sum(1 for b in data if b > 32)
    share = sum(1 for b in data if b > 127) / max(printable, 1)
    wide = guess is not None and b"\x00" in data  # UTF-16/32: NULs decide, not the share
    western = not wide and (guess is None or guess in WESTERN or share < NON_LATIN_SHARE)
    order = ["cp1252"] if western else [guess, "cp1252"]
    for codec in order:
        try:
            return Decoded(data.decode(codec), codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return Decoded(data.decode("latin-1"), "latin-1")


def read_text(path: str | os.PathLike[str], *, name: str | None = None) -> Decoded:
    """The text of the file at ``path`` (plain or ``.gz``), decoded by :func:`decode`.

    ``name``: how error messages name the file (default: the path).

    Raises:
        BadInputError: the file cannot be read (missing, a folder, no permission, a broken
            gzip stream), naming the file.
    """
    label = name or str(path)
    try:
        data = Path(path).read_bytes()
        if str(path).lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise BadInputError(f"{label}: cannot read ({exc})") from None
    decoded = decode(data)
    _seen[str(path)] = decoded.encoding
    return decoded


def encodings_read() -> dict[str, str]:
    """``{path: encoding}`` of every file :func:`read_text` read in this process."""
    return dict(_seen)
