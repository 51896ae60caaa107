"""Text inputs in any encoding: one detector for every reader, the byte-order mark removed,
no letter dropped (cp1252, UTF-16, UTF-8 with a mark; CSV, TXT, JSON Lines, COVIDx lists)."""

from __future__ import annotations

import codecs
import io

import pytest

from cmcgns_cli import textio
from cmcgns_cli.data.readers.base import read_csv_checked
from cmcgns_cli.data.reports import read_report_file
from cmcgns_cli.embedding.inputs import read_reports

CSV = "id,text\nr1,Café: opacité in the lower lobe\nr2,Épanchement pleural; no pneumothorax\n"


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        ("cp1252", "cp1252"),  # é = 0xE9, É = 0xC9: not UTF-8
        ("utf-16", "utf-16"),  # with its mark (Python writes one)
        ("utf-8-sig", "utf-8-sig"),
        ("utf-8", "utf-8"),
    ],
)
def test_decode_keeps_every_letter(codec: str, expected: str) -> None:
    got = textio.decode(CSV.encode(codec))
    assert got.text == CSV  # no replacement character, no dropped letter, no mark
    assert got.encoding == expected


def test_utf16_without_a_mark_and_a_short_cp1252_line() -> None:
    # UTF-16 LE with no mark: the NUL bytes send it to the detector's UTF-16/32 family
    assert textio.decode(CSV.encode("utf-16-le")).text == CSV
    # a few bytes with one accented letter: a bare detector guesses UTF-16 here ("1,Opacit\xe9")
    got = textio.decode("1,Opacité\n".encode("cp1252"))
    assert (got.text, got.encoding) == ("1,Opacité\n", "cp1252")


def test_csv_reader_reads_cp1252_and_a_marked_header(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(codecs.BOM_UTF8 + "path,Pneumonia\nimgs/café.png,1\n".encode())
    df = read_csv_checked(path, ["path", "Pneumonia"])  # the mark is not part of "path"
    assert list(df.columns) == ["path", "Pneumonia"] and df["path"][0] == "imgs/café.png"
    path.write_bytes("path,Pneumonia\nimgs/café.png,1\n".encode("cp1252"))
    assert read_csv_checked(path, ["path"])["path"][0] == "imgs/café.png"
    assert textio.encodings_read()[str(path)] == "cp1252"


def test_embed_reports_keep_ids_and_letters(tmp_path) -> None:
    csv_file = tmp_path / "reports.csv"
    csv_file.write_bytes(codecs.BOM_UTF8 + CSV.encode())
    # with the mark left in, the header read "\ufeffid" and every id became a row number
    assert read_reports(str(csv_file)) == [
        ("r1", "Café: opacité in the lower lobe"),
        ("r2", "Épanchement pleural; no pneumothorax"),
    ]
    txt = tmp_path / "reports.txt"
    txt.write_bytes("Opacité basale\nCafé\n".encode("utf-16"))
    assert read_reports(str(txt)) == [("0", "Opacité basale"), ("1", "Café")]
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_bytes(codecs.BOM_UTF8 + '{"id": "a", "text": "Opacité"}\n'.encode())
    assert read_reports(str(jsonl)) == [("a", "Opacité")]
    stdin = io.StringIO("\ufeffid,text\nx,Café\n")
    csv_stdin = read_reports("-", stdin)
    assert csv_stdin == [("0", "id,text"), ("1", "x,Café")]  # stdin is plain text, mark gone


def test_report_file_and_covidx_list(tmp_path) -> None:
    report = tmp_path / "s1.txt"
    report.write_bytes("FINDINGS: Opacité.\n".encode("utf-16"))
    assert read_report_file(report) == "FINDINGS: Opacité.\n"
    from cmcgns_cli.data.readers.covidx import _read_split

    lst = tmp_path / "train.txt"
    lst.write_bytes(codecs.BOM_UTF8 + b"p001 a.png COVID-19 src\np002 b.png normal src\n")
    assert [r[0] for r in _read_split(lst)] == ["p001", "p002"]  # no mark in the first id
