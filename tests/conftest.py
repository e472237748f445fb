"""Shared test setup."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests run tiny models, where intra-op threads only add overhead (and spin-wait on a
    shared 2-core CPU: up to 17x slower measured); subprocess tests set their own threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
