"""finetune + evaluate round trip from the CLI on a small prepared dataset."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from cmcgns_cli.downstream import features
from tests.downstream.cls_data import write_cls_dataset


def _write_chexpert_like(root: Path, n: int = 120, seed: int = 0) -> Path:
    """Label c is on when quadrant-ish band c is bright: separable from pixels alone."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.4).astype(np.float32)
    images = rng.integers(0, 60, size=(n, 32, 32), dtype=np.uint8)
    images[labels[:, 0] > 0, :16] += 150
    images[labels[:, 1] > 0, :, 16:] += 90
    rows = [row.tolist() for row in labels]
    return write_cls_dataset(root, "chexpert", images, rows, ["Atelectasis", "Edema"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_chexpert_like(tmp_path_factory.mktemp("chx") / "prep")


def _finetune(cli, prepared: Path, out: Path, *extra: str) -> dict:
    res = cli(
        *["finetune", "--task", "chexpert-cls", "--data", str(prepared), "--checkpoint", "none",
         "--arch", "resnet_tiny", "--out", str(out), "--epochs", "30", "--lr", "0.01",
         "--json", *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_round_trip_and_metrics_file(cli, prepared: Path, tmp_path: Path, monkeypatch) -> None:
    record = _finetune(cli, prepared, tmp_path / "ft", "--fraction", "0.5")
    # count every pass of the encoder over images from here on
    encoded: list[int] = []
    real_extract = features.extract

    def counting_extract(encoder, prep, rows, *args, **kwargs):
        encoded.append(len(rows))
        return real_extract(encoder, prep, rows, *args, **kwargs)

    monkeypatch.setattr(features, "extract", counting_extract)
    assert record["n_train"] == 40 and record["n_validate"] == 20
    ids = (tmp_path / "ft" / "train_ids.txt").read_text().split()
    assert len(ids) == 40
    res = cli(
        *["evaluate", "--task", "chexpert-cls", "--data", str(prepared), "--checkpoint",
         str(tmp_path / "ft"), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    written = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert summary["mean"]["macro_auroc"] == pytest.approx(written["value"])
    assert written["protocol"]["n_test"] == 20 and written["protocol"]["fraction"] == 0.5
    # Even a random-init encoder separates bright bands: the head must have learnt them.
    assert written["value"] > 0.8
    # The features are cached beside the data, so a later run (this evaluate, a second
    # finetune) does not re-encode.
    assert encoded == []
    cached = list((prepared / ".cache").glob("features-*.npy"))
    assert len(cached) == 1
    # The random-init encoder is rebuilt from its recorded seed, not read back from the
    # cache: without the cache, evaluate gives the same score.
    for path in cached:
        path.unlink()
    again = cli(
        *["evaluate", "--task", "chexpert-cls", "--data", str(prepared), "--checkpoint",
          str(tmp_path / "ft"), "--json"],
    )  # fmt: skip
    assert json.loads(again.stdout)["mean"]["macro_auroc"] == pytest.approx(written["value"])
    assert encoded == [120]  # the cache was gone: every row encoded once, and cached again
    assert [p.name for p in (prepared / ".cache").glob("features-*.npy")] == [cached[0].name]


def test_same_seed_same_subset_and_head(cli, prepared: Path, tmp_path: Path) -> None:
    a = _finetune(cli, prepared, tmp_path / "a", "--fraction", "0.1", "--seed", "5")
    b = _finetune(cli, prepared, tmp_path / "b", "--fraction", "0.1", "--seed", "5")
    assert (tmp_path / "a" / "train_ids.txt").read_text() == (
        tmp_path / "b" / "train_ids.txt"
    ).read_text()
    assert a["best_validate"] == b["best_validate"]


def test_evaluate_refuses_other_task(cli, prepared: Path, tmp_path: Path) -> None:
    _finetune(cli, prepared, tmp_path / "ft", "--fraction", "0.1")
    res = cli(
        *["evaluate", "--task", "rsna-cls", "--data", str(prepared), "--checkpoint",
         str(tmp_path / "ft")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "finetuned for task 'chexpert-cls'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_seeds_report_mean_and_std(cli, prepared: Path, tmp_path: Path) -> None:
    _finetune(cli, prepared, tmp_path / "ft", "--fraction", "0.5")
    res = cli(
        *["evaluate", "--task", "chexpert-cls", "--data", str(prepared), "--checkpoint",
         str(tmp_path / "ft"), "--seeds", "3", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert [e["seed"] for e in summary["seeds"]] == [0, 1, 2]
    values = [r["value"] for r in summary["runs"]]
    assert summary["mean"]["macro_auroc"] == pytest.approx(np.mean(values))
    assert summary["std"]["macro_auroc"] == pytest.approx(statistics.stdev(values))
    # metrics.json beside the head holds every seed and the mean, not the first seed alone
    written = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert [e["value"] for e in written["seeds"]] == pytest.approx(values)
    assert written["value"] == pytest.approx(np.mean(values)) and written["n_seeds"] == 3


def test_finetune_refuses_a_finished_head_unless_overwrite(cli, prepared: Path, tmp_path: Path):
    out = tmp_path / "ft"
    _finetune(cli, prepared, out, "--fraction", "0.1", "--epochs", "1")
    (out / "metrics.json").write_text('{"stale": true}')
    head = (out / "head.safetensors").read_bytes()
    args = ["finetune", "--task", "chexpert-cls", "--data", str(prepared), "--checkpoint",
            "none", "--arch", "resnet_tiny", "--out", str(out), "--epochs", "1",
            "--json"]  # fmt: skip
    res = cli(*args, "--seed", "9")
    assert res.exit_code == 2 and "already holds a finetuned head" in res.stderr
    assert (out / "head.safetensors").read_bytes() == head  # nothing touched
    res = cli(*args, "--seed", "9", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert not (out / "metrics.json").exists()  # results of the old head are gone
    assert json.loads((out / "finetune.json").read_text())["seed"] == 9


def test_evaluate_out_keeps_the_head_folder_untouched(cli, prepared: Path, tmp_path: Path):
    ft, elsewhere = tmp_path / "ft", tmp_path / "scores"
    _finetune(cli, prepared, ft, "--fraction", "0.1", "--epochs", "1")
    before = sorted(p.name for p in ft.iterdir())
    res = cli("evaluate", "--task", "chexpert-cls", "--data", prepared, "--checkpoint", ft,
              "--out", elsewhere, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in ft.iterdir()) == before and "metrics.json" not in before
    written = json.loads((elsewhere / "metrics.json").read_text())
    assert written["value"] == json.loads(res.stdout)["value"]


def test_input_size_feeds_a_random_init_baseline_at_that_size(
    cli, prepared: Path, tmp_path: Path, monkeypatch
) -> None:
    """--input-size SIZE,CROP: the random-init encoder sees CROP x CROP inputs in finetune,
    evaluate and the extra seeds of evaluate --seeds (the preset's 128 px otherwise)."""
    seen: list[tuple[int, int]] = []
    real = features.to_model_input

    def recording(images, image_size, crop_size, *args, **kwargs):
        x = real(images, image_size, crop_size, *args, **kwargs)
        seen.append(tuple(x.shape[-2:]))
        return x

    monkeypatch.setattr(features, "to_model_input", recording)
    record = _finetune(cli, prepared, tmp_path / "ft", "--input-size", "40,32")
    assert (record["encoder"]["image_size"], record["encoder"]["crop_size"]) == (40, 32)
    assert seen and set(seen) == {(32, 32)}
    seen.clear()
    res = cli("evaluate", "--task", "chexpert-cls", "--data", prepared, "--checkpoint",
              tmp_path / "ft", "--seeds", "2", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert seen and set(seen) == {(32, 32)}
    again = json.loads((tmp_path / "ft" / "seeds" / "seed1" / "finetune.json").read_text())
    assert (again["encoder"]["image_size"], again["encoder"]["crop_size"]) == (40, 32)
    preset = _finetune(cli, prepared, tmp_path / "preset")["encoder"]  # features may be cached
    assert (preset["image_size"], preset["crop_size"]) == (144, 128)  # resnet_tiny's preset


@pytest.mark.parametrize(
    ("value", "checkpoint", "message"),
    [
        ("abc", "none", "give SIZE or SIZE,CROP"),
        ("0", "none", "give SIZE or SIZE,CROP"),
        ("32,40", "none", "need 16 <= crop <= resize"),
        ("64", "some-run", "--input-size is for --checkpoint none"),
    ],
)
def test_input_size_errors_are_one_line(
    cli, prepared: Path, tmp_path: Path, value: str, checkpoint: str, message: str
) -> None:
    res = cli("finetune", "--task", "chexpert-cls", "--data", prepared, "--checkpoint",
              checkpoint, "--out", tmp_path / "ft", "--input-size", value)  # fmt: skip
    assert res.exit_code == 2
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
