"""Folding a new row into a fitted model without retraining: a new user of a U-CFN, a new item of an I-CFN.

The row is preprocessed exactly as in training (scaled, centred by its own mean by the rule of
:meth:`~cfn_fast.preprocessing.Preprocessing.row_mean`), fed through the network and the output
inverted.  A new user of an I-CFN (or a new item of a U-CFN) is an *input dimension* of the autoencoder
and cannot be added without retraining: :class:`FoldInError` says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import interop
from ..data.labelled import align_vector, check_parallel
from ..data.ratings import RatingSet, build_csr
from ..data.sparse_input import first_duplicate, stored_entries
from .ranking import DEFAULT_MIN_SUPPORT, check_min_support, top_n
from .runtime import Runtime
from .scoring import ids_to_index, input_mean_rating, support_of

__all__ = ["FoldIn", "FoldInError", "fold_in", "feature_names"]


#: what to do about explicit zeros in a sparse fold-in row (the end of the error's sentence)
ZEROS_IN_FOLD_IN = ("drop them with row.eliminate_zeros(), or, if 0 is a rating, pass ids and ratings (or a "
                    "{id: rating} dict)")


class FoldInError(ValueError):
    """The requested fold-in is impossible for this kind of model (e.g. a new user in I-CFN)."""


def fold_in(rt: Runtime, ids: Any, ratings: Any, features: Any, new: str | None,
            feature_names: Any = None) -> "FoldIn":
    """See :meth:`cfn_fast.CFN.fold_in`; ``feature_names``: the names a labelled ``features`` is aligned
    on (the model's sample-side feature names, when it uses side information)."""
    if new is not None and new not in ("user", "item"):
        raise ValueError(f"new must be 'user' or 'item', got {new!r}")
    rt.require_whole("fold_in needs the whole network")
    if rt.fitted.blend is not None:
        return fold_in_blend(rt, ids, ratings, features, new or "user", feature_names)
    net = rt.network
    sample_side, other_side = net.sample_side, net.input_side
    if new is not None and new != sample_side:
        model = "an I-CFN" if net.kind == "item" else "a U-CFN"
        raise FoldInError(
            f"{model} cannot fold in a new {new}: {new}s are the input dimensions of its "
            f"{sample_side} autoencoder, so a new {new} needs retraining "
            f"({'a U-CFN' if new == 'user' else 'an I-CFN'} model folds in new {new}s)")
    index, values = new_row(rt, ids, ratings, other_side)
    return network_fold_in(rt, index, values, features, feature_names)


def network_fold_in(rt: Runtime, index: np.ndarray, values: np.ndarray, features: Any,
                    feature_names: Any) -> "FoldIn":
    """A new sample of one network, its row already checked by :func:`new_row`: ratings ``values`` of the
    inputs ``index``, fed through the network and inverted."""
    net = rt.network
    sample_side, other_side = net.sample_side, net.input_side
    pre = net.preprocessing
    side = fold_in_features(rt, features, feature_names)
    n_inputs = net.n_inputs
    unit = (values.astype(np.float64) - pre.mid) / pre.half_range
    mean = pre.row_mean(unit, index)
    if len(values) == 0 and side is None:
        predicted = input_mean_rating(rt, np.arange(n_inputs)).astype(np.float64)
        unclipped = predicted
    else:
        centred = pre.centre(unit, np.full(len(unit), mean, dtype=np.float32), index)
        row = build_csr(np.zeros(len(index), dtype=np.int64), index.astype(np.int64), centred, (1, n_inputs))
        with rt.memory_guard("folding in"):
            out = rt.engine.decode(rt.engine.encode(row, side), side)
        predicted, unclipped = pre.invert(np.asarray(out)[0], pre.unit_offsets(np.array([mean]))[0])
    train = rt.fitted.train
    other_ids = train.item_ids if other_side == "item" else train.user_ids
    return FoldIn(train, sample_side, other_ids, predicted, index.astype(np.int64), float(mean),
                  unclipped=unclipped, support=support_of(rt, other_side))


def feature_names(rt: Runtime, new: str | None, use_side_info: bool) -> Any:
    """The feature names a new row's labelled ``features`` are aligned on: those of the side folded in (by
    default a model's sample side; a blend's new user)."""
    side = new if new in ("user", "item") else rt.fitted.kind if rt.fitted.blend is None else "user"
    train = rt.fitted.train
    return (train.user_feature_names if side == "user" else train.item_feature_names) if use_side_info else None


def fold_in_blend(rt: Runtime, ids: Any, ratings: Any, features: Any, new: str, feature_names: Any) -> "FoldIn":
    """A new user (item) of a blend: the bias model's row, given the new offset its ratings show, blended
    with the folded-in rows of the members that can fold one in (``Blend.fold_in_weights``)."""
    blend, train = rt.fitted.blend, rt.fitted.train
    other_side = "item" if new == "user" else "user"
    index, values = new_row(rt, ids, ratings, other_side)
    weights = blend.fold_in_weights[new]
    folds = [network_fold_in(member, index, values, features, feature_names) if weight > 0 else None
             for member, weight in zip(rt.members, weights)]   # members of kind ``new``: the row checked once
    offset = blend.bias.offset_of_new(new, index, values)
    base = np.clip(blend.bias.row_of_new(new, offset), blend.bias.low, blend.bias.high)
    predicted, unclipped = blend.combine(new, base, [None if f is None else f.ratings for f in folds],
                                         lambda f: f.row_of_new(base, new, index, values))
    other_ids = train.item_ids if other_side == "item" else train.user_ids
    low, high = blend.bias.low, blend.bias.high
    unit_mean = (blend.bias.mean + offset - 0.5 * (low + high)) / (0.5 * (high - low))
    return FoldIn(train, new, other_ids, predicted, index.astype(np.int64), unit_mean, unclipped=unclipped,
                  support=support_of(rt, other_side))


def new_row(rt: Runtime, ids: Any, ratings: Any, other_side: str) -> tuple[np.ndarray, np.ndarray]:
    """The new row's ``(indices of the other side, ratings)``, checked: known ids, each once, finite ratings
    on the scale."""
    if sp.issparse(ids):
        index, values = fold_in_row(rt, ids, ratings, other_side)
    else:
        ids, values = fold_in_ratings(ids, ratings)
        index = ids_to_index(rt, ids, other_side) if len(ids) else np.zeros(0, dtype=np.int32)
        repeated = first_duplicate(index, np.zeros(len(index)))
        if repeated is not None:
            first, later, _ = repeated
            shown = ids[first].item() if isinstance(ids[first], np.generic) else ids[first]
            raise ValueError(f"fold-in ratings name {other_side} id {shown!r} more than once (positions {first} "
                             f"and {later}); give one rating per {other_side}")
    low, high = rt.fitted.train.scale
    if len(values):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"fold-in ratings contain {int(bad.sum())} NaN or infinite value(s)")
        outside = (values < low) | (values > high)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} fold-in rating(s) outside the scale "
                             f"[{low:g}, {high:g}], e.g. {float(values[outside][0]):g}")
    return index, values


def fold_in_row(rt: Runtime, row: Any, ratings: Any, other_side: str) -> tuple[np.ndarray, np.ndarray]:
    """``(indices of the other side, ratings)`` of a new row given as a 1 x n sparse matrix (columns in training
    index order, as ``encode``'s rows); duplicates and explicit zeros are errors
    (:mod:`~cfn_fast.data.sparse_input`)."""
    train = rt.fitted.train
    n_other = train.n_items if other_side == "item" else train.n_users
    if ratings is not None:
        raise ValueError("a sparse fold-in row holds its ratings: pass it alone, without ratings")
    if row.shape != (1, n_other):
        raise ValueError(f"a sparse fold-in row must have shape (1, {n_other}) (the model's {other_side}s "
                         f"in training index order), got {row.shape}")
    if row.dtype.kind not in "iuf":
        raise ValueError(f"fold-in ratings must be numbers, got dtype {row.dtype}")
    coo = stored_entries(row, "the fold-in row", zeros_hint=ZEROS_IN_FOLD_IN)
    order = np.argsort(coo.col, kind="stable")
    return coo.col[order].astype(np.int32), coo.data[order].astype(np.float64)


def fold_in_features(rt: Runtime, features: Any, names: Any) -> np.ndarray | None:
    """The new row's side information as a (1, side_dim) float32 array (``None`` without side information)."""
    net = rt.network
    sample_side = net.sample_side
    if net.side is None:
        if features is not None:
            raise ValueError(f"this model was trained without {sample_side} side information; "
                             f"fold in without features")
        return None
    dim = net.side_dim
    if features is None:
        raise ValueError(f"this model uses {dim} {sample_side} features: pass features= "
                         f"(a vector of {dim} numbers) for the new {sample_side}")
    features = interop.to_host(features)
    features = align_vector(features, names, "fold-in features")
    if sp.issparse(features):
        features = features.toarray()
    try:
        arr = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"fold-in features must be {dim} numbers, got {features!r}") from None
    arr = arr.reshape(1, -1) if arr.ndim <= 1 or (arr.ndim == 2 and arr.shape[0] == 1) else arr
    if arr.shape != (1, dim):
        raise ValueError(f"fold-in features must have {dim} values (the model's {sample_side} features), "
                         f"got shape {np.shape(features)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("fold-in features contain NaN or infinite values")
    return np.ascontiguousarray(arr)


def fold_in_ratings(ids: Any, ratings: Any) -> tuple[np.ndarray, np.ndarray]:
    """The new row's ``(ids, ratings)`` from two sequences, one ``{id: rating}`` dict or a pandas Series."""
    if ratings is None and hasattr(ids, "index") and hasattr(ids, "to_numpy") and not hasattr(ids, "columns"):
        ids = dict(zip(ids.index, ids.to_numpy()))  # a pandas Series of ratings indexed by id
    check_parallel({"fold-in ids": ids, "fold-in ratings": ratings})
    if isinstance(ids, dict):
        if ratings is not None:
            raise ValueError("pass fold-in ratings either as a {id: rating} dict or as ids and ratings, not both")
        ids, ratings = list(ids.keys()), list(ids.values())
    if ids is None:
        ids = []
    if ratings is None:
        ratings = []
    ids, ratings = interop.to_host(ids), interop.to_host(ratings)
    ids_arr = np.asarray(ids)
    values = np.asarray(ratings)
    if ids_arr.ndim != 1 or values.ndim != 1:
        raise ValueError(f"fold-in ids and ratings must be one-dimensional, got shapes {ids_arr.shape} "
                         f"and {values.shape}")
    if len(ids_arr) != len(values):
        raise ValueError(f"fold-in ids and ratings differ in length: {len(ids_arr)} and {len(values)}")
    if values.size and values.dtype.kind not in "iuf":
        raise ValueError(f"fold-in ratings must be numbers, got dtype {values.dtype}")
    return ids_arr, values.astype(np.float64)


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

    def __init__(self, train: RatingSet, new: str, ids: np.ndarray, ratings: np.ndarray, rated: np.ndarray,
                 mean: float, unclipped: np.ndarray | None = None, support: np.ndarray | None = None) -> None:
        self.train = train    # the model's training set: the ids of the other side
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
        train = self.train
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
            train = self.train
            index, size = (train.item, train.n_items) if self.other == "item" else (train.user, train.n_users)
            support = np.bincount(index, minlength=size)
        best = top_n(self.ratings, int(n), self.rated if exclude_seen else None, unclipped=self.unclipped,
                     support=support, min_support=min_support)
        return self.ids[best], self.ratings[best]

    def __repr__(self) -> str:
        return (f"FoldIn(new {self.new}, {len(self.rated)} rating(s), predictions over {len(self.ids):,} "
                f"{self.other}s)")
