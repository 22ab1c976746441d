"""Shared pytest fixtures. Test modules import plain helpers from tests/helpers.py."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test: tiny matmuls split over threads, on a shared 2-core runner, run
    several (up to 40) times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
