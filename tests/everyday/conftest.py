"""A small finetuned chexpert-like head shared by the everyday-use tests."""

from __future__ import annotations

import pytest

from tests.downstream.test_classification_cli import _write_chexpert_like


@pytest.fixture(scope="session")
def head(tmp_path_factory):
    from cmcgns_cli.downstream.run import run_finetune

    base = tmp_path_factory.mktemp("heads")
    data = _write_chexpert_like(base / "prep")
    run_finetune(
        task="chexpert-cls", data=data, checkpoint="none", out=base / "ft", fraction=1.0,
        full=False, arch="resnet_tiny", image_weights=None, epochs=1, lr=1e-4, batch_size=None,
        device="cpu", seed=0, workers=0, as_json=True,
    )  # fmt: skip
    return data, base / "ft"
