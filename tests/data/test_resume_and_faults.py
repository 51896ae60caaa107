"""Interrupted runs resume to identical outputs; bad inputs are skipped, never fatal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data import writer
from cmcgns_cli.data.prepare import run_prepare
from cmcgns_cli.data.prepared import open_prepared
from cmcgns_cli.errors import RunFailedError
from tests.data import rawfix

OPTS = {"protocol": "mgca", "min_words": 3, "polygon_box": "pole"}


def _assert_same(a: Path, b: Path) -> None:
    pa, pb = open_prepared(a), open_prepared(b)
    pd.testing.assert_frame_equal(pa.manifest, pb.manifest)
    np.testing.assert_array_equal(np.asarray(pa.images), np.asarray(pb.images))
    if pa.masks is not None or pb.masks is not None:
        np.testing.assert_array_equal(np.asarray(pa.masks), np.asarray(pb.masks))
    assert (a / "skipped.csv").read_text() == (b / "skipped.csv").read_text()
    ma, mb = json.loads((a / "meta.json").read_text()), json.loads((b / "meta.json").read_text())
    assert ma == mb
    assert not (a / writer.WORK).exists() and not (b / writer.WORK).exists()


@pytest.fixture(scope="module")
def siim_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("siim-resume")
    rawfix.build_siim(src, n=24, side=64)
    (
        src
        / "dicom-images-train"
        / "1.2.study.5"
        / "1.2.series.5"
        / "1.2.276.0.7230010.3.1.4.5.dcm"
    ).write_bytes(b"")  # one bad input among them
    return src


@pytest.fixture(scope="module")
def reference(siim_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run_prepare("siim", src=siim_src, out=out, size=32, workers=0, options=OPTS, as_json=True)
    return out


def test_worker_pool_killed_midway_then_resumed(siim_src, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = writer.process_one

    def dying(task):
        if task[0] == 13:  # a worker process dies hard on row 13
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task)

    monkeypatch.setattr(writer, "process_one", dying)
    with pytest.raises(RunFailedError, match="resume"):
        run_prepare(
            "siim", src=siim_src, out=out, size=32, workers=2, options=OPTS, as_json=True, chunk=2
        )
    done = writer.read_journal(out / writer.WORK / writer.JOURNAL)
    assert 0 < len(done) < 24 and 13 not in done
    assert not (out / "meta.json").exists()
    monkeypatch.setattr(writer, "process_one", real)
    summary = run_prepare(
        "siim", src=siim_src, out=out, size=32, workers=2, options=OPTS, as_json=True, chunk=2
    )
    assert summary["resumed"] == len(done)
    _assert_same(out, reference)
    # a third run finds the finished dataset and does nothing
    again = run_prepare(
        "siim", src=siim_src, out=out, size=32, workers=0, options=OPTS, as_json=True
    )
    assert again.get("already_prepared") is True
    _assert_same(out, reference)


def test_whole_command_killed_then_resumed(siim_src, reference, tmp_path):
    """SIGKILL the `cmcgns prepare` process group once some rows are journaled."""
    out = tmp_path / "out"
    journal = out / writer.WORK / writer.JOURNAL
    code = (
        "import sys, time\n"
        "from cmcgns_cli.data import writer\n"
        "real = writer.process_one\n"
        "def slow(t):\n"
        "    time.sleep(0.15)\n"
        "    return real(t)\n"
        "writer.process_one = slow\n"
        "from cmcgns_cli.data.prepare import run_prepare\n"
        f"run_prepare('siim', src={str(siim_src)!r}, out={str(out)!r}, size=32, workers=1,"
        f" options={OPTS!r}, as_json=True, chunk=1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if journal.is_file() and len(writer.read_journal(journal)) >= 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    n = len(writer.read_journal(journal))
    assert 3 <= n < 24
    summary = run_prepare(
        "siim", src=siim_src, out=out, size=32, workers=0, options=OPTS, as_json=True
    )
    assert summary["resumed"] >= 3
    _assert_same(out, reference)


def test_bad_input_corpus_is_skipped_with_reasons(tmp_path):
    src = tmp_path / "raw"
    img = src / "img"
    rawfix.write_jpeg(img / "good.jpg", rawfix.gray(60, 50))
    rawfix.write_png(img / "good.png", rawfix.gray(40, 40))
    rawfix.write_dicom(img / "good.dcm", rawfix.gray(40, 40))
    rawfix.write_dicom(img / "rle.dcm", rawfix.gray(40, 40), rle=True)
    (img / "empty.jpg").write_bytes(b"")
    (img / "junk.png").write_bytes(b"not a png" * 50)
    rawfix.write_jpeg(img / "trunc.jpg", rawfix.gray(200, 200))
    (img / "trunc.jpg").write_bytes((img / "trunc.jpg").read_bytes()[:500])
    rawfix.write_dicom(img / "nopix.dcm", None)
    rawfix.write_dicom(img / "short.dcm", rawfix.gray(100, 100))
    (img / "short.dcm").write_bytes((img / "short.dcm").read_bytes()[:-3000])
    (img / "adir.jpg").mkdir()
    rows = [
        "good.jpg",
        "good.png",
        "good.dcm",
        "rle.dcm",
        "empty.jpg",
        "junk.png",
        "trunc.jpg",
        "nopix.dcm",
        "short.dcm",
        "gone.jpg",
        "adir.jpg",
        "",
    ]
    pd.DataFrame(
        {
            "path": [f"img/{r}" if r else "" for r in rows],
            "text": ["Lungs are clear today."] * 10 + ["", "Heart normal size."],
        }
    ).to_csv(src / "list.csv", index=False)
    s = run_prepare(
        "folder",
        src=src,
        out=tmp_path / "out",
        size=32,
        workers=2,
        options={"report_col": "text", "image_col": "path"},
        as_json=True,
    )
    assert s["count"] == 4
    sk = pd.read_csv(tmp_path / "out" / "skipped.csv", dtype=str, keep_default_na=False)
    got = dict(zip(sk["id"], sk["reason"], strict=True))
    assert got == {
        "img/empty.jpg": "empty_file",
        "img/junk.png": "unreadable_image",
        "img/trunc.jpg": "truncated_image",
        "img/nopix.dcm": "no_pixel_data",
        "img/short.dcm": "truncated_image",
        "img/gone.jpg": "missing_file",
        "img/adir.jpg": "report_missing",
        "row12": "missing_value:path",
    }
    assert s["skipped"] == 8 and sum(s["skipped_by_reason"].values()) == 8
    for reason in got.values():
        assert reason.split(":")[0] in {r.split(":")[0] for r in writer.SKIP_REASONS}


def test_missing_required_column_exits_2(tmp_path, cli):
    src = tmp_path / "rsna"
    src.mkdir()
    pd.DataFrame({"patientId": ["a"], "x": [""], "y": [""], "width": [""], "height": [""]}).to_csv(
        src / "stage_2_train_labels.csv", index=False
    )
    r = cli("prepare", "rsna", "--src", src, "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "stage_2_train_labels.csv" in r.stderr and "Target" in r.stderr
    r = cli("prepare", "siim", "--src", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.exit_code == 2


def test_cli_json_summary(tmp_path, cli):
    src = tmp_path / "covidx"
    src.mkdir()
    rawfix.build_covidx(src, n_train=10, n_test=3)
    r = cli("prepare", "covidx", "--src", src, "--out", tmp_path / "out", "--size", "32", "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["count"] == 13 and s["splits"]["test"] == 3
    r = cli("prepare", "covidx", "--src", src, "--out", tmp_path / "out2", "--size", "32")
    assert r.exit_code == 0 and "prepared covidx" in r.stdout
