"""Acceptance: the real-world input cases, through the ``cmcgns`` command line.

The cases come from a generator script kept beside the repository (``CASES`` below; the
environment variable ``CMCGNS_CASES`` may name another copy of ``make_cases.py``). Without
it every test here is skipped with a reason that names the missing path, shown in the
summary of every run (``-ra``); with ``CMCGNS_REQUIRE_CASES=1`` (set by CI) a missing
generator is an error instead. The default run drives the entry point in-process (the
``cli`` fixture); the one marked slow runs the installed ``cmcgns`` in its own process, as
a user does. The project's own tests (the other files of this folder) build
every condition themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = Path(os.environ.get("CMCGNS_CASES") or REPO.parent / "shared" / "cases" / "make_cases.py")
REQUIRED = os.environ.get("CMCGNS_REQUIRE_CASES") == "1"
MISSING = (
    f"real-world input cases not run: their generator {CASES} is not present "
    "(set CMCGNS_CASES to its make_cases.py)"
)
SIZE = 64


def installed_cmcgns(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """Run the installed ``cmcgns`` (else ``python -m cmcgns_cli``) in a subprocess."""
    exe = shutil.which("cmcgns") or sys.executable
    head = [exe] if exe != sys.executable else [exe, "-m", "cmcgns_cli"]
    cmd = [*head, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check_rc is not None:
        assert res.returncode == check_rc, res.stderr[-2000:]
    return res


@pytest.fixture
def cmcgns(cli):
    """``cmcgns ARGS...`` in-process, answering like ``installed_cmcgns``."""

    def run(*args, check_rc: int | None = 0) -> SimpleNamespace:
        res = cli(*args)
        if check_rc is not None:
            assert res.exit_code == check_rc, res.stderr[-2000:]
        return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)

    return run


def canon(s: str) -> str:
    return re.sub(r"[^\w]+|_+", " ", s.lower()).strip()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    if not CASES.is_file():
        if REQUIRED:
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("cases")
    subprocess.run([sys.executable, str(CASES), str(root)], check=True, capture_output=True)
    spec = json.loads((root / "cases.json").read_text())
    return root, {c["id"]: c for c in spec["cases"]}


def _prepare_pictures(cmcgns, root: Path, files: list[str], out: Path) -> dict[str, np.ndarray]:
    listing = root / f"{out.name}.csv"
    names = ["reference/picture.png", *files]
    pd.DataFrame({"path": names}).to_csv(listing, index=False)
    cmcgns("prepare", "folder", "--src", root, "--csv", listing, "--out", out, "--size", SIZE)
    man = pd.read_parquet(out / "manifest.parquet")
    imgs = np.load(out / "images.npy")
    got = {r: imgs[i] for i, r in enumerate(man["id"])}
    assert set(got) == set(names), pd.read_csv(out / "skipped.csv").to_string()
    return got


def test_pictures_H7_H8_H9_H13(cmcgns, cases, tmp_path):
    root, spec = cases
    files = [f for cid in ("H7", "H8", "H9", "H13") for f in spec[cid]["files"]]
    files = sorted({f for f in files if not f.startswith("reference/")})
    got = _prepare_pictures(cmcgns, root, files, tmp_path / "pics")
    ref = got["reference/picture.png"].astype(np.float64)
    for f in files:
        cid = f.split("/")[0]
        limit = spec[cid]["expected"]["mean_abs_diff_max"]
        assert np.abs(got[f].astype(np.float64) - ref).mean() <= limit, f


def test_H1_backslash_paths(cmcgns, cases, tmp_path):
    root, spec = cases
    exp = spec["H1"]["expected"]
    r = cmcgns("prepare", "chexpert", "--src", root / "H1/chexpert", "--out", tmp_path / "c",
               "--size", SIZE, "--json")  # fmt: skip
    assert json.loads(r.stdout)["count"] == exp["chexpert_taken"]
    r = cmcgns("prepare", "folder", "--src", root / "H1/folder", "--csv",
               root / "H1/folder/list.csv", "--image-col", "path", "--label-cols", "effusion",
               "--out", tmp_path / "f", "--size", SIZE, "--json")  # fmt: skip
    assert json.loads(r.stdout)["count"] == exp["folder_taken"]


def test_H2_prepare_keeping_nothing_fails(cmcgns, cases, tmp_path):
    root, _ = cases
    listing = tmp_path / "gone.csv"
    pd.DataFrame({"path": ["nowhere/a.png", "nowhere/b.png"]}).to_csv(listing, index=False)
    r = cmcgns("prepare", "folder", "--src", root, "--csv", listing, "--out", tmp_path / "o",
               "--size", SIZE, check_rc=None)  # fmt: skip
    assert r.returncode != 0 and "missing_file" in r.stderr
    assert not (tmp_path / "o" / "meta.json").exists()


def test_H3_siim_absolute_and_relative(cmcgns, cases, tmp_path):
    root, spec = cases
    exp = spec["H3"]["expected"]
    for form in ("siim_absolute", "siim_relative"):
        out = tmp_path / form
        r = cmcgns("prepare", "siim", "--src", root / "H3" / form, "--out", out, "--size",
                   SIZE, "--protocol", "grouped", "--json")  # fmt: skip
        s = json.loads(r.stdout)
        assert s["skipped"] == 0
        man = pd.read_parquet(out / "manifest.parquet")
        masks = np.load(out / "masks.npy")
        labels = np.array([v[0] for v in man["labels"]])
        assert (labels == 1).sum() == exp["positives"] and (labels == 0).sum() == exp["negatives"]
        from cmcgns_cli.data.imageio import letterbox_transform, map_mask

        for i, image_id in enumerate(man["id"]):
            if labels[i] != 1:
                continue
            want = cv2.imread(str(root / f"H3/expected_masks/{image_id}.png"), 0) > 0
            m = map_mask(want, letterbox_transform(*want.shape, SIZE), SIZE).astype(bool)
            got = masks[i].astype(bool)
            d = 2 * (m & got).sum() / (m.sum() + got.sum())
            assert d >= exp["mask_dice_min"], (form, image_id, d)


def test_H10_covidx(cmcgns, cases, tmp_path):
    root, spec = cases
    exp = spec["H10"]["expected"]
    r = cmcgns("prepare", "covidx", "--src", root / "H10/covidx", "--out", tmp_path / "cv",
               "--size", SIZE, "--json")  # fmt: skip
    assert json.loads(r.stdout)["count"] == exp["taken"]
    man = pd.read_parquet(tmp_path / "cv" / "manifest.parquet").set_index("id")
    names = json.loads((tmp_path / "cv" / "meta.json").read_text())["label_names"]
    assert names[man.loc[exp["file"], "class_index"]] == exp["class"]


def test_reports_H4_H5_H6_prepare_folder_and_parser(cmcgns, cases, tmp_path):
    from cmcgns_cli.data.reports import read_report_file, report_sentences

    root, spec = cases
    want = {
        "H4a": spec["H4"]["expected"]["H4a"]["sentences"],
        "H4b": spec["H4"]["expected"]["H4b"]["sentences"],
        "H5": spec["H5"]["expected"]["sentences"],
        "H6": spec["H6"]["expected"]["sentences"],
    }
    for name, sentences in want.items():  # the MIMIC reader's file path
        got, _ = report_sentences(read_report_file(root / f"reports/{name}.txt"))
        assert [canon(s) for s in got] == sentences, name
    table = pd.read_csv(root / "reports/reports.csv", dtype=str, keep_default_na=False)
    src = tmp_path / "f"
    src.mkdir()
    img = cv2.imread(str(root / "reference/picture.png"), 0)
    for rid in table["id"]:
        cv2.imwrite(str(src / f"{rid}.png"), img)
    table.assign(path=[f"{r}.png" for r in table["id"]]).to_csv(src / "list.csv", index=False)
    cmcgns("prepare", "folder", "--src", src, "--csv", src / "list.csv", "--report-col", "text",
           "--out", tmp_path / "pf", "--size", 32)  # fmt: skip
    man = pd.read_parquet(tmp_path / "pf" / "manifest.parquet")
    for r in man.itertuples():
        assert [canon(s) for s in r.sentences] == want[r.id[:-4]], r.id


def test_embed_H12_and_report_sentences(cmcgns, cases, trained, tmp_path):
    root, spec = cases
    _, run = trained
    out = tmp_path / "h12.jsonl"
    cmcgns("embed", "--checkpoint", run, "--reports", root / "H12/reports.csv", "--out", out)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    exp = spec["H12"]["expected"]
    assert [k for k, r in rows.items() if r["embedding"] is not None] == exp["embedded"]
    for k in exp["error_rows"]:
        assert rows[k]["embedding"] is None and rows[k]["error"]
    out = tmp_path / "rep.jsonl"
    cmcgns("embed", "--checkpoint", run, "--reports", root / "reports/reports.csv", "--local",
           "--out", out)  # fmt: skip
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [canon(s) for s in rows["H5"]["sentences"]] == spec["H5"]["expected"]["sentences"]
    assert [canon(s) for s in rows["H6"]["sentences"]] == spec["H6"]["expected"]["sentences"]
    h4 = spec["H4"]["expected"]
    for k in ("H4a", "H4b"):
        assert [canon(s) for s in rows[k]["sentences"]] == h4[k]["sentences"]


@pytest.mark.slow
def test_installed_entry_point_takes_the_H2_case(cases, tmp_path):
    """The same refusal as test_H2, through the installed ``cmcgns`` in its own process."""
    root, _ = cases
    listing = tmp_path / "gone.csv"
    pd.DataFrame({"path": ["nowhere/a.png"]}).to_csv(listing, index=False)
    r = installed_cmcgns("prepare", "folder", "--src", root, "--csv", listing, "--out",
                         tmp_path / "o", "--size", SIZE, check_rc=None)  # fmt: skip
    assert r.returncode != 0 and "missing_file" in r.stderr
