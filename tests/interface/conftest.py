"""Small prepared datasets shared by the interface tests (written with write_prepared).

Labels are visible in the pixels (a bright band, a brightness level), so even a random-init
encoder's features separate the classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmcgns_cli.data.prepared import write_prepared

SPLIT = np.array(["train"] * 60 + ["validate"] * 20 + ["test"] * 20)
COVIDX = ["normal", "pneumonia", "COVID-19"]
CHEXPERT5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def _manifest(labels: list[list[float]]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(n)],
            "split": SPLIT[:n],
            "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"s{i}" for i in range(n)],
            "view": "PA",
            "labels": labels,
        }
    )


@pytest.fixture(scope="session")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pneumonia is a bright lower half; 100 images of 32 px, about 40 % positive."""
    rng = np.random.default_rng(1)
    y = (rng.random(100) < 0.4).astype(np.float32)
    images = rng.integers(0, 60, size=(100, 32, 32), dtype=np.uint8)
    images[y > 0, 16:] += 150
    return write_prepared(
        tmp_path_factory.mktemp("rsna") / "prep", dataset="rsna",
        manifest=_manifest([[float(v)] for v in y]), images=images,
        extra_meta={"label_names": ["Pneumonia"]},
    )  # fmt: skip


@pytest.fixture(scope="session")
def covidx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class c is a brightness level (dark / mid / bright) plus noise."""
    rng = np.random.default_rng(2)
    cls = rng.integers(0, 3, size=100)
    images = (rng.integers(0, 40, size=(100, 32, 32)) + 90 * cls[:, None, None]).astype(np.uint8)
    manifest = _manifest([np.eye(3, dtype=np.float32)[c].tolist() for c in cls])
    manifest["class_index"] = cls
    return write_prepared(
        tmp_path_factory.mktemp("covidx") / "prep", dataset="covidx", manifest=manifest,
        images=images, extra_meta={"label_names": COVIDX},
    )  # fmt: skip


@pytest.fixture(scope="session")
def chexpert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five competition labels (1 / 0 / -1 uncertain), class c a bright band c."""
    rng = np.random.default_rng(3)
    y = rng.choice([0.0, 1.0, -1.0], p=[0.6, 0.3, 0.1], size=(100, 5)).astype(np.float32)
    y[:, 0] = [1.0, 0.0] * 50  # both classes in every split for the first label
    images = rng.integers(0, 60, size=(100, 40, 40), dtype=np.uint8)
    for c in range(5):
        images[y[:, c] == 1, 8 * c : 8 * c + 8] += 150
    return write_prepared(
        tmp_path_factory.mktemp("chexpert") / "prep", dataset="chexpert",
        manifest=_manifest([row.tolist() for row in y]), images=images,
        extra_meta={"label_names": CHEXPERT5},
    )  # fmt: skip


def tiny_resnet_weights(path: Path) -> dict:
    """Write a torchvision-keyed ``resnet_tiny`` body (ResNet, BasicBlock [1, 1, 1, 1], no
    ``fc``) whose first conv holds a recognisable ramp; return the state dict."""
    import torch
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(123)
    state = {k: v for k, v in ResNet(BasicBlock, [1, 1, 1, 1]).state_dict().items()
             if not k.startswith("fc.")}  # fmt: skip
    shape = state["conv1.weight"].shape
    state["conv1.weight"] = torch.linspace(-0.05, 0.05, state["conv1.weight"].numel()).reshape(
        shape
    )
    torch.save(state, path)
    return state
