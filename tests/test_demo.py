"""`cmcgns demo`, the README's first command, runs end to end on the bundled sample."""

from __future__ import annotations

import json
import math
from pathlib import Path


def test_demo_runs_prepare_pretrain_and_probe(cli, tmp_path: Path) -> None:
    res = cli("demo", "--out", tmp_path / "demo", "--max-steps", "3", "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["stage"] == 2 and summary["steps"] > 0
    for key in ("chexpert_auroc_pretrained", "chexpert_auroc_random_init", "final_loss"):
        assert math.isfinite(summary[key]), key
    assert (tmp_path / "demo" / "run" / "image_encoder.safetensors").is_file()
    assert (tmp_path / "demo" / "probe-pretrained" / "metrics.json").is_file()
    # A second demo into the same folder is refused instead of mixing runs.
    again = cli("demo", "--out", tmp_path / "demo")
    assert again.exit_code == 2 and "already holds a demo run" in again.stderr
