"""The one ranking rule: :func:`top_n`, used by ``CFN.recommend``, ``CFN.recommend_batch`` and
``FoldIn.recommend`` — highest score first, ties broken by the unclipped score and then by index order,
excluded entries (seen, or below ``min_support`` training ratings) never returned.

``DEFAULT_MIN_SUPPORT`` is the default minimum number of training ratings of a recommended item (or
user, for the lists of an I-CFN fold-in).  Why: an item with one or two training ratings is centred by
its own mean and reconstructed from almost nothing, so such items fill top-n lists at the clipped
maximum; the measurements behind the value (``bench/min_support_ml1m.py``) are in ``bench/README.md``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["top_n", "DEFAULT_MIN_SUPPORT", "check_min_support"]

#: Default ``min_support`` of every recommendation call (see the module docstring).
DEFAULT_MIN_SUPPORT = 10


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray | None = None, *,
          unclipped: np.ndarray | None = None, support: np.ndarray | None = None,
          min_support: int = 0) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` (best first), skipping the indices in ``exclude`` and,
    when ``support`` (training ratings per candidate) is given, candidates with fewer than
    ``min_support`` of them.  Ties are broken by ``unclipped`` (the scores before clipping to the
    rating scale, higher first) and then by ascending index.  Returns fewer than ``n`` when fewer
    candidates remain."""
    scores = np.asarray(scores, dtype=np.float64)
    allowed = np.ones(len(scores), dtype=bool)
    if exclude is not None and len(exclude):
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    if support is not None and min_support > 0:
        allowed &= np.asarray(support) >= min_support
    candidates = np.flatnonzero(allowed)
    k = min(int(n), len(candidates))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    values = scores[candidates]
    if k < len(candidates):
        threshold = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest
        keep = values >= threshold                                          # all ties at the boundary
        candidates, values = candidates[keep], values[keep]
    second = np.zeros(len(candidates)) if unclipped is None else \
        np.asarray(unclipped, dtype=np.float64)[candidates]
    order = np.lexsort((candidates, -second, -values))[:k]
    return candidates[order].astype(np.int64)


def check_min_support(min_support: Any) -> int:
    """``min_support`` as an int >= 0 (``ValueError`` naming it otherwise)."""
    if isinstance(min_support, (bool, np.bool_)) or not isinstance(min_support, (int, np.integer)) \
            or min_support < 0:
        raise ValueError(f"min_support must be an integer >= 0, got {min_support!r}")
    return int(min_support)
