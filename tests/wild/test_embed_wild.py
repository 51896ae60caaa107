"""`cmcgns embed` on inputs from the wild: missing report cells (H12), the same sentences
as prepare (H4-H6), and a run that embedded nothing exits 1 (item B)."""

from __future__ import annotations

import json

import pandas as pd

from tests.wild.builders import jpeg_bytes, picture, with_orientation
from tests.wild.test_reports_wild import CASES, canon


def test_missing_report_cells_are_error_rows(trained, tmp_path, cli):
    """H12: 'nan', 'None', empty -> error rows without an embedding; the real one embedded."""
    _, run = trained
    csv = tmp_path / "reports.csv"
    csv.write_text(
        'id,text\nreal,"Mild cardiomegaly. No pleural effusion."\n'
        "cell_nan,nan\ncell_none,None\ncell_empty,\ncell_null,NULL\n"
    )
    out = tmp_path / "emb.jsonl"
    res = cli("embed", "--checkpoint", run, "--reports", csv, "--out", out)
    assert res.exit_code == 0, res.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [k for k, r in rows.items() if r["embedding"] is not None] == ["real"]
    for k in ("cell_nan", "cell_none", "cell_empty", "cell_null"):
        assert rows[k]["embedding"] is None and "report_missing" in rows[k]["error"]


def test_embed_reports_same_sentences_as_prepare(trained, tmp_path, cli):
    _, run = trained
    names = sorted(CASES)
    csv = tmp_path / "reports.csv"
    pd.DataFrame({"id": names, "text": [CASES[n][0] for n in names]}).to_csv(csv, index=False)
    out = tmp_path / "emb.jsonl"
    res = cli("embed", "--checkpoint", run, "--reports", csv, "--local", "--out", out)
    assert res.exit_code == 0, res.stderr
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for n in names:
        assert [canon(s) for s in rows[n]["sentences"]] == CASES[n][1], n


def test_embed_with_every_input_failing_exits_1(trained, tmp_path, cli):
    _, run = trained
    csv = tmp_path / "reports.csv"
    csv.write_text("id,text\na,nan\nb,\n")
    out = tmp_path / "emb.jsonl"
    res = cli("embed", "--checkpoint", run, "--reports", csv, "--out", out)
    assert res.exit_code == 1 and "all 2 inputs failed" in res.stderr
    assert not out.exists()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    res = cli("embed", "--checkpoint", run, "--images", bad, "--format", "jsonl")
    assert res.exit_code == 1


def test_embed_images_honour_exif_orientation(trained, tmp_path, cli):
    """embed --images uses prepare's decoder: an Orientation 6 JPEG embeds like the upright
    picture, not like the same pixels read sideways."""
    import numpy as np

    _, run = trained
    g = picture(64, 64)
    (tmp_path / "upright.jpg").write_bytes(jpeg_bytes(g))
    (tmp_path / "tagged.jpg").write_bytes(with_orientation(jpeg_bytes(np.rot90(g, 1).copy()), 6))
    (tmp_path / "sideways.jpg").write_bytes(jpeg_bytes(np.rot90(g, 1).copy()))
    out = tmp_path / "emb.jsonl"
    res = cli("embed", "--checkpoint", run, "--images", tmp_path / "*.jpg", "--out", out)
    assert res.exit_code == 0, res.stderr
    vec = {r["id"].rsplit("/", 1)[1]: np.array(r["embedding"]) for r in
           map(json.loads, out.read_text().splitlines())}  # fmt: skip
    d_tagged = np.linalg.norm(vec["tagged.jpg"] - vec["upright.jpg"])
    d_sideways = np.linalg.norm(vec["sideways.jpg"] - vec["upright.jpg"])
    assert d_tagged < 0.25 * d_sideways
