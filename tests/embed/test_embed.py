"""`cmcgns embed`: the vectors equal the model's own forward; every format is readable."""

from __future__ import annotations

import io
import json
import sys

import cv2
import numpy as np
import pandas as pd
import torch

from cmcgns_cli.data.paired import PairedDataset, collate_paired
from cmcgns_cli.data.prepared import Prepared, open_prepared
from cmcgns_cli.data.tokenize import token_cache
from cmcgns_cli.embedding.runs import open_run


def _inputs(data, tmp_path, n=6):
    p = open_prepared(data)
    rows = p.split_indices("test")[:n]
    paths = []
    for r in rows:
        path = tmp_path / f"{p.manifest['id'].iat[r]}.png"
        cv2.imwrite(str(path), np.asarray(p.images[r]))
        paths.append(path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    texts = [". ".join(str(s) for s in p.manifest["sentences"].iat[r]) for r in rows]
    csv = tmp_path / "reports.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(len(rows))], "text": texts}).to_csv(csv)
    return p, rows, paths, bad, csv


def _reference(run_dir, p, rows):
    """The model's own forward on the prepared rows (PairedDataset eval transform). The
    test world keeps raw sentences ("... effusion."); prepare stores them cleaned, as
    embed cleans its text, so the reference reads the cleaned sentences."""
    run = open_run(run_dir)
    manifest = p.manifest.copy()
    manifest["sentences"] = [[str(x).rstrip(".") for x in s] for s in manifest["sentences"]]
    p = Prepared(p.root.parent / "cleaned", p.meta, manifest, p.images, None)
    ds = PairedDataset(p, "test", token_cache(p, run.tok, fallback_dir=run_dir), run.cfg.data,
                       train=False)  # fmt: skip
    pos = {int(r): i for i, r in enumerate(ds.rows)}
    batch = collate_paired([ds[pos[int(r)]] for r in rows], run.tok.pad_token_id)
    with torch.no_grad():
        img = run.model.encode_image(batch["images"])
        txt = run.model.encode_text(batch["input_ids"], batch["attention_mask"],
                                    batch["sentence_index"], batch["num_sentences"])  # fmt: skip
    return img, txt


def test_embed_parquet_equals_model_forward(trained, tmp_path, cli):
    data, run = trained
    p, rows, paths, bad, csv = _inputs(data, tmp_path)
    out = tmp_path / "emb.parquet"
    res = cli("embed", "--checkpoint", run, "--images", tmp_path, "--reports", csv,
              "--out", out, "--local", "--batch-size", "4", "--device", "cpu")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "broken.png" in res.stderr
    df = pd.read_parquet(out)
    assert list(df.columns) == [
        "id",
        "kind",
        "embedding",
        "local",
        "sentences",
        "sentences_lost",
        "error",
    ]
    assert len(df) == len(rows) + 1 + len(rows)
    failed = df[df.error.notna()]
    assert failed.id.tolist() == [str(bad)] and failed.embedding.iloc[0] is None
    img, txt = _reference(run, p, rows)
    images = df[(df.kind == "image") & df.error.isna()].set_index("id")
    for i, path in enumerate(paths):
        got = np.asarray(images.loc[str(path), "embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, img["global"][i].numpy(), atol=1e-5)
        local = np.stack(images.loc[str(path), "local"])
        np.testing.assert_allclose(local, img["local"][i].numpy(), atol=1e-5)
    reports = df[df.kind == "report"].reset_index(drop=True)
    assert reports.id.tolist() == [f"r{i}" for i in range(len(rows))]
    for i in range(len(rows)):
        got = np.asarray(reports.embedding[i], dtype=np.float32)
        np.testing.assert_allclose(got, txt["global"][i].numpy(), atol=1e-5)
        n = int(txt["sentence_mask"][i].sum())
        # the model's sentence vectors are not re-normalised; embed writes unit vectors
        unit = torch.nn.functional.normalize(txt["sentences"][i, :n], dim=-1)
        np.testing.assert_allclose(np.stack(reports.local[i]), unit, atol=1e-5)


def test_jsonl_on_stdout_parses_line_by_line(trained, tmp_path, cli, monkeypatch):
    data, run = trained
    _, rows, paths, bad, _ = _inputs(data, tmp_path)
    listing = "\n".join(str(x) for x in [paths[0], bad, *paths[1:]]) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(listing))
    res = cli("embed", "--checkpoint", run, "--images", "-", "--format", "jsonl")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    objs = [json.loads(ln) for ln in lines]
    assert [o["id"] for o in objs] == listing.split()
    assert objs[1]["embedding"] is None and "unreadable" in objs[1]["error"]
    dims = {len(o["embedding"]) for o in objs if o["error"] is None}
    assert dims == {64}
    # plain-text reports on stdin, one a line
    monkeypatch.setattr(sys, "stdin", io.StringIO("the heart is enlarged.\n\nno effusion.\n"))
    res = cli("embed", "--checkpoint", run, "--reports", "-")
    # the 0-based row index, as for JSON Lines and CSV rows: the blank line keeps its place
    assert [json.loads(ln)["id"] for ln in res.stdout.splitlines()] == ["0", "2"]


def test_npy_with_ids_and_nan_rows(trained, tmp_path, cli):
    data, run = trained
    _, rows, paths, bad, _ = _inputs(data, tmp_path)
    out = tmp_path / "vec.npy"
    res = cli("embed", "--checkpoint", run, "--images", str(tmp_path / "*.png"), "--out", out)
    assert res.exit_code == 0, res.stderr
    arr = np.load(out)
    ids = (tmp_path / "vec.ids.txt").read_text().splitlines()
    assert arr.shape == (len(paths) + 1, 64) and arr.dtype == np.float32
    k = ids.index(str(bad))
    assert np.isnan(arr[k]).all() and np.isfinite(np.delete(arr, k, axis=0)).all()


def test_bad_usage_exits_2(trained, tmp_path, cli):
    _, run = trained
    res = cli("embed", "--checkpoint", tmp_path / "nope", "--reports", "-")
    assert res.exit_code == 2 and "nope" in res.stderr
    res = cli("embed", "--checkpoint", run)
    assert res.exit_code == 2
    res = cli("embed", "--checkpoint", run, "--images", tmp_path / "missing", "--format", "npy")
    assert res.exit_code == 2
    # the --out file's name must say its format, and agree with an explicit --format
    reports = tmp_path / "r.txt"
    reports.write_text("the heart is enlarged.\n")
    csv = tmp_path / "e.csv"
    res = cli("embed", "--checkpoint", run, "--reports", reports, "--out", csv)
    assert res.exit_code == 2 and "name the file .jsonl, .parquet or .npy" in res.stderr
    assert not csv.exists()
    npy = tmp_path / "e.npy"
    res = cli("embed", "--checkpoint", run, "--reports", reports, "--out", npy, "--format",
              "parquet")  # fmt: skip
    assert res.exit_code == 2 and "the name says npy, --format says parquet" in res.stderr
