import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # accel_helpers.py beside these tests


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (two contend on the shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
