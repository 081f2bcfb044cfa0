"""Top-n ranking and fold-in results for :class:`cfn_fast.CFN`.

:func:`top_n` is the one ranking rule used everywhere (``CFN.recommend``,
``CFN.recommend_batch``, ``FoldIn.recommend``): highest score first, ties broken by
index order, excluded entries never returned.  :class:`FoldIn` holds the predictions of a
row folded into a trained model (``CFN.fold_in``).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .data.ratings import RatingSet


class _FittedModel(Protocol):   # what FoldIn needs of a fitted CFN (no import of the model module)
    train_: RatingSet

__all__ = ["top_n", "FoldIn"]


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` (best first; ties by ascending index), skipping the
    indices in ``exclude``.  Returns fewer than ``n`` when fewer candidates remain."""
    scores = np.asarray(scores, dtype=np.float64)
    allowed = np.ones(len(scores), dtype=bool)
    if exclude is not None and len(exclude):
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    candidates = np.flatnonzero(allowed)
    k = min(int(n), len(candidates))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    values = scores[candidates]
    if k < len(candidates):
        threshold = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest
        keep = values >= threshold                                          # all ties at the boundary
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order].astype(np.int64)


class FoldIn:
    """Predictions for one row folded into a trained :class:`~cfn_fast.CFN` without retraining.

    For a U-CFN the row is a new *user* and predictions are over the model's items; for an
    I-CFN it is a new *item* and predictions are over the model's users.

    Attributes
    ----------
    new : ``"user"`` or ``"item"``, what was folded in.
    ids : the ids of the other side (items for a new user, users for a new item).
    ratings : predicted rating for every id in ``ids`` (rating units, clipped to the scale).
    rated : indices into ``ids`` of the ratings given at fold-in.
    mean : the row's centring mean in unit scale (the global mean when it had no ratings).
    """

    def __init__(self, model: _FittedModel, new: str, ids: np.ndarray, ratings: np.ndarray, rated: np.ndarray,
                 mean: float) -> None:
        self.model = model
        self.new = new
        self.ids = ids
        self.ratings = ratings
        self.rated = rated
        self.mean = mean

    @property
    def other(self) -> str:
        return "item" if self.new == "user" else "user"

    def _index(self, ids: Any) -> np.ndarray:
        train = self.model.train_
        lookup = train.item_index if self.other == "item" else train.user_index
        try:
            return lookup(ids)
        except KeyError as exc:
            text = exc.args[0] if exc.args else str(exc)
            raise KeyError(f"{text} (a new {self.other} is an input dimension of the model and needs "
                           f"retraining)") from None

    def predict(self, ids: Any) -> np.ndarray:
        """Predicted ratings of the folded-in row for ``ids`` of the other side."""
        return self.ratings[self._index(ids)]

    __call__ = predict

    def recommend(self, n: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` ids of the other side for the folded-in row, ``(ids, scores)`` best first
        (items for a new user; for a new item, the users most likely to rate it highly).  With
        ``exclude_seen`` the ids rated at fold-in are skipped."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        best = top_n(self.ratings, int(n), self.rated if exclude_seen else None)
        return self.ids[best], self.ratings[best]

    def __repr__(self) -> str:
        return (f"FoldIn(new {self.new}, {len(self.rated)} rating(s), predictions over {len(self.ids):,} "
                f"{self.other}s)")
