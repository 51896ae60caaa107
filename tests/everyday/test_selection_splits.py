"""The test split used twice: a run records the splits that selected its checkpoint (validate
+ test under ``--protocol mgca``), and ``evaluate`` warns when it scores one of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cmcgns_cli.selection import same_data, scored_selection
from tests.train.conftest import TINY
from tests.train.conftest import cli as run_cli
from tests.train.worlds import make_world


@pytest.fixture(scope="module")
def mgca_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run): a two-step tiny pretrain on a MIMIC-like world that validates on
    validate + test, as ``prepare mimic --protocol mgca`` records it."""
    base = tmp_path_factory.mktemp("mgca")
    data = make_world(base / "data", n=60, size=64, seed=1)
    meta = json.loads((data / "meta.json").read_text())
    meta["pretrain_validate_split"] = "validate+test"
    (data / "meta.json").write_text(json.dumps(meta))
    run = base / "run"
    mp = pytest.MonkeyPatch()
    try:
        code = run_cli(["pretrain", "--data", str(data), "--out", str(run), *TINY,
                        "--stage1-epochs", "1", "--stage2-epochs", "0", "--max-steps", "2",
                        "--json"], mp)  # fmt: skip
    finally:
        mp.undo()
    assert code == 0
    return data, run


def test_the_run_records_both_splits(mgca_run) -> None:
    data, run = mgca_run
    dataset = json.loads((run / "config.json").read_text())["dataset"]
    assert dataset["selection_splits"] == ["validate", "test"]
    # the validation pairs are the validate and test rows of the world together
    splits = pd.read_parquet(data / "manifest.parquet")["split"]
    assert dataset["validate_pairs"] == int(splits.isin(["validate", "test"]).sum())
    assert dataset["validate_pairs"] > int((splits == "validate").sum())


def test_evaluate_on_test_warns(mgca_run, cli, tmp_path) -> None:
    data, run = mgca_run
    res = cli("evaluate", "--task", "retrieval", "--data", data, "--checkpoint", run,
              "--split", "test", "--out", tmp_path / "ev", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: split")]
    assert warnings == [
        "warning: split test of mimic selected this checkpoint (pretraining validated on "
        "validate + test): its test scores are not held out"
    ]
    out = json.loads(res.stdout)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for got in (out, saved):
        assert got["selection_splits"] == ["validate", "test"]
        assert got["selection_overlap"] == ["test"]


def test_evaluate_on_a_split_not_used_does_not_warn(mgca_run, cli, tmp_path) -> None:
    data, run = mgca_run
    res = cli("evaluate", "--task", "retrieval", "--data", data, "--checkpoint", run,
              "--split", "train", "--out", tmp_path / "ev", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "warning: split" not in res.stderr
    got = json.loads(res.stdout)
    assert got["selection_splits"] == ["validate", "test"] and got["selection_overlap"] == []


def _run_with(tmp_path: Path, dataset: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": dataset}))
    return run


def _data(tmp_path: Path, name: str, content: bytes) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "manifest.parquet").write_bytes(content)
    return root


def test_which_data_counts_as_the_run_s(tmp_path) -> None:
    import hashlib

    mine = _data(tmp_path, "mine", b"manifest A")
    other = _data(tmp_path, "other", b"manifest B")
    recorded = {
        "name": "mimic",
        "selection_splits": ["validate", "test"],
        "manifest_sha256": hashlib.sha256(b"manifest A").hexdigest(),
        "synthetic": True,
    }
    synth = {"dataset": "mimic", "synthetic": True}
    # a synthetic world: only the same manifest is the same data
    assert same_data(recorded, synth, mine) and not same_data(recorded, synth, other)
    # real MIMIC-CXR prepared twice: other bytes, the same official splits
    real = {**recorded, "synthetic": False}
    assert same_data(real, {"dataset": "mimic"}, other)
    assert not same_data(real, {"dataset": "chexpert"}, other)
    run = _run_with(tmp_path, real)
    assert scored_selection(run, other, {"dataset": "mimic"}, "validate+test") == {
        "selection_splits": ["validate", "test"],
        "selection_overlap": ["validate", "test"],
    }
    assert scored_selection(run, other, {"dataset": "chexpert"}, "test")["selection_overlap"] == []
    # a run from before the record (no selection_splits): nothing to compare
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"dataset": {"name": "mimic"}}))
    assert scored_selection(old, other, {"dataset": "mimic"}, "test") == {
        "selection_splits": None,
        "selection_overlap": [],
    }


def test_the_bundle_and_its_card_say_so_and_evaluate_warns_on_it(mgca_run, cli, tmp_path):
    from cmcgns_cli.export import run_export

    data, run = mgca_run
    bundle = tmp_path / "bundle"
    run_export(run=run, out=bundle, data=data, as_json=True)
    dataset = json.loads((bundle / "config.json").read_text())["dataset"]
    assert dataset["selection_splits"] == ["validate", "test"]
    card = (bundle / "README.md").read_text()
    assert (
        "- checkpoint selected on: the validate + test splits of `mimic` (pretraining "
        "validation); scores on test of this dataset are not held out (`cmcgns evaluate` warns)"
    ) in card.splitlines()
    res = cli("evaluate", "--task", "retrieval", "--data", data, "--checkpoint", bundle,
              "--split", "test", "--out", tmp_path / "ev", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["selection_overlap"] == ["test"]
    assert "warning: split test of mimic selected this checkpoint" in res.stderr


def test_a_bundle_of_the_last_weights_was_not_selected(tmp_path) -> None:
    root = _data(tmp_path, "mimic", b"manifest")
    dataset = {"name": "mimic", "selection_splits": ["validate", "test"], "synthetic": False}
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps({"dataset": dataset, "bundle": {"weights": "last"}})
    )
    assert scored_selection(bundle, root, {"dataset": "mimic"}, "test") == {
        "selection_splits": None,
        "selection_overlap": [],
    }


def test_the_same_world_prepared_at_another_size_is_the_run_s_data(tmp_path) -> None:
    # prepare mimic --size 32 and --size 64 of one synthetic world: the manifests differ in
    # scale / padding (so their SHA-256 do), the studies, splits and reports do not
    from cmcgns_cli.selection import selection_record

    def write(name: str, scale: float, reports: list[list[str]]) -> Path:
        root = tmp_path / name
        root.mkdir()
        rows = {"id": ["b", "a"], "split": ["test", "train"], "scale": [scale, scale],
                "sentences": reports}  # fmt: skip
        pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
        return root

    reports = [["no effusion"], ["small left effusion", "tube in place"]]
    at64 = write("m64", 0.125, reports)
    at32 = write("m32", 0.0625, reports)
    other = write("other", 0.0625, [["no effusion"], ["small right effusion", "tube in place"]])
    meta = {"dataset": "mimic", "synthetic": True}
    recorded = {"name": "mimic", **selection_record("validate+test", meta, at64)}
    assert (at32 / "manifest.parquet").read_bytes() != (at64 / "manifest.parquet").read_bytes()
    assert same_data(recorded, meta, at32)
    assert not same_data(recorded, meta, other)  # one report differs: another world
    # a run recorded before studies_sha256 existed: only its manifest counts
    older = {k: v for k, v in recorded.items() if k != "studies_sha256"}
    assert not same_data(older, meta, at32) and same_data(older, meta, at64)


def test_compare_warns_for_each_run_the_test_split_selected(mgca_run, cli, tmp_path) -> None:
    data, run = mgca_run
    res = cli("compare", run, run, "--task", "retrieval", "--data", data, "--resamples", "50",
              "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: run")]
    assert len(warnings) == 2 and warnings[0].startswith(f"warning: run A ({run}): split test")
    assert warnings[1].startswith(f"warning: run B ({run}): split test of mimic selected")
    assert json.loads(res.stdout)["selection_overlap"] == {"a": ["test"], "b": ["test"]}
