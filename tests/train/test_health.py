"""Run health (no silent collapse): the verdict from the recorded gauges, the stage-end line,
the summary record, the model card line and ``--strict-health``'s exit 3."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cmcgns_cli.train.health import card_line, describe, judge_run, judge_stage
from tests.train.conftest import TINY, cli
from tests.train.worlds import make_world


def _rec(epoch, glob, img=0.3, txt=0.3, clusters=None, stage=1):
    return {
        "kind": "train", "stage": stage, "epoch": epoch, "global": glob,
        "image_global_cos": img, "text_global_cos": txt, "clusters_nonempty": clusters,
    }  # fmt: skip


def test_plateau_is_log_batch_less_two_percent_and_everything_above() -> None:
    # log(32) = 3.4657; 2 % of it is 0.0693: 3.40 and up is on the plateau, 3.39 is below
    assert judge_stage([_rec(1, 3.40)], 32)["collapsed"] == ["global_plateau"]
    assert judge_stage([_rec(1, 3.53)], 32)["collapsed"] == ["global_plateau"]
    assert judge_stage([_rec(1, 3.39)], 32)["status"] == "ok"
    # above log(batch) is no better than chance either: a fresh tiny run that ended at 3.72
    # (held-out top-1 at chance), and every-report-identical runs at 4.0-4.2
    assert judge_stage([_rec(1, 3.54)], 32)["collapsed"] == ["global_plateau"]
    assert judge_stage([_rec(1, 3.72)], 32)["collapsed"] == ["global_plateau"]
    assert judge_stage([_rec(1, 4.18)], 32)["collapsed"] == ["global_plateau"]
    line = describe(judge_stage([_rec(1, 3.72)], 32), 2)
    assert "global loss 3.720 is above the InfoNCE plateau log(batch) = 3.466" in line
    assert "sits on the InfoNCE plateau" in describe(judge_stage([_rec(1, 3.44)], 32), 1)
    # log(16) = 2.7726: the same loss is healthy at batch 32 and on the plateau at 16
    assert judge_stage([_rec(1, 2.75)], 16)["collapsed"] == ["global_plateau"]
    assert judge_stage([_rec(1, 2.75)], 32)["status"] == "ok"


def test_vectors_and_clusters_and_only_the_last_epoch() -> None:
    v = judge_stage([_rec(1, 1.0, img=0.981, txt=0.99), _rec(1, 1.0, img=0.983, txt=0.99)], 32)
    assert v["collapsed"] == ["report_vectors", "image_vectors"]
    assert v["image_global_cos"] == pytest.approx(0.982)
    assert judge_stage([_rec(1, 1.0, img=0.979, txt=0.979)], 32)["status"] == "ok"
    one = judge_stage([_rec(1, 1.0, clusters=1), _rec(1, 1.0, clusters=1), _rec(1, 1.0)], 32)
    assert one["collapsed"] == ["clusters"] and one["clusters_nonempty"] == 1.0
    assert judge_stage([_rec(1, 1.0, clusters=2), _rec(1, 1.0, clusters=1)], 32)["status"] == "ok"
    # a collapsed first epoch does not count once the last epoch is healthy
    recs = [_rec(1, math.log(32), txt=1.0), _rec(2, 2.0)]
    assert judge_stage(recs, 32)["status"] == "ok"
    assert judge_stage(recs[:1], 32)["status"] == "collapsed"


def test_run_verdict_is_the_last_stage() -> None:
    recs = [_rec(1, math.log(8), stage=1), _rec(2, 1.0, stage=2)]
    v = judge_run(recs, 8)
    assert v["status"] == "ok" and v["stage"] == 2
    assert v["stages"]["1"]["collapsed"] == ["global_plateau"]
    v = judge_run(recs[:1], 8)
    assert v["status"] == "collapsed" and "--lr" in v["advice"]
    assert "collapsed (global_plateau)" in card_line(v)
    assert judge_run([], 8)["status"] == "unknown"


def test_advice_never_suggests_what_the_run_already_used(tmp_path) -> None:
    from types import SimpleNamespace

    from cmcgns_cli.train.health import ADVICE, ALREADY_WARM, advice, run_warm_starts

    scratch = SimpleNamespace(text_encoder="scratch", image_weights=None)
    warm_text = SimpleNamespace(text_encoder="runs/bert", image_weights=None)
    signs = ["report_vectors", "image_vectors", "clusters"]
    # from scratch: every cure is suggested
    cold = advice(signs, run_warm_starts(tmp_path, scratch, "authors"))
    assert "--text-encoder DIR" in cold and "--image-weights FILE" in cold
    assert "--variant clean" in cold
    # a warm text encoder and --variant clean: neither is suggested again, each is named
    used = run_warm_starts(tmp_path, warm_text, "clean")
    said = advice(["global_plateau", *signs], used)
    assert "--text-encoder DIR" not in said and "--variant clean (its" not in said
    assert said.startswith(
        f"{ALREADY_WARM} (the text encoder already started from "
        "--text-encoder runs/bert; the run already used --variant clean)"
    )
    assert ADVICE["image_vectors"] in said  # the image encoder was cold: still suggested
    assert ADVICE["global_plateau"] not in said.split("; ")  # covered by the first clause
    # --init-from, read from the run's config.json (image and text parts)
    (tmp_path / "config.json").write_text(json.dumps({
        "model": {"text_encoder": "scratch", "image_weights": None}, "loss": {"variant": "authors"},
        "init_from": {"parts": ["image", "text"]},
    }))  # fmt: skip
    said = advice(signs, run_warm_starts(tmp_path))
    assert (
        "--image-weights FILE or --init-from RUN" not in said and "--text-encoder DIR" not in said
    )
    assert "the image encoder already started from --init-from (its image encoder)" in said


def _constant_world(root):
    """A world whose every report is the same text: nothing to tell the pairs apart by."""
    import pandas as pd

    from cmcgns_cli.data.prepared import open_prepared, write_prepared

    src = open_prepared(make_world(root / "src", n=48, size=64, seed=3))
    manifest = src.manifest.copy()
    manifest["sentences"] = [["the lungs are clear.", "no effusion."]] * len(manifest)
    write_prepared(root / "const", dataset="mimic", manifest=pd.DataFrame(manifest),
                   images=np.asarray(src.images))  # fmt: skip
    return root / "const"


def test_forced_collapse_fires_and_strict_health_exits_3(tmp_path, monkeypatch, capsys) -> None:
    data = _constant_world(tmp_path)
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(run), *TINY, "--stage1-epochs", "1",
            "--stage2-epochs", "0", "--strict-health", "--json"]  # fmt: skip
    code = cli(args, monkeypatch)
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "stage 1 health: COLLAPSED" in err and "report vectors' mean cosine" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["health"]["status"] == "collapsed"
    assert "report_vectors" in summary["health"]["collapsed"]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "summary" and last["health"] == summary["health"]


def test_plateau_is_log_of_the_pairs_a_small_train_split_has(tmp_path, monkeypatch, capsys):
    # fewer train pairs than one batch (16) make one batch of all of them: the uniform loss
    # is log(pairs), not log(16); the check used log(16) (e.g. log 32 for 29 pairs)
    data = make_world(tmp_path / "small", n=20, size=64, seed=2)
    args = ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
            "--stage1-epochs", "1", "--stage2-epochs", "0", "--json"]  # fmt: skip
    assert cli(args, monkeypatch) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    pairs = summary["train_pairs"]
    assert 2 <= pairs < 16, pairs
    assert summary["health"]["stages"]["1"]["plateau"] == pytest.approx(math.log(pairs))
    # the start line names the batch it really trains on (it said "16 x 1 pairs")
    assert f"1 step per epoch of {pairs} pairs (the whole train split; --batch-size 16)" in err
