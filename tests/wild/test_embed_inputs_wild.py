"""What `cmcgns embed` and `explain` take as input (issue 27 kind G): DICOM recognised by
content, every file of --images DIR named when not taken, and one --reports-format rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmcgns_cli.embedding.inputs import read_reports, scan_images
from cmcgns_cli.errors import BadInputError
from cmcgns_cli.explain import report_text
from tests.wild.builders import dicom_dataset, jpeg_bytes, picture, png_bytes, save_dicom


def _dicom(path):
    save_dicom(dicom_dataset(picture(48, 40)), path)


def _mixed(root):
    """2 suffixed images, a suffix-less DICOM and PNG, a README and an empty file."""
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg_bytes(picture()))
    _dicom(root / "b.dcm")
    _dicom(root / "sub" / "IM000001")
    (root / "sub" / "scan_png").write_bytes(png_bytes(picture()))
    (root / "README").write_text("these are chest films\n")
    (root / "empty").write_bytes(b"")
    return root


def test_scan_takes_dicom_by_content_and_names_the_rest(tmp_path):
    root = _mixed(tmp_path / "imgs")
    taken, not_taken = scan_images(str(root))
    assert sorted(taken) == sorted(
        str(root / p) for p in ("a.jpg", "b.dcm", "sub/IM000001", "sub/scan_png")
    )
    assert sorted(p for p, _ in not_taken) == [str(root / "README"), str(root / "empty")]
    assert all("image" in why for _, why in not_taken)


def test_a_folder_of_suffixless_dicoms_is_taken(tmp_path):
    for k in range(3):
        _dicom(tmp_path / f"IM{k:04d}")
    taken, not_taken = scan_images(str(tmp_path))
    assert len(taken) == 3 and not_taken == []


def test_a_folder_without_images_names_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="notes.txt"):
        scan_images(str(tmp_path))


def test_embed_names_every_file_it_does_not_take(trained, tmp_path, cli):
    _, run = trained
    root = _mixed(tmp_path / "imgs")
    out = tmp_path / "emb.jsonl"
    res = cli("embed", "--checkpoint", run, "--images", root, "--out", out)
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    ids = {r["id"] for r in rows if r["embedding"] is not None}
    assert str(root / "sub" / "IM000001") in ids and len(ids) == 4
    assert f"not taken {root / 'README'}" in res.stderr
    assert f"not taken {root / 'empty'}" in res.stderr
    assert "embedded 4 of 4" in res.stderr and "2 files" in res.stderr
    # the suffix-less DICOM embeds like the same file with a suffix
    same = {r["id"]: np.asarray(r["embedding"]) for r in rows}
    assert np.allclose(same[str(root / "sub" / "IM000001")], same[str(root / "b.dcm")], atol=1e-5)


REPORT = "Heart size is normal.\nLungs are clear.\nNo effusion.\n"


def test_report_ids_are_the_0_based_row_index_in_every_format(tmp_path):
    # one convention for TXT, JSON Lines and CSV: the first report is "0"; a blank line in
    # the line formats keeps its place (the next report is row 2), a CSV counts data rows
    (tmp_path / "r.txt").write_text("heart is big.\n\nlungs are clear.\n")
    (tmp_path / "r.jsonl").write_text('{"text": "heart is big."}\n\n{"text": "lungs are clear."}\n')
    (tmp_path / "r.csv").write_text("text\nheart is big.\nlungs are clear.\n")
    assert [i for i, _ in read_reports(str(tmp_path / "r.txt"))] == ["0", "2"]
    assert [i for i, _ in read_reports(str(tmp_path / "r.jsonl"))] == ["0", "2"]
    assert [i for i, _ in read_reports(str(tmp_path / "r.csv"))] == ["0", "1"]


def test_reports_format_lines_and_file(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text(REPORT)
    assert read_reports(str(f)) == [
        ("0", "Heart size is normal."),
        ("1", "Lungs are clear."),
        ("2", "No effusion."),
    ]
    assert read_reports(str(f), fmt="file") == [("r.txt", REPORT)]
    # explain: the whole file by default, lines on request (and then one line only)
    assert report_text(str(f)) == REPORT
    with pytest.raises(BadInputError, match="holds 3 reports"):
        report_text(str(f), "lines")
    one = tmp_path / "one.txt"
    one.write_text("\nLungs are clear.\n\n")
    assert report_text(str(one), "lines") == "Lungs are clear."
    with pytest.raises(BadInputError, match="--reports-format"):
        read_reports(str(f), fmt="paragraphs")


def test_embed_reports_format_file_is_one_report(trained, tmp_path, cli):
    _, run = trained
    f = tmp_path / "r.txt"
    f.write_text(REPORT)
    out = tmp_path / "emb.jsonl"
    res = cli(
        "embed",
        "--checkpoint",
        run,
        "--reports",
        f,
        "--reports-format",
        "file",
        "--local",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r.txt"]
    assert rows[0]["sentences"] == ["heart size is normal", "lungs are clear", "no effusion"]
