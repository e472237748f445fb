import sys
from pathlib import Path

import pytest
import torch

# tiny_target.py is a helper module beside these tests (also runnable as a script).
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs run ~10x slower with 2 threads on a shared 2-core machine; use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
