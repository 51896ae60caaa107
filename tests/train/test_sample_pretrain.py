"""Acceptance: `cmcgns pretrain --preset tiny` on the prepared bundled sample MIMIC (CPU)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tests.train.conftest import cli

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "mimic-cxr-jpg"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="sample_data/mimic-cxr-jpg not in this checkout")
def test_tiny_pretrain_on_sample_mimic(tmp_path, monkeypatch, capsys):
    assert (
        cli(
            ["prepare", "mimic", "--src", str(SAMPLE), "--out", str(tmp_path / "p"), "--json"],
            monkeypatch,
        )
        == 0
    )
    capsys.readouterr()
    t0 = time.perf_counter()
    args = ["pretrain", "--data", str(tmp_path / "p"), "--out", str(tmp_path / "r")]
    assert cli([*args, "--preset", "tiny", "--json"], monkeypatch) == 0
    wall = time.perf_counter() - t0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert wall < 300
    assert summary["kmeans_initialized"] is True and summary["stage"] == 2
    assert summary["stage1_loss_end"] < summary["stage1_loss_start"]
    assert summary["stage2_loss_end"] < summary["stage2_loss_start"]
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r["kind"] == "train"]
    assert {r["stage"] for r in train} == {1, 2}
    terms = ("loss", "global", "local_image", "local_text", "cluster_fn", "recon")
    assert all(math.isfinite(r[k]) for r in train for k in terms)
    assert any(r["kmeans_ready"] == 1 for r in train)
