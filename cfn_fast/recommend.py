"""Top-n ranking and fold-in results for :class:`cfn_fast.CFN`.

:func:`top_n` is the one ranking rule used everywhere (``CFN.recommend``,
``CFN.recommend_batch``, ``FoldIn.recommend``): highest score first, ties broken by the
unclipped score and then by index order, excluded entries (seen, or below ``min_support``
training ratings) never returned.

``DEFAULT_MIN_SUPPORT`` is the default minimum number of training ratings of a recommended
item (or user, for the lists of an I-CFN fold-in).  Items with one or two training ratings are
centred by their own mean and reconstructed from almost nothing: on ML-1M with the default
I-CFN (500 users) they took 57% of the top-10 slots, most of them tied at the clipped maximum,
and precision@10 on held-out ratings >= 4 was 0.028.  Requiring 10 training ratings removes
them and raises precision@10 to 0.073; 20 or 50 add almost nothing (0.0736, 0.0738) while
hiding more of the catalogue, 5 stops short (0.063).  U-CFN lists are unaffected on ML-1M.
Measured by ``bench/min_support_ml1m.py`` (table in ``bench/README.md``).  :class:`FoldIn` holds the predictions of a
row folded into a trained model (``CFN.fold_in``).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .data.ratings import RatingSet


class _FittedModel(Protocol):   # what FoldIn needs of a fitted CFN (no import of the model module)
    train_: RatingSet

__all__ = ["top_n", "FoldIn", "DEFAULT_MIN_SUPPORT", "check_min_support"]

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
    support : training ratings of each id in ``ids`` (what ``min_support`` filters on).
    mean : the row's centring mean in unit scale (the global mean when it had no ratings).
    """

    def __init__(self, model: _FittedModel, new: str, ids: np.ndarray, ratings: np.ndarray, rated: np.ndarray,
                 mean: float, unclipped: np.ndarray | None = None, support: np.ndarray | None = None) -> None:
        self.model = model
        self.new = new
        self.ids = ids
        self.ratings = ratings
        self.rated = rated
        self.mean = mean
        self.unclipped = ratings if unclipped is None else unclipped
        self.support = support   # training ratings of each id in ``ids`` (taken at fold-in time)

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

    def recommend(self, n: int = 10, exclude_seen: bool = True, *,
                  min_support: int = DEFAULT_MIN_SUPPORT) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` ids of the other side for the folded-in row, ``(ids, scores)`` best first
        (items for a new user; for a new item, the users most likely to rate it highly).  With
        ``exclude_seen`` the ids rated at fold-in are skipped; ids with fewer than ``min_support``
        training ratings are never returned (``0`` keeps them all)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        min_support = check_min_support(min_support)
        support = self.support
        if support is None and min_support:
            train = self.model.train_
            index, size = (train.item, train.n_items) if self.other == "item" else (train.user, train.n_users)
            support = np.bincount(index, minlength=size)
        best = top_n(self.ratings, int(n), self.rated if exclude_seen else None, unclipped=self.unclipped,
                     support=support, min_support=min_support)
        return self.ids[best], self.ratings[best]

    def __repr__(self) -> str:
        return (f"FoldIn(new {self.new}, {len(self.rated)} rating(s), predictions over {len(self.ids):,} "
                f"{self.other}s)")
