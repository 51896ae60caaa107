"""The model card of a run started with ``pretrain --init-from``: it said "image encoder init:
random (no image weights)" for an image encoder that started from another run's weights."""

from __future__ import annotations

from cmcgns_cli.card import _image_init
from cmcgns_cli.config import preset


def test_image_init_names_the_init_from_source_when_it_gave_the_image_part() -> None:
    cfg = preset("tiny")  # no --image-weights: random init unless --init-from gave it
    warm = {"init_from": {"path": "/home/me/runs/b1", "parts": ["image", "text"], "sha256": "ab"}}
    assert _image_init(cfg, warm) == "its image part of `--init-from b1` (below)"
    text_only = {"init_from": {"path": "/home/me/runs/b1", "parts": ["text"], "sha256": "ab"}}
    assert _image_init(cfg, text_only) == "random (no image weights)"
    assert _image_init(cfg, {}) == "random (no image weights)"
