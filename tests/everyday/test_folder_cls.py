"""folder-cls: a multi-label probe over a user's own label columns; tasks whose label layout
does not match the folder's are refused."""

from __future__ import annotations

import json

import numpy as np

from tests.downstream.cls_data import write_cls_dataset


def _folder(root, n=120, seed=0):
    """Two independent yes/no labels (both, one or none per image), readable from pixels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.4).astype(np.float32)
    images = rng.integers(0, 60, size=(n, 32, 32), dtype=np.uint8)
    images[labels[:, 0] > 0, :16] += 150
    images[labels[:, 1] > 0, :, 16:] += 90
    rows = [row.tolist() for row in labels]
    return write_cls_dataset(root, "folder", images, rows, ["Effusion", "Nodule"]), labels


def test_folder_cls_scores_each_label_and_refuses_a_class_task(cli, tmp_path) -> None:
    data, labels = _folder(tmp_path / "prep")
    both = int((labels.sum(axis=1) != 1).sum())
    res = cli("finetune", "--task", "covidx-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", tmp_path / "wrong")  # fmt: skip
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"{both} of 120 images have none or several of Effusion, Nodule" in res.stderr
    assert "use --task folder-cls" in res.stderr
    assert cli("finetune", "--task", "rsna-cls", "--data", data, "--checkpoint", "none",
               "--arch", "resnet_tiny", "--out", tmp_path / "w2").exit_code == 2  # fmt: skip
    res = cli("finetune", "--task", "folder-cls", "--data", data, "--checkpoint", "none",
              "--arch", "resnet_tiny", "--out", tmp_path / "ft", "--epochs", "30", "--lr",
              "0.01", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    res = cli("evaluate", "--task", "folder-cls", "--data", data, "--checkpoint",
              tmp_path / "ft", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    m = out["metrics"]
    assert out["metric"] == "macro_auroc"
    per_label = [m["Effusion"], m["Nodule"]]  # one AUROC per label column
    assert m["macro_auroc"] == np.mean(per_label)
    assert m["macro_auroc"] > 0.8  # the labels are readable from the pixels
    assert out["ci95"]["macro_auroc"] is not None
