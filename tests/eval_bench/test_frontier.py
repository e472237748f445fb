import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.eval.frontier import pareto_front


def brute_force_front(points, higher_is_better):
    """Point i is on the front iff no j is >= on every axis and > on one (signs applied)."""
    signs = [1 if h else -1 for h in higher_is_better]
    q = [[v * s for v, s in zip(p, signs, strict=True)] for p in points]
    front = []
    for i, a in enumerate(q):
        dominated = any(
            all(bj >= aj for aj, bj in zip(a, b, strict=True))
            and any(bj > aj for aj, bj in zip(a, b, strict=True))
            for j, b in enumerate(q)
            if j != i
        )
        front.append(not dominated)
    return front


# Small integer coordinates make ties (equal values on some or all axes) frequent.
points_and_axes = st.integers(1, 3).flatmap(
    lambda m: st.tuples(
        st.lists(st.lists(st.integers(0, 4), min_size=m, max_size=m), min_size=1, max_size=12),
        st.lists(st.booleans(), min_size=m, max_size=m),
    )
)


@settings(max_examples=200, deadline=None)
@given(points_and_axes)
def test_front_matches_brute_force(data):
    points, higher = data
    mask = pareto_front(np.array(points, dtype=float), higher)
    assert mask.tolist() == brute_force_front(points, higher)


def test_ties_are_explicit():
    # quality up, cost down. a and its copy: both on the front; c ties a on cost but is worse.
    pts = np.array([[0.9, 1.0], [0.9, 1.0], [0.8, 1.0], [0.95, 2.0], [0.7, 0.5], [0.6, 0.5]])
    mask = pareto_front(pts, [True, False])
    assert mask.tolist() == [True, True, False, True, True, False]


def test_front_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front(np.array([[np.nan, 1.0]]), [True, False])
    with pytest.raises(ValueError, match="points must be"):
        pareto_front(np.zeros((3, 2)), [True])
