"""`cmcgns clusters` through the CLI: the table, its CSV, and the truth scores.

The expected truth scores are derived from the cluster sizes the command prints, with a
truth file written here that gives every sentence the same finding: then every same-cluster
pair is a same-finding pair (precision 1, purity 1) and the recall is the share of ordered
sentence pairs that share a cluster, sum_k n_k (n_k - 1) / (n (n - 1)).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TRUTH_KEYS = ("purity", "nmi", "fn_precision", "fn_recall")


def _clusters(cli, run: Path, data: Path, *extra: str) -> dict:
    res = cli("clusters", "--checkpoint", run, "--data", data, "--split", "test", "--json",
              "--device", "cpu", *extra)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def cleaned(trained, tmp_path_factory) -> Path:
    """The shared run's data with its sentences as ``prepare`` stores them (cleaned: the
    test world keeps the final full stop, the truth reader cleans as prepare does)."""
    from cmcgns_cli.data.prepared import open_prepared, write_prepared

    p = open_prepared(trained[0])
    manifest = p.manifest.copy()
    manifest["sentences"] = [[str(x).rstrip(".") for x in s] for s in manifest["sentences"]]
    root = tmp_path_factory.mktemp("clusters") / "data"
    return write_prepared(root, dataset="mimic", manifest=manifest, images=np.asarray(p.images))


def _one_finding_truth(data: Path, path: Path) -> Path:
    manifest = pd.read_parquet(data / "manifest.parquet")
    with open(path, "w", encoding="utf-8") as fh:
        for image_id, sents in zip(manifest["id"], manifest["sentences"], strict=True):
            items = [{"text": str(s), "finding": "same"} for s in sents]
            fh.write(json.dumps({"image_id": str(image_id), "sentences": items}) + "\n")
    return path


def test_clusters_without_truth_gives_null_scores_and_a_matching_csv(trained, cli, tmp_path):
    data, run = trained
    out = tmp_path / "clusters.csv"
    got = _clusters(cli, run, data, "--out", out, "--top", "2")
    manifest = pd.read_parquet(data / "manifest.parquet")
    n_reports = int((manifest["split"] == "test").sum())
    assert got["reports"] == n_reports
    for key in TRUTH_KEYS:
        assert key in got and got[key] is None
    assert got["truth"] is None and got["truth_sentences"] is None
    sizes = [c["size"] for c in got["clusters"]]
    assert len(sizes) == got["num_clusters"] == 8  # the shared run's loss.num_clusters
    assert sum(sizes) == got["sentences"] > 0
    assert sizes == sorted(sizes, reverse=True)
    assert got["empty_clusters"] == sum(s == 0 for s in sizes)
    assert got["cluster_top_share"] == pytest.approx(sizes[0] / got["sentences"])
    assert all(len(c["nearest"]) <= 2 for c in got["clusters"])
    # one CSV row per listed sentence, one bare row per cluster without any
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected_rows = sum(max(len(c["nearest"]), 1) for c in got["clusters"])
    assert len(rows) == expected_rows
    assert {int(r["cluster"]) for r in rows} == set(range(got["num_clusters"]))


def test_clusters_with_truth_scores_against_the_sizes(trained, cleaned, cli, tmp_path):
    data, run = cleaned, trained[1]
    truth = _one_finding_truth(data, tmp_path / "truth.jsonl")
    got = _clusters(cli, run, data, "--truth", truth)
    n = got["sentences"]
    assert got["truth_sentences"] == n
    sizes = [c["size"] for c in got["clusters"]]
    assert got["purity"] == pytest.approx(1.0)
    assert got["fn_precision"] == pytest.approx(1.0)
    expected_recall = sum(s * (s - 1) for s in sizes) / (n * (n - 1))
    assert got["fn_recall"] == pytest.approx(expected_recall)
    # one finding carries no information: mutual information 0, so NMI 0 unless the clusters
    # are constant too (scikit-learn's convention: 1 when both labelings are constant)
    nonempty = sum(s > 0 for s in sizes)
    assert got["nmi"] == pytest.approx(1.0 if nonempty == 1 else 0.0, abs=1e-12)


def test_clusters_truth_of_another_world_is_refused(trained, cli, tmp_path):
    data, run = trained
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"image_id": "x", "sentences": [
        {"text": "a sentence nobody wrote here.", "finding": "f"}]}) + "\n")  # fmt: skip
    res = cli("clusters", "--checkpoint", run, "--data", data, "--truth", other, "--json",
              "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2
    assert str(other) in res.stderr and res.stdout == ""


def test_clusters_of_a_run_whose_gate_kept_the_kmeans_off_says_why(trained, cli, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    data, run = trained
    gated = tmp_path / "gated"
    shutil.copytree(run, gated)
    for weights_file in (gated / "model.safetensors", gated / "best" / "model.safetensors"):
        weights = load_file(weights_file)  # the last and the best checkpoint
        key = "local_text_loss.kmeans.initialized"
        weights[key] = weights[key].zero_()
        save_file(weights, weights_file)
    config = json.loads((gated / "config.json").read_text())
    res = cli("clusters", "--checkpoint", gated, "--data", data, "--json", "--device", "cpu")
    assert res.exit_code == 2 and "never initialised" in res.stderr
    assert "cluster_gate" not in res.stderr  # the authors' gate: nothing more to say
    config["loss"]["cluster_gate"] = "spread"
    (gated / "config.json").write_text(json.dumps(config))
    res = cli("clusters", "--checkpoint", gated, "--data", data, "--json", "--device", "cpu")
    assert res.exit_code == 2 and "cluster_feature_cos in metrics.jsonl" in res.stderr
