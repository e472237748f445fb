"""Fixtures of the serving tests: the shipped model loaded once, servers over it."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import config, serving

from difflab.serve import Plan, Service, load_catalog


@pytest.fixture(scope="session")
def catalog():
    """shapes-base with a DeepCache plan and 16x16 images allowed besides its own 32x32."""
    plans = {"none": Plan(), "deepcache-n2": Plan("deepcache-n2", accel="deepcache:interval=2")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the autouse one-thread fixture
    try:
        return load_catalog("shapes-base", plans=plans, sizes=(16,), precision="fp32")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def serve(catalog):
    """`with serve(**config) as client:` a server over the shared catalog."""
    def start(**changes):
        return serving(Service(catalog, config(**changes)))
    return start

