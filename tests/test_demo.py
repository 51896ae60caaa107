"""`cmcgns demo`, the README's first command: its --json format, its measures with chance
levels, per-stage seconds, and nothing left behind in the temporary folder."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest

STAGES = ["synth", "prepare", "pretrain", "linear_probe", "retrieval"]


def test_demo_json_format_and_out_folder(cli, tmp_path: Path) -> None:
    res = cli("demo", "--out", tmp_path / "demo", "--synth", "100", "--max-steps", "2", "--json")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON document, nothing else on stdout
    result = json.loads(lines[0])
    assert list(result) == ["measures", "seconds"]
    assert len(result["measures"]) == 3
    for m in result["measures"]:
        assert list(m) == ["name", "pretrained", "random_init", "chance"]
        assert 0.0 <= m["chance"] <= 1.0
    chexpert, rsna, recall = result["measures"]
    assert chexpert["name"].startswith("CheXpert-style 5-finding linear-probe macro AUROC (")
    assert rsna["name"].startswith("RSNA pneumonia linear-probe AUROC (")
    assert chexpert["chance"] == rsna["chance"] == 0.5
    assert recall["name"].startswith("image-to-report R@10 (")
    pairs = int(recall["name"].split("(")[1].split()[0])
    assert recall["chance"] == round(min(1.0, 10 / pairs), 4)
    # the random-init baseline is fed at the pretrained run's input size (64 px), not the
    # tiny preset's 128 px: the comparison is of weights, not of resolutions
    for data in ("chexpert", "rsna"):
        rec = json.loads((tmp_path / "demo" / f"probe-{data}-random_init" / "finetune.json")
                         .read_text())["encoder"]  # fmt: skip
        assert (rec["checkpoint"], rec["image_size"], rec["crop_size"]) == ("none", 64, 64)
    assert list(result["seconds"]) == STAGES
    assert all(math.isfinite(v) and v >= 0 for v in result["seconds"].values())
    # the steps' own summaries stay off both streams: no raw JSON on stderr
    assert not [x for x in res.stderr.splitlines() if x.lstrip().startswith("{")]
    assert (tmp_path / "demo" / "run" / "image_encoder.safetensors").is_file()
    again = cli("demo", "--out", tmp_path / "demo")
    assert again.exit_code == 2 and "already holds a demo run" in again.stderr


@pytest.mark.slow
def test_demo_without_out_leaves_nothing_in_tmp(cli, tmp_path: Path, monkeypatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    res = cli("demo", "--synth", "60", "--max-steps", "1")
    assert res.exit_code == 0, res.stderr
    assert "pretrained" in res.stdout and "chance" in res.stdout and "time:" in res.stdout
    assert list(tmp.iterdir()) == []


def test_demo_refuses_a_non_empty_out_and_max_steps_0_before_any_work(cli, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "finetune.json").write_text("{}")
    res = cli("demo", "--out", busy)
    assert res.exit_code == 2 and "not an empty folder" in res.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["finetune.json"]  # nothing written
    res = cli("demo", "--out", tmp_path / "new", "--max-steps", "0")
    assert res.exit_code == 2 and "--max-steps" in res.stderr
    assert not (tmp_path / "new").exists()
