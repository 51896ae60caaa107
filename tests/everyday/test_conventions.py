"""One convention each: epochs count from 1, counts are integers, `value*` keys are the
headline's numbers and metrics / mean / std / ci95 are dicts keyed by metric, a split the
data lacks is named in evaluate's own words, and data at another size than the head's is
warned about in one line."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from cmcgns_cli.downstream.grounding import summarise
from cmcgns_cli.downstream.linear import fit_linear_head
from cmcgns_cli.downstream.results_table import results_table
from cmcgns_cli.downstream.seed_summary import summarise_seeds
from cmcgns_cli.downstream.tasks import CLS_TASKS
from tests.downstream.cls_data import write_cls_dataset


def _chexpert_like(root: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = (rng.random((120, 2)) < 0.4).astype(np.float32)
    images = rng.integers(0, 60, size=(120, size, size), dtype=np.uint8)
    images[labels[:, 0] > 0, : size // 2] += 150
    images[labels[:, 1] > 0, :, size // 2 :] += 90
    rows = [row.tolist() for row in labels]
    return write_cls_dataset(root, "chexpert", images, rows, ["Atelectasis", "Edema"])


def _features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 1)) < 0.5).astype(np.float32)
    x = rng.normal(size=(n, 4)).astype(np.float32) + y * 1.5
    return x, y


def test_linear_head_epochs_count_from_one():
    task = CLS_TASKS["rsna-cls"]
    train, val = _features(40, 0), _features(20, 1)
    one = fit_linear_head(task, ["p"], train, val, epochs=1, lr=0.01, batch_size=8, seed=0)
    assert one.best_epoch == 1 and [h["epoch"] for h in one.history] == [1]
    three = fit_linear_head(task, ["p"], train, val, epochs=3, lr=0.01, batch_size=8, seed=0)
    assert [h["epoch"] for h in three.history] == [1, 2, 3]
    best = max(three.history, key=lambda h: h[task.metric])  # first of the best, as kept
    assert three.best_epoch == best["epoch"]


def test_detection_and_segmentation_epochs_count_from_one():
    """dense.train (detection, segmentation): the validate scores 0.2, 0.9, 0.5 keep epoch 2."""
    import torch

    from cmcgns_cli.downstream import dense

    model = torch.nn.Linear(2, 1)
    x = torch.ones(8, 2)
    scores = iter([0.2, 0.9, 0.5])

    def step_loss(idx):
        return {"loss": model(x[torch.as_tensor(idx)]).pow(2).mean()}

    fit = dense.train(model, list(model.parameters()), np.arange(8), step_loss,
                      lambda: {"dice": next(scores)}, "dice", epochs=3, lr=0.01, batch_size=4,
                      seed=0)  # fmt: skip
    assert fit.best_epoch == 2 and [h["epoch"] for h in fit.history] == [1, 2, 3]


def test_grounding_counts_are_integers_in_json_and_on_screen():
    n = 17
    rng = np.random.default_rng(0)
    scores = {k: rng.random(n) for k in ("pointing_game", "cnr", "miou", "area")}
    scores["cnr"][0] = np.nan  # one undefined CNR: cnr_n = 16
    scores["iou"] = rng.random((n, 5))
    chance = {"cnr": rng.random(n), "miou": rng.random(n)}
    out = summarise(scores, chance, ["a"] * 9 + ["b"] * 8, n_boot=20)
    m = out["metrics"]
    assert type(m["n"]) is int and m["n"] == 17
    assert type(m["cnr_n"]) is int and m["cnr_n"] == 16
    assert type(m["pointing_game_n"]) is int and m["pointing_game_n"] == 17
    result = {"task": "grounding-rsna", "metric": "pointing_game", "metrics": m,
              "protocol": {"seed": 0}}  # fmt: skip
    summary = summarise_seeds([result])
    assert json.loads(json.dumps(summary["mean"]))["n"] == 17  # an int in the JSON
    term = Console(width=120, file=StringIO(), color_system=None)
    term.print(results_table("grounding-rsna", summary))
    text = term.file.getvalue()
    assert "17.0000" not in text and "16.0000" not in text
    cells = [[c.strip() for c in line.split("│")[1:3]] for line in text.splitlines()]
    assert ["n", "17"] in cells and ["cnr_n", "16"] in cells, text


def test_json_value_keys_are_numbers_and_stat_keys_are_dicts():
    runs = [
        {"task": "rsna-cls", "metric": "macro_auroc", "protocol": {"seed": s},
         "metrics": {"macro_auroc": v, "n_test": 20}, "ci95": {"macro_auroc": [0.5, 0.9]}}
        for s, v in ((0, 0.6), (1, 0.8))
    ]  # fmt: skip
    s = summarise_seeds(runs)
    assert s["value"] == pytest.approx(0.7)
    assert s["value_std"] == pytest.approx(math.sqrt(0.02))  # sample sd of 0.6, 0.8
    assert s["value_ci95"] == [0.5, 0.9]
    for key in ("metrics", "mean", "std", "ci95"):
        assert isinstance(s[key], dict) and "macro_auroc" in s[key], key
    assert s["mean"]["macro_auroc"] == pytest.approx(0.7) and s["mean"]["n_test"] == 20
    assert type(s["mean"]["n_test"]) is int


def test_evaluate_split_the_data_lacks_is_named_in_evaluates_words(cli, tmp_path):
    images = np.zeros((120, 16, 16), dtype=np.uint8)
    data = write_cls_dataset(tmp_path / "mimic", "mimic", images, [[0.0]] * 120, ["x"])
    run = tmp_path / "run"  # passes the --checkpoint folder check; the split is refused first
    run.mkdir()
    (run / "config.json").write_text("{}")
    for task in ("retrieval", "zeroshot-mimic"):
        res = cli("evaluate", "--task", task, "--data", data, "--checkpoint", run,
                  "--split", "5x200")  # fmt: skip
        assert res.exit_code == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "pretraining" not in res.stderr, res.stderr
        assert f"evaluate --task {task} --split 5x200" in lines[0]
        assert "train (80 rows), validate (20 rows), test (20 rows)" in lines[0]
        assert "cmcgns prepare chexpert" in lines[0]


def test_zero_shot_on_another_dataset_is_one_line_before_any_split_talk(cli, tmp_path):
    # zeroshot-chexpert on MIMIC data was told about 5x200 (--split 5x200), or warned that
    # the test split selected the checkpoint and only then refused the dataset (--split test)
    from cmcgns_cli.checksum import sha256_file

    images = np.zeros((120, 16, 16), dtype=np.uint8)
    data = write_cls_dataset(tmp_path / "mimic", "mimic", images, [[0.0]] * 120, ["x"])
    run = tmp_path / "run"
    run.mkdir()
    dataset = {"name": "mimic", "selection_splits": ["validate", "test"], "synthetic": False,
               "manifest_sha256": sha256_file(Path(data) / "manifest.parquet")}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"dataset": dataset}))
    for split in ("5x200", "test"):
        res = cli("evaluate", "--task", "zeroshot-chexpert", "--data", data, "--checkpoint",
                  run, "--split", split)  # fmt: skip
        assert res.exit_code == 2, res.stderr
        assert res.stderr.strip().splitlines() == [
            f"error: {Path(data) / 'meta.json'}: task zeroshot-chexpert needs a prepared "
            "chexpert dataset, this one is 'mimic'"
        ]


def _finetune(cli, data: Path, out: Path, *extra: str):
    return cli("finetune", "--task", "chexpert-cls", "--data", data, "--checkpoint", "none",
               "--arch", "resnet_tiny", "--out", out, "--epochs", "1", "--lr", "0.01",
               *extra)  # fmt: skip


def test_best_epoch_and_the_size_warning_through_the_cli(cli, tmp_path):
    small, large = _chexpert_like(tmp_path / "s32", 32), _chexpert_like(tmp_path / "s48", 48)
    head = tmp_path / "ft"
    res = _finetune(cli, small, head)
    assert res.exit_code == 0, res.stderr
    # printed and in finetune.json: the one epoch is epoch 1
    cells = [[c.strip() for c in line.split("│")[1:3]] for line in res.stdout.splitlines()]
    assert ["best_epoch", "1"] in cells, res.stdout
    record = json.loads((head / "finetune.json").read_text())
    assert record["best_epoch"] == 1 and record["data_image_size"] == 32
    full = _finetune(cli, small, tmp_path / "full", "--full", "--json")  # encoder trained too
    assert full.exit_code == 0, full.stderr
    assert json.loads(full.stdout)["best_epoch"] == 1
    history = (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1]
    same = cli("evaluate", "--task", "chexpert-cls", "--data", small, "--checkpoint", head,
               "--out", tmp_path / "e1")  # fmt: skip
    assert same.exit_code == 0 and "warning" not in same.stderr, same.stderr
    other = cli("evaluate", "--task", "chexpert-cls", "--data", large, "--checkpoint", head,
                "--out", tmp_path / "e2")  # fmt: skip
    assert other.exit_code == 0, other.stderr
    warnings = [line for line in other.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, other.stderr
    assert "prepared at 48 px" in warnings[0] and "prepared at 32 px" in warnings[0]
    assert str(head) in warnings[0] and "--size 32" in warnings[0]


def test_finetune_warns_when_the_run_was_pretrained_on_data_at_another_size(cli, tmp_path):
    """The pretrain run names its dataset (config.json dataset.path); finetuning on data at
    another size says so before anything else (here the fake run then fails to load)."""
    small, large = _chexpert_like(tmp_path / "s32", 32), _chexpert_like(tmp_path / "s48", 48)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": {"path": str(large)}}))
    res = cli("finetune", "--task", "chexpert-cls", "--data", small, "--checkpoint", run,
              "--out", tmp_path / "ft")  # fmt: skip
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, res.stderr
    assert "prepared at 32 px" in warnings[0] and "prepared at 48 px" in warnings[0]
    assert f"the encoder in {run}" in warnings[0]
    (run / "config.json").write_text(json.dumps({"dataset": {"path": str(small)}}))
    res = cli("finetune", "--task", "chexpert-cls", "--data", small, "--checkpoint", run,
              "--out", tmp_path / "ft2")  # fmt: skip
    assert "warning:" not in res.stderr, res.stderr
