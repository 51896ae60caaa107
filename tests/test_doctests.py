"""The usage examples in the loss modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

LOSS_MODULES = (
    "cmcgns_cli.losses.global_loss",
    "cmcgns_cli.losses.kmeans",
    "cmcgns_cli.losses.local_image",
    "cmcgns_cli.losses.local_text",
    "cmcgns_cli.losses.recon",
)


@pytest.mark.parametrize("name", LOSS_MODULES)
def test_loss_module_examples(name):
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.attempted > 0, f"{name} has no usage example"
    assert result.failed == 0
