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
import torch

from cmcgns_cli.data.prepared import write_prepared
from cmcgns_cli.downstream.classification import evaluate_cls, finetune_cls
from tests.train.worlds import FINDINGS, _draw

NAMES = ["Pleural Effusion", "Cardiomegaly", "Consolidation", "Support Devices", "Pneumothorax"]


def _labelled_world(root: Path, dataset: str, n: int, size: int, seed: int) -> Path:
    """Images drawn like the pretraining world; labels = findings drawn; the effusion
    (finding 0, a lower-right rectangle) is also given as a box and a mask."""
    rng = np.random.default_rng(seed)
    present = [[f for f in range(len(FINDINGS)) if rng.random() < 0.35] for _ in range(n)]
    images = np.stack([_draw(rng, size, p) for p in present])
    labels = np.zeros((n, len(FINDINGS)), np.float32)
    masks = np.zeros_like(images)
    box = [0.55 * size, 0.68 * size, 0.45 * size, 0.32 * size]
    boxes = []
    for i, p in enumerate(present):
        labels[i, p] = 1.0
        if 0 in p:
            x, y = int(np.ceil(box[0])), int(np.ceil(box[1]))
            masks[i, y:, x:] = 1
        boxes.append([box] if 0 in p else [])
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
            "boxes": boxes,
            "box_labels": [["effusion"] * len(b) for b in boxes],
        }
    )
    return write_prepared(
        root, dataset=dataset, manifest=manifest, images=images, masks=masks,
        extra_meta={"label_names": NAMES},
    )  # fmt: skip


def test_tiny_pretrain_beats_random_init_on_linear_probe(trained, tmp_path: Path) -> None:
    # the session's shared tiny pretrain (tests/embed/shared.py: the same drawn world, 400
    # studies, 4 + 1 epochs), so this test pays only for its two probes
    _, pretrained_run = trained
    data = _labelled_world(tmp_path / "labelled", "chexpert", n=600, size=64, seed=7)
    dev = torch.device("cpu")
    scores = {}
    for name, ckpt in (("pretrained", str(pretrained_run)), ("random", "none")):
        finetune_cls(
            task_name="chexpert-cls", data=data, checkpoint=ckpt, out=tmp_path / name,
            fraction=0.1, full=False, arch="resnet_tiny", image_weights=None, epochs=100,
            lr=None, batch_size=None, seed=0, device=dev,
        )  # fmt: skip
        scores[name] = evaluate_cls("chexpert-cls", data, tmp_path / name, dev)["value"]
    print(f"macro AUROC @10%: pretrained {scores['pretrained']:.3f} random {scores['random']:.3f}")
    assert scores["pretrained"] >= scores["random"] + 0.05
