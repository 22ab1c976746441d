"""Shared pytest fixtures. Test modules import plain helpers from tests/helpers.py."""

import pytest

from fake_telegram import FakeBotAPI
from twin.paths import Home


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test: tiny matmuls split over threads, on a shared 2-core runner, run
    several (up to 40) times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake():
    """The strict local fake of the Telegram Bot API (tests/fake_telegram.py); a module may define its own."""
    with FakeBotAPI() as f:
        yield f


@pytest.fixture
def home(tmp_path):
    """An empty twin home in the test's temp dir; a module may define its own."""
    return Home(tmp_path / "home").ensure()
