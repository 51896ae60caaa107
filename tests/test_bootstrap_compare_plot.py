"""Bootstrap intervals, `cmcgns compare`, `cmcgns plot` and TensorBoard logging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmcgns_cli import bootstrap


def test_stratified_resamples_keep_each_stratum_size():
    strata = np.array([0] * 7 + [1] * 3 + [2] * 5)
    idx = bootstrap.resample_indices(len(strata), strata, n_boot=200, seed=1)
    assert idx.shape == (200, 15)
    for s, size in ((0, 7), (1, 3), (2, 5)):
        assert ((strata[idx] == s).sum(axis=1) == size).all()


def test_mean_interval_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, size=400)
    idx = bootstrap.resample_indices(len(x), None, n_boot=2000, seed=0)
    lo, hi = bootstrap.ci_of_mean(x, idx)
    half = 1.96 * x.std() / math.sqrt(len(x))  # textbook interval of a mean
    assert lo == pytest.approx(x.mean() - half, abs=0.02)
    assert hi == pytest.approx(x.mean() + half, abs=0.02)


def test_paired_diff_self_zero_and_shift_detected():
    v = np.random.default_rng(1).random(50)
    same = bootstrap.paired_diff(lambda i: v[i].mean(), lambda i: v[i].mean(), len(v))
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["p_value"] == 1.0
    better = bootstrap.paired_diff(lambda i: v[i].mean(), lambda i: v[i].mean() + 0.1, len(v))
    assert better["ci95"][0] > 0 and better["p_value"] < 0.01


# --- compare -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A chexpert-like set, a well-trained head (B) and a barely trained one (A)."""
    from tests.downstream.test_classification_cli import _write_chexpert_like

    base = tmp_path_factory.mktemp("compare")
    data = _write_chexpert_like(base / "prep")
    return data, base


def _finetune(cli, data, out, epochs, lr):
    res = cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", out, "--epochs", epochs, "--lr", lr,
              "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr


@pytest.mark.slow
def test_compare_cli(cli, two_heads):
    data, base = two_heads
    _finetune(cli, data, base / "good", "30", "0.01")
    _finetune(cli, data, base / "weak", "1", "0.000001")
    res = cli("compare", base / "weak", base / "good", "--task", "chexpert-cls",
              "--data", data, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n"] == 20
    assert out["diff"] == pytest.approx(out["b"] - out["a"])
    lo, hi = out["ci95"]
    assert lo <= out["diff"] <= hi
    assert lo > 0 and out["p_value"] < 0.05  # the trained head is clearly better
    # compare writes nothing without --out; evaluate of B writes its metrics.json, which
    # agrees with compare's B and carries its ci95
    assert not (base / "good" / "metrics.json").exists()
    res = cli("evaluate", "--task", "chexpert-cls", "--data", data, "--checkpoint", base / "good")
    assert res.exit_code == 0 and "95% CI" in res.stdout
    written = json.loads((base / "good" / "metrics.json").read_text())
    assert written["value"] == pytest.approx(out["b"])
    wlo, whi = written["ci95"]["macro_auroc"]
    assert wlo <= written["value"] <= whi
    assert written["ci95_method"]["resamples"] == 1000
    # the evaluate table shows the interval beside the mean
    assert f"{wlo:.4f}" in res.stdout and f"{whi:.4f}" in res.stdout
    # a run against itself: 0 with zero width
    res = cli("compare", base / "good", base / "good", "--task", "chexpert-cls",
              "--data", data, "--json")  # fmt: skip
    same = json.loads(res.stdout)
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["p_value"] == 1.0
    # two runs of different tasks are refused
    res = cli("compare", base / "good", base / "good", "--task", "rsna-cls", "--data", data)
    assert res.exit_code == 2


# --- plot ----------------------------------------------------------------------------------


def _png_ok(path: Path) -> None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 10  # curves and text, not a blank canvas


def test_plot_pretrain_log_one_panel_per_series(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    recs = []
    for step in range(1, 9):
        recs.append({"kind": "train", "step": step, "stage": 1 + (step > 4), "epoch": 1,
                     "stage_step": step, "lr": 1e-3 / step, "loss": 5.0 - 0.3 * step,
                     "global": 2.0, "acc_i2t": 0.1 * step, "clusters_nonempty": 3 + step % 2,
                     "cluster_entropy": float("nan") if step == 1 else 1.0,
                     "best": False})  # fmt: skip
    recs.append({"kind": "val", "step": 4, "stage": 1, "val_loss": 4.0, "val_top1_i2t": 0.2})
    recs.append({"kind": "val", "step": 8, "stage": 2, "val_loss": 3.0, "val_top1_i2t": 0.3})
    text = "".join(json.dumps(r) + "\n" for r in recs)  # a NaN point is left out
    (run / "metrics.jsonl").write_text(text)
    res = cli("plot", run, "--out", tmp_path / "fig", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    panels = {f["file"]: f["panels"] for f in out["figures"]}
    assert panels == {
        "train.png": ["lr", "loss", "global", "acc_i2t", "clusters_nonempty", "cluster_entropy"],
        "validate.png": ["val_loss", "val_top1_i2t"],
    }
    for name in panels:
        _png_ok(tmp_path / "fig" / name)
    res = cli("plot", tmp_path / "nothing", "--out", tmp_path / "fig2")
    assert res.exit_code == 2 and "nothing" in res.stderr


def test_plot_finetune_history(tmp_path, cli):
    run = tmp_path / "ft"
    run.mkdir()
    hist = [{"epoch": e, "train_loss": 1.0 / e, "macro_auroc": 0.5 + 0.04 * e} for e in range(1, 6)]
    (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    (run / "finetune.json").write_text(json.dumps({"best_epoch": 5}))
    res = cli("plot", run, "--out", tmp_path / "fig", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["kind"] == "finetune"
    assert out["figures"][0]["panels"] == ["train_loss", "macro_auroc"]
    _png_ok(tmp_path / "fig" / "finetune.png")


@pytest.mark.slow
def test_tensorboard_event_file_holds_the_scalars(tmp_path, cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.train.worlds import make_world

    data = make_world(tmp_path / "data", n=48, size=64, seed=0)
    tb = tmp_path / "tb"
    res = cli("pretrain", "--data", data, "--preset", "tiny", "--out", tmp_path / "run",
              "--max-steps", "2", "--stage1-epochs", "1", "--stage2-epochs", "1",
              "--batch-size", "8", "--device", "cpu", "--set", "data.image_size=64",
              "--set", "data.crop_size=64", "--tensorboard", tb, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    train = [
        json.loads(ln)
        for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(ln)["kind"] == "train"
    ]
    acc = EventAccumulator(str(tb))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert "train/lr" in acc.Tags()["scalars"] and "val/val_loss" in acc.Tags()["scalars"]


def _stat_result(values: list[float], reasons: dict | None = None) -> dict:
    """A detection-style result whose headline is the mean of per-image values."""
    v = np.asarray(values, dtype=np.float64)
    result = {
        "task": "rsna-det",
        "metric": "map",
        "per_image": {"kind": "stat", "fns": {"map": lambda idx: float(np.mean(v[idx]))},
                      "n": len(v), "strata": None},
    }  # fmt: skip
    if reasons:
        result["null_reasons"] = reasons
    return result


def test_compare_says_it_cannot_compare_a_null_metric(monkeypatch, capsys):
    from cmcgns_cli import compare

    why = "the published (mgca) rule scored no image: 0 of 4 have a detection"
    a = _stat_result([float("nan")] * 4, {"map": why})
    b = _stat_result([0.1, 0.2, 0.3, 0.4])
    res = compare.compare_results(a, b, n_boot=50)
    assert res["comparable"] is False and res["a"] is None and res["b"] == pytest.approx(0.25)
    assert res["diff"] is None and res["ci95"] is None and res["p_value"] is None
    assert res["not_comparable"] == f"cannot compare map: A has none ({why})"
    assert res["null_reasons"]["a"] == why and "b" not in res["null_reasons"]
    # the printed table: no None anywhere, the reason's first clause in A's cell
    monkeypatch.setattr(compare, "check_comparable", lambda *args: None)
    monkeypatch.setattr(compare, "_check_heads", lambda *args: None)
    monkeypatch.setattr(compare, "_score", lambda task, data, run, *rest: a if run == "A" else b)
    compare.run_compare(run_a="A", run_b="B", task="rsna-det", data=Path("."), prompts=None,
                        annotations=None, resamples=50, seed=0, device="cpu",
                        as_json=False)  # fmt: skip
    text = capsys.readouterr()
    assert "None" not in text.out
    assert "n/a (the published (mgca) rule scored no image)" in text.out
    assert "n/a (cannot compare)" in text.out
    assert "note: cannot compare map: A has none" in text.err
    # comparable runs are marked so
    assert compare.compare_results(b, b, n_boot=50)["comparable"] is True
