"""The small-case proof: a tiny CM-CGNS pretrain makes a better linear-probe encoder.

A drawn world (tests/train/worlds.py) is used for pretraining; a labelled set drawn the same
way (labels = which of the five findings are drawn) is probed at 10% labels through the
same finetune/evaluate code as the CLI. The larger run on the synthetic chest X-ray world,
with the ConVIRT-style ablation beside it, is bench/linear_probe_proof.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cmcgns_cli.config import preset
from cmcgns_cli.data.prepared import write_prepared
from cmcgns_cli.downstream.classification import evaluate_cls, finetune_cls
from cmcgns_cli.train.run import run_pretrain
from tests.train.worlds import FINDINGS, _draw, make_world

NAMES = ["Pleural Effusion", "Cardiomegaly", "Consolidation", "Support Devices", "Pneumothorax"]


def _labelled_world(root: Path, n: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    present = [[f for f in range(len(FINDINGS)) if rng.random() < 0.35] for _ in range(n)]
    images = np.stack([_draw(rng, size, p) for p in present])
    labels = np.zeros((n, len(FINDINGS)), np.float32)
    for i, p in enumerate(present):
        labels[i, p] = 1.0
    u = np.arange(n) / n
    split = np.where(u < 0.6, "train", np.where(u < 0.7, "validate", "test"))
    manifest = pd.DataFrame(
        {
            "id": [f"l{i}" for i in range(n)],
            "split": split,
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"s{i}" for i in range(n)],
            "view": "PA",
            "labels": [row.tolist() for row in labels],
        }
    )
    return write_prepared(
        root, dataset="chexpert", manifest=manifest, images=images,
        extra_meta={"label_names": NAMES},
    )  # fmt: skip


def _probe(data: Path, checkpoint: str, out: Path) -> float:
    dev = torch.device("cpu")
    finetune_cls(
        task_name="chexpert-cls", data=data, checkpoint=checkpoint, out=out, fraction=0.1,
        full=False, arch="resnet_tiny", image_weights=None, epochs=100, lr=None,
        batch_size=None, seed=0, device=dev,
    )  # fmt: skip
    return evaluate_cls("chexpert-cls", data, out, dev)["value"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_pretrain_beats_random_init_on_linear_probe(tmp_path: Path) -> None:
    pairs = make_world(tmp_path / "pairs", n=480, size=64, seed=1, splits=(0.8, 0.1))
    cfg = preset("tiny")
    cfg.data.image_size = cfg.data.crop_size = 64
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = 4, 1
    run_pretrain(cfg, data=pairs, out=tmp_path / "run", resume=None, nproc=1, as_json=True)
    probe_data = _labelled_world(tmp_path / "labelled", n=600, size=64, seed=7)
    pretrained = _probe(probe_data, str(tmp_path / "run"), tmp_path / "ft-pre")
    random_init = _probe(probe_data, "none", tmp_path / "ft-rand")
    print(f"macro AUROC @10%: pretrained {pretrained:.3f} random init {random_init:.3f}")
    assert pretrained >= random_init + 0.05
