"""Nothing is downloaded: a hub id missing from the local cache fails at once, with one line,
and leaves no run directory; --preset is required (issue: never the network)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

# An unroutable address (RFC 5737 TEST-NET-1 is not routed): any HTTP attempt through these
# would hang until a connect timeout, far beyond the limit asserted below.
NO_NET = {
    "HF_HUB_OFFLINE": "0",  # the loader itself must not try the hub (local files only)
    "TRANSFORMERS_OFFLINE": "0",
    "HF_ENDPOINT": "http://192.0.2.1:9",
    "HTTPS_PROXY": "http://192.0.2.1:9",
    "HTTP_PROXY": "http://192.0.2.1:9",
    "HF_HUB_ETAG_TIMEOUT": "60",
    "HF_HUB_DOWNLOAD_TIMEOUT": "60",
    "OMP_NUM_THREADS": "1",
}


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, **NO_NET}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return res, time.perf_counter() - t0


@pytest.mark.parametrize("preset", ["paper-resnet50", "paper-vit"])
def test_hub_id_not_in_cache_fails_at_once_and_leaves_nothing(world, tmp_path, preset):
    out = tmp_path / "run"
    res, wall = _run(
        ["pretrain", "--data", str(world), "--out", str(out), "--preset", preset]
        + ["--image-weights", "none"]
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: --text-encoder emilyalsentzer/Bio_ClinicalBERT: ")
    assert "--text-encoder DIR" in lines[0] and "--preset tiny" in lines[0]
    assert not out.exists()
    # python + torch start-up is a few seconds here; one HTTP attempt would take a minute
    assert wall < 30, wall


def test_preset_is_required_unless_resuming(world, tmp_path):
    res, _ = _run(["pretrain", "--data", str(world), "--out", str(tmp_path / "r")])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --preset is required: tiny or small (offline, scratch text encoder), or "
        "paper-resnet50 / paper-vit with --text-encoder DIR (a local Bio_ClinicalBERT)"
    ]
    assert not (tmp_path / "r").exists()
