"""Shared by the decoding tests: tiny models on one thread."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine run ~10x faster on one thread than contending for two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
