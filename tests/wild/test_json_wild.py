"""Strict JSON (H11): every JSON the toolkit writes parses with a strict parser."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli import jsonio
from tests.data.rawfix import build_rsna


def strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_strict_replaces_non_finite_with_null_and_reason():
    payload = {
        "map": float("nan"),
        "best": -math.inf,
        "ok": 0.5,
        "per_class": [1.0, np.float32("nan")],
        "nested": {"dice": np.float64("inf"), "n": np.int64(3)},
        "rows": [{"auroc": float("nan")}],
    }
    text = jsonio.dumps(payload, reasons={"map": "no box in the test split"})
    obj = strict_loads(text)
    assert obj["map"] is None and obj["ok"] == 0.5 and obj["per_class"] == [1.0, None]
    assert obj["null_reasons"]["map"] == "no box in the test split"
    assert obj["null_reasons"]["best"].startswith("-Infinity")
    assert obj["null_reasons"]["per_class"].startswith("NaN")
    assert obj["nested"] == {"dice": None, "n": 3, "null_reasons": {"dice": jsonio.REASON_POS_INF}}
    assert obj["rows"][0]["auroc"] is None and "auroc" in obj["rows"][0]["null_reasons"]
    # the plain library would have written non-standard JSON
    with pytest.raises(ValueError):
        strict_loads(json.dumps({"map": float("nan")}))


def test_a_known_reason_explains_the_same_key_below_it_never_the_generic_one():
    why = "the published rule scored no image (0 of 4 have a detection)"
    payload = {
        "null_reasons": {"value": why, "map": why},
        "value": float("nan"),
        "metrics": {"map": float("nan"), "dice": float("nan"), "n": 4},
        "seeds": [{"metrics": {"map": np.float32("nan")}}],
        "mean": {"map": None},  # a null computed earlier (a mean over seeds that had none)
        "other": {"null_reasons": {"map": "its own reason"}, "map": float("nan")},
    }
    obj = strict_loads(jsonio.dumps(payload))
    assert obj["null_reasons"] == {"value": why}  # no "map" key here: that entry goes
    assert obj["metrics"]["null_reasons"] == {"map": why, "dice": jsonio.REASON_NAN}
    assert obj["seeds"][0]["metrics"]["null_reasons"] == {"map": why}
    assert obj["mean"]["null_reasons"] == {"map": why}
    assert obj["other"]["null_reasons"] == {"map": "its own reason"}  # the nearest wins


def test_no_raw_json_dumps_left_in_writers():
    """Every writer of the package goes through jsonio (the only json.dumps calls left are
    internal: the job fingerprint, the resume journal, pycocotools' ground truth copy, and
    the size estimate of a safetensors header in train/sizes.py, which writes nothing)."""
    import pathlib
    import re

    import cmcgns_cli

    root = pathlib.Path(cmcgns_cli.__file__).parent
    allowed = {"jsonio.py", "writer.py", "metrics.py", "sizes.py"}
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name not in allowed and re.search(r"\bjson\.dump", p.read_text())
    ]
    assert offenders == []


@pytest.mark.slow
def test_evaluate_json_with_undefined_map_is_strict(cli, tmp_path):
    """H11: RSNA with no box anywhere -> mAP undefined: finetune says so and still
    finishes, evaluate --json and metrics.json parse strictly, with null and a reason."""
    raw = tmp_path / "raw"
    build_rsna(raw, n=24)
    df = pd.read_csv(raw / "stage_2_train_labels.csv")
    df = df.drop_duplicates("patientId").assign(Target=0, x="", y="", width="", height="")
    df.to_csv(raw / "stage_2_train_labels.csv", index=False)
    res = cli("prepare", "rsna", "--src", raw, "--out", tmp_path / "data", "--size", 32)
    assert res.exit_code == 0, res.stderr
    res = cli("finetune", "--task", "rsna-det", "--data", tmp_path / "data", "--checkpoint",
              "none", "--arch", "resnet_tiny", "--epochs", "1", "--batch-size", "8",
              "--out", tmp_path / "ft", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "validate split" in res.stderr and "no ground-truth box" in res.stderr
    # the warning counts the split detection trains on (RSNA: dense_split), as the record does
    rec = strict_loads(res.stdout)
    n_val = int((pd.read_parquet(tmp_path / "data" / "manifest.parquet")["dense_split"]
                 == "validate").sum())  # fmt: skip
    assert f"has {n_val} rows and no ground-truth box" in res.stderr and rec["n_validate"] == n_val
    assert rec["best_validate"] is None and "best_validate" in rec["null_reasons"]
    strict_loads((tmp_path / "ft" / "finetune.json").read_text())
    res = cli("evaluate", "--task", "rsna-det", "--data", tmp_path / "data", "--checkpoint",
              tmp_path / "ft", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    summary = strict_loads(res.stdout)
    metrics = strict_loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["value"] is None and "value" in metrics["null_reasons"]
    assert metrics["metrics"]["map"] is None and "map" in metrics["metrics"]["null_reasons"]
    # the specific reason, with counts: no image has a box at all here
    assert "scored no image" in metrics["metrics"]["null_reasons"]["map"]
    assert " 0 have a box" in metrics["metrics"]["null_reasons"]["map"]
    assert summary["metrics"]["null_reasons"]["map"] == metrics["metrics"]["null_reasons"]["map"]
    assert summary  # parsed strictly above
