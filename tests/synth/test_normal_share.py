"""`synth --normal-share`: the share of normal studies, and so of same-findings report pairs.

Expectations are binomial bounds worked out by hand: with a share F of normal studies drawn
independently, the normal count k of n studies has sd sqrt(n F (1 - F)), and the share of
study pairs that are both normal is k (k - 1) / (n (n - 1)), about F^2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cmcgns_cli.errors import BadInputError
from cmcgns_cli.synth import write_world

N = 160


def studies(world: Path) -> list[dict]:
    """One truth record per MIMIC study (its first image)."""
    seen: dict[int, dict] = {}
    for line in (world / "truth" / "mimic.jsonl").read_text().splitlines():
        rec = json.loads(line)
        seen.setdefault(rec["study_id"], rec)
    return list(seen.values())


def stated(rec: dict) -> frozenset[str]:
    """The labels a report states present or uncertain ("No Finding" left out)."""
    return frozenset(k for k, v in rec["label"].items() if k != "No Finding" and v in (1, -1))


def same_pair_share(recs: list[dict]) -> float:
    """Share of unordered study pairs whose reports state the same label set."""
    n = len(recs)
    return sum(c * (c - 1) for c in Counter(stated(r) for r in recs).values()) / (n * (n - 1))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict:
    out = {}
    for share in (None, 0.0, 0.8):
        folder = tmp_path_factory.mktemp(f"w{share}")
        layouts = ["mimic", "chexpert"] if share == 0.8 else ["mimic"]
        write_world(folder, N, seed=5, layouts=layouts, image_size=64, normal_share=share)
        out[share] = folder
    return out


def test_share_of_normal_studies_follows_the_option(worlds: dict) -> None:
    for share in (0.0, 0.8):
        recs = studies(worlds[share])
        assert len(recs) == N
        k = sum(1 for r in recs if not r["findings"])
        four_sd = 4 * math.sqrt(N * share * (1 - share))
        assert abs(k - N * share) <= four_sd, (share, k)
    # CheXpert's frontal images follow it too (one draw per study).
    rows = [
        json.loads(x) for x in (worlds[0.8] / "truth" / "chexpert.jsonl").read_text().splitlines()
    ]
    front = [r for r in rows if r["view"] == "frontal"]
    k = sum(1 for r in front if not r["findings"])
    assert abs(k - 0.8 * len(front)) <= 4 * math.sqrt(len(front) * 0.16), k


def test_normal_studies_state_no_finding(worlds: dict) -> None:
    normal = [r for r in studies(worlds[0.8]) if not r["findings"]]
    assert normal
    for r in normal:
        assert stated(r) == frozenset()
        assert {s["finding"] for s in r["sentences"]} == {"normal"}


def test_same_findings_pair_share_moves_with_the_option(worlds: dict) -> None:
    default = same_pair_share(studies(worlds[None]))
    none_normal = same_pair_share(studies(worlds[0.0]))
    mostly_normal = same_pair_share(studies(worlds[0.8]))
    # F = 0.8: both-normal pairs alone give about 0.64; 4 sd of k/N (0.032) moves F^2 by
    # about 2 * 0.8 * 0.126 = 0.2; abnormal pairs add at most (1 - F)^2 = 0.04 more.
    assert 0.64 - 0.2 <= mostly_normal <= 0.64 + 0.04 + 0.2
    # The historical draws leave about 27 % of studies normal (0.07 of pairs).
    assert default < 0.2
    # F = 0: only abnormal studies, whose label sets rarely coincide.
    assert none_normal < default


def test_summary_records_the_option_only_when_given(worlds: dict) -> None:
    summary = json.loads((worlds[None] / "truth" / "summary.json").read_text())
    assert "normal_share" not in summary
    summary = json.loads((worlds[0.8] / "truth" / "summary.json").read_text())
    assert summary["normal_share"] == 0.8


def test_bad_share(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--normal-share"):
        write_world(tmp_path, 2, 0, normal_share=1.5)
    res = subprocess.run(
        [sys.executable, "-m", "cmcgns_cli", "synth", "--out", str(tmp_path / "w")]
        + ["--n", "2", "--normal-share", "-0.1"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "--normal-share must be between 0 and 1" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
