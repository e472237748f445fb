"""Measurement operators: adjoint by the dot-product test, A A_pinv A = A."""

import pytest
import torch

from difflab.config import ConfigError
from difflab.edit.operators import make_operator

SHAPE = (3, 16, 16)
PROBLEMS = ["inpaint", "sr2", "sr4", "deblur", "cs:0.25"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_adjoint_dot_product(problem):
    op = make_operator(problem, SHAPE, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *SHAPE, generator=g, dtype=torch.float64)
    y = torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
    lhs = (op.A(x.float()).double() * y).sum()
    rhs = (x * op.A_T(y.float()).double()).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_pseudo_inverse(problem):
    op = make_operator(problem, SHAPE, seed=1)
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    Ax = op.A(x)
    assert torch.allclose(op.A(op.A_pinv(Ax)), Ax, atol=1e-4)
    # a non-trivial operator: it loses information
    assert (op.A_pinv(Ax) - x).abs().max() > 1e-2


def test_bad_problem():
    with pytest.raises(ConfigError, match="unknown problem"):
        make_operator("sr3", SHAPE)
    with pytest.raises(ConfigError, match="ratio"):
        make_operator("cs:2", SHAPE)
    with pytest.raises(ConfigError, match="ratio"):
        make_operator("cs:x", SHAPE)
