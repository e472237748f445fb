"""Edit tests share one load of the shipped base (a real text model with a tokenizer)."""

import pytest


@pytest.fixture(scope="package")
def base():
    from difflab.runtime import load

    return load("shapes-base")
