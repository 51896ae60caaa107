"""The ablation study's bookkeeping (bench/ablation_grid.py, used by bench/ablation_study.py):
finished cells are skipped on a rerun, shards never share a cell, and the table's mean / sd
over seeds."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("ablation_grid", ROOT / "bench/ablation_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(study, init, arm, seed, **measures):
    return {"key": study.cell_key(init, arm, seed), "init": init, "arm": arm, "seed": seed,
            "measures": measures}  # fmt: skip


def test_rerun_skips_finished_cells_and_a_torn_line(study, tmp_path):
    path = tmp_path / "cells.jsonl"
    study.append_row(path, _row(study, "scratch", "default", 0, probe_1=0.6))
    study.append_row(path, _row(study, "scratch", "global", 0, probe_1=0.7))
    with path.open("a") as fh:  # a process killed mid-write leaves half a line
        fh.write('{"key": "scratch/clean/seed0", "measu')
    done = study.read_done(path)
    assert sorted(done) == ["scratch/default/seed0", "scratch/global/seed0"]
    cells = [("scratch", arm, 0) for arm in ("default", "clean", "global")]
    assert study.pending(cells, done, (0, 1)) == [("scratch", "clean", 0)]


def test_shards_split_the_whole_list_and_never_share_a_cell(study):
    cells = [("scratch", a, s) for s in (0, 1) for a in ("default", "clean", "global")]
    # shard 0 of 2 owns cells 0, 2, 4; finishing cell 0 must not hand it shard 1's cell 1
    done = {study.cell_key("scratch", "default", 0): {}}
    assert study.pending(cells, done, (0, 2)) == [("scratch", "global", 0), ("scratch", "clean", 1)]
    assert study.pending(cells, done, (1, 2)) == [
        ("scratch", "clean", 0),
        ("scratch", "default", 1),
        ("scratch", "global", 1),
    ]


def test_mean_and_sample_sd_over_seeds(study):
    rows = [
        _row(study, "scratch", "default", 0, probe_1=0.5, det_10=None),
        _row(study, "scratch", "default", 1, probe_1=0.7, det_10=0.2),
        _row(study, "scratch", "default", 2, probe_1=0.9, det_10=float("nan")),
        _row(study, "warm", "default", 0, probe_1=0.8),
    ]
    agg = study.aggregate(rows)
    m, sd, n = agg[("scratch", "default")]["probe_1"]
    # by hand: mean 0.7; deviations -0.2, 0, 0.2 -> sum of squares 0.08 over n - 1 = 2 -> 0.2
    assert (m, n) == (pytest.approx(0.7), 3) and sd == pytest.approx(0.2)
    assert agg[("scratch", "default")]["det_10"] == (pytest.approx(0.2), None, 1)  # None, NaN out
    assert agg[("warm", "default")]["probe_1"] == (pytest.approx(0.8), None, 1)
    assert agg[("warm", "default")]["seg_10"] == (None, None, 0)
    table = study.table(rows)
    assert "| scratch | default | 3 | 0.700 ± 0.200 |" in table
    assert "| warm | default | 1 | 0.800 |" in table


def test_rows_are_one_json_object_a_line(study, tmp_path):
    path = tmp_path / "c.jsonl"
    study.append_row(path, _row(study, "warm", "clean", 2, nmi=math.pi))
    study.append_row(path, _row(study, "warm", "clean", 3, nmi=1.0))
    lines = path.read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines] == [2, 3]


def test_priority_puts_the_headline_cells_first(study):
    cells = study.priority(["scratch", "warm"], list(study.ARMS), [0, 1])
    assert len(cells) == 2 * 2 * len(study.ARMS)
    # seed 0: all scratch arms, then the warm default and global-only, before any seed 1 cell
    assert cells[:7] == [("scratch", a, 0) for a in study.ARMS] + [
        ("warm", "default", 0),
        ("warm", "global", 0),
    ]
    assert cells[7] == ("scratch", "default", 1)
    assert cells[-1] == ("warm", "global_local_cluster", 1)


def test_a_claim_of_a_live_process_is_respected_a_dead_ones_taken_over(study, tmp_path):
    import os

    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "scratch__default__seed0").write_text(str(os.getppid()))  # alive: pytest's parent
    assert not study.claim(tmp_path, "scratch/default/seed0")
    (claims / "scratch__clean__seed0").write_text("999999999")  # no such process
    assert study.claim(tmp_path, "scratch/clean/seed0")
    assert (claims / "scratch__clean__seed0").read_text() == str(os.getpid())
    assert study.claim(tmp_path, "scratch/clean/seed0")  # our own claim
    study.unclaim(tmp_path, "scratch/clean/seed0")
    assert not (claims / "scratch__clean__seed0").exists()


def test_the_study_finds_its_grid_run_or_loaded_from_its_file(tmp_path):
    """``python bench/ablation_study.py`` from any working folder, and the study loaded from
    its file (as a test or another script does, bench/ not on the path), both import the
    grid beside it."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, str(ROOT / "bench/ablation_study.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "--arms" in res.stdout and "--references" in res.stdout
    spec = importlib.util.spec_from_file_location(
        "ablation_study", ROOT / "bench/ablation_study.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.cell_key("warm", "global", 2) == "warm/global/seed2"
    assert mod.priority(["scratch"], ["default"], [0]) == [("scratch", "default", 0)]
