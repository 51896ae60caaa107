from __future__ import annotations

import pytest
import torch

from tests.embed.shared import shared_world


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return shared_world(tmp_path_factory)
