"""Pareto frontier of quality-versus-cost points with mixed higher/lower-is-better axes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_front(points: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Boolean mask (N,) of the non-dominated rows of `points` (N, M).

    Point a dominates b when a is at least as good as b on every axis and strictly better on
    at least one. Ties: equal points do not dominate each other, so all copies of a
    non-dominated point are on the front; a point tied with a front point on some axes and
    worse on another is not.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(higher_is_better):
        raise ValueError(
            f"points must be (N, {len(higher_is_better)}) for {len(higher_is_better)} axes, "
            f"got shape {p.shape}"
        )
    if np.isnan(p).any():
        raise ValueError("points contain NaN; a NaN cannot be ranked")
    # Flip lower-is-better axes so that larger is better everywhere: (N, M).
    signs = np.where(np.asarray(higher_is_better, dtype=bool), 1.0, -1.0)
    q = p * signs
    # geq[i, j]: i is at least as good as j on every axis; gt[i, j]: strictly better on one.
    geq = (q[:, None, :] >= q[None, :, :]).all(axis=2)
    gt = (q[:, None, :] > q[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)
    return ~dominated
