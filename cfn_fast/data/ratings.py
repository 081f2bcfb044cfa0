"""RatingSet: explicit ratings with id maps, the rating scale and optional side information.

Indices are dense ``0..n-1``; ``user_ids[index]`` / ``item_ids[index]`` give the original ids
back.  Id maps are sorted arrays, so original id -> index is a binary search and works for
integer and string ids alike, exactly (:mod:`cfn_fast.data.ids`).  A train/test split shares the
id maps of its parent, so an index means the same user or item in every part.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .ids import as_id_array, lookup
from .labelled import align_rows, check_parallel
from .side_info import as_feature_matrix
from .sparse_input import first_duplicate, stored_entries

__all__ = ["DuplicatePolicy", "RatingSet", "build_csr"]

DuplicatePolicy = str  # "error" | "last" | "mean"


def _check_features(features: Any, ids: np.ndarray, what: str) -> np.ndarray | None:
    """Side information as float32 rows in the order of ``ids``; a pandas DataFrame / Series is
    aligned on its index (see :mod:`cfn_fast.data.labelled`)."""
    if features is None:
        return None
    n_rows = len(ids)
    features = align_rows(features, ids, what, "user" if what.startswith("user") else "item")
    if sp.issparse(features):
        features = features.toarray()
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(f"{what} must have shape ({n_rows}, n_features), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True, eq=False)
class RatingSet:
    """Explicit ratings ``(user, item, rating)`` over a fixed universe of users and items.

    Attributes
    ----------
    user, item : int32 arrays of indices into ``user_ids`` / ``item_ids``.
    rating : float32 array of ratings.
    user_ids, item_ids : sorted arrays of the original ids (index -> id): int64 (uint64 when an id is
        beyond int64), or object arrays of ``str``, never fixed-width (:mod:`cfn_fast.data.ids`).
    scale : ``(low, high)`` of the rating scale (e.g. ``(1, 5)`` for MovieLens).
    user_features, item_features : optional float32 side information, one row per index.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    scale: tuple[float, float]
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    user_feature_names: tuple[str, ...] | None = field(default=None)
    item_feature_names: tuple[str, ...] | None = field(default=None)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, user: Any, item: Any, rating: Any, *, scale: tuple[float, float] | None = None,
                    duplicates: DuplicatePolicy = "error",
                    user_ids: Any = None, item_ids: Any = None,
                    user_features: Any = None, item_features: Any = None) -> RatingSet:
        """Build a RatingSet from parallel arrays of original ids and ratings.

        ``scale`` defaults to the observed ``(min, max)``.  ``duplicates`` decides what a
        repeated ``(user, item)`` pair does: ``"error"`` (default) raises, ``"last"`` keeps
        the last occurrence, ``"mean"`` averages them.  ``user_ids`` / ``item_ids`` may
        name a larger universe than the ratings touch (users with no ratings); side
        information rows then follow that universe's sorted order, or, for a pandas DataFrame /
        Series, are aligned on its index.  Missing ids (None, NaN, pandas NA) are errors; pandas
        Series for ``user``, ``item``, ``rating`` must share one index.
        """
        check_parallel({"user": user, "item": item, "rating": rating})
        user = as_id_array(user, "user ids")
        item = as_id_array(item, "item ids")
        rating = np.asarray(rating)
        if rating.ndim != 1:
            raise ValueError(f"ratings must be one-dimensional, got shape {rating.shape}")
        if not (len(user) == len(item) == len(rating)):
            raise ValueError(f"user, item and rating arrays differ in length: "
                             f"{len(user)}, {len(item)}, {len(rating)}")
        if len(rating) == 0:
            raise ValueError("no ratings: the rating set is empty")
        if rating.dtype.kind not in "iuf":
            raise ValueError(f"ratings must be numbers, got dtype {rating.dtype}")
        rating = rating.astype(np.float32)
        bad = ~np.isfinite(rating)
        if bad.any():
            raise ValueError(f"ratings contain {int(bad.sum())} NaN or infinite value(s), "
                             f"first at position {int(np.flatnonzero(bad)[0])}")
        if scale is None:
            low, high = float(rating.min()), float(rating.max())
            if high == low:  # a constant rating set still needs a scale of positive width
                high = low + 1.0
        else:
            low, high = float(scale[0]), float(scale[1])
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(f"rating scale must be (low, high) with low < high, got {scale}")
        outside = (rating < low) | (rating > high)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise ValueError(f"{int(outside.sum())} rating(s) outside the scale [{low:g}, {high:g}], "
                             f"e.g. {float(rating[first]):g} at position {first}")
        uids = np.unique(user) if user_ids is None else np.unique(as_id_array(user_ids, "user_ids"))
        iids = np.unique(item) if item_ids is None else np.unique(as_id_array(item_ids, "item_ids"))
        u_index = lookup(uids, user, "user")
        i_index = lookup(iids, item, "item")
        u_index, i_index, rating = _resolve_duplicates(u_index, i_index, rating, (uids, iids), duplicates)
        return cls(u_index, i_index, rating, uids, iids, (low, high),
                   _check_features(user_features, uids, "user_features"),
                   _check_features(item_features, iids, "item_features"))

    @classmethod
    def from_dataframe(cls, frame: Any, *, user_col: str = "user", item_col: str = "item",
                       rating_col: str = "rating", **kwargs: Any) -> RatingSet:
        """Build from a pandas DataFrame with user, item and rating columns."""
        missing = [c for c in (user_col, item_col, rating_col) if c not in frame.columns]
        if missing:
            raise ValueError(f"DataFrame lacks column(s) {missing}; it has {list(frame.columns)}")
        return cls.from_arrays(frame[user_col].to_numpy(), frame[item_col].to_numpy(),
                               frame[rating_col].to_numpy(), **kwargs)

    @classmethod
    def from_sparse(cls, matrix: Any, **kwargs: Any) -> RatingSet:
        """Build from a scipy.sparse users x items matrix; stored entries are the ratings.

        Every row and column is part of the universe, even an empty one.  A (row, column) stored twice is
        an error unless ``duplicates="last"`` / ``"mean"`` says how to merge; explicit zeros are errors
        (:mod:`cfn_fast.data.sparse_input`).
        """
        if not sp.issparse(matrix):
            raise TypeError(f"expected a scipy.sparse matrix, got {type(matrix).__name__}")
        merge = kwargs.get("duplicates", "error") != "error"
        coo = stored_entries(matrix, "the sparse matrix", duplicates_allowed=merge,
                             duplicates_hint=", or pass duplicates='last' or duplicates='mean' to merge them")
        kwargs.setdefault("user_ids", np.arange(coo.shape[0]))
        kwargs.setdefault("item_ids", np.arange(coo.shape[1]))
        return cls.from_arrays(coo.row, coo.col, coo.data, **kwargs)

    # ------------------------------------------------------------------ basic properties
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        return len(self.rating)

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        side = []
        if self.user_features is not None:
            side.append(f"user_features={self.user_features.shape[1]}")
        if self.item_features is not None:
            side.append(f"item_features={self.item_features.shape[1]}")
        extra = (", " + ", ".join(side)) if side else ""
        return (f"RatingSet({self.nnz:,} ratings, {self.n_users:,} users x {self.n_items:,} items, "
                f"scale={self.scale}{extra})")

    # ------------------------------------------------------------------ derived views
    def to_csr(self, kind: str = "user") -> sp.csr_matrix:
        """Sparse matrix of ratings: users x items for ``kind="user"``, items x users for ``"item"``."""
        if kind == "user":
            rows, cols, shape = self.user, self.item, (self.n_users, self.n_items)
        elif kind == "item":
            rows, cols, shape = self.item, self.user, (self.n_items, self.n_users)
        else:
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        return build_csr(rows, cols, self.rating, shape)

    def subset(self, mask_or_index: Any) -> RatingSet:
        """The ratings selected by a boolean mask or an index array, same universe and features."""
        sel = np.asarray(mask_or_index)
        return replace(self, user=self.user[sel], item=self.item[sel], rating=self.rating[sel])

    def with_features(self, user_features: Any = None, item_features: Any = None, *,
                      user_feature_names: Any = None, item_feature_names: Any = None) -> RatingSet:
        """A copy with side information attached (``None`` keeps what is there)."""
        uf = self.user_features if user_features is None else \
            _check_features(user_features, self.user_ids, "user_features")
        itf = self.item_features if item_features is None else \
            _check_features(item_features, self.item_ids, "item_features")
        return replace(self, user_features=uf, item_features=itf,
                       user_feature_names=tuple(user_feature_names) if user_feature_names is not None
                       else self.user_feature_names,
                       item_feature_names=tuple(item_feature_names) if item_feature_names is not None
                       else self.item_feature_names)

    def user_index(self, ids: Any, *, missing: str = "error") -> np.ndarray:
        """Indices of original user ids; ``missing="error"`` raises on unknown ids, ``"-1"`` marks them."""
        return lookup(self.user_ids, as_id_array(ids, "user ids"), "user", missing == "error")

    def item_index(self, ids: Any, *, missing: str = "error") -> np.ndarray:
        """Indices of original item ids; ``missing="error"`` raises on unknown ids, ``"-1"`` marks them."""
        return lookup(self.item_ids, as_id_array(ids, "item ids"), "item", missing == "error")

    def validate(self, what: str) -> None:
        """Check the set's internal consistency before an engine sees it (``from_arrays`` guarantees all
        of this; a hand-built one may not): ``ValueError`` / ``TypeError`` naming ``what`` and the problem."""
        user, item, rating = (np.asarray(a) for a in (self.user, self.item, self.rating))
        if not (user.ndim == item.ndim == rating.ndim == 1 and len(user) == len(item) == len(rating)):
            raise ValueError(f"{what}: user, item and rating must be 1-D arrays of one length, got shapes "
                             f"{user.shape}, {item.shape}, {rating.shape}")
        if len(rating) == 0:
            raise ValueError(f"{what} has no ratings")
        if user.dtype.kind not in "iu" or item.dtype.kind not in "iu":
            raise TypeError(f"{what}: user and item must be integer index arrays, got {user.dtype} and {item.dtype}")
        if rating.dtype.kind not in "iuf":
            raise TypeError(f"{what}: ratings must be numbers, got dtype {rating.dtype}")
        for name, index, n in (("user", user, self.n_users), ("item", item, self.n_items)):
            if index.min() < 0 or index.max() >= n:
                raise ValueError(f"{what}: {name} indices must lie in [0, {n}), found {int(index.min())}.."
                                 f"{int(index.max())}")
        low, high = (float(s) for s in self.scale)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"{what}: rating scale must be (low, high) with low < high, got {self.scale}")
        bad = ~np.isfinite(rating)
        if bad.any():
            raise ValueError(f"{what}: ratings contain {int(bad.sum())} NaN or infinite value(s)")
        outside = (rating < low) | (rating > high)
        if outside.any():
            raise ValueError(f"{what}: {int(outside.sum())} rating(s) outside the scale [{low:g}, {high:g}]")
        for name, feats, n in (("user_features", self.user_features, self.n_users),
                               ("item_features", self.item_features, self.n_items)):
            if feats is not None:
                as_feature_matrix(feats, n, f"{what}.{name}")

    def check_validation(self, validation: Any) -> None:
        """A validation set for training on this set: a valid RatingSet (or None) of the same users and items."""
        if validation is None:
            return
        if not isinstance(validation, RatingSet):
            raise TypeError(f"validation must be a RatingSet or None, got {type(validation).__name__}")
        validation.validate("validation")
        if not validation.same_universe(self):
            raise ValueError("validation must share train's users and items (split both from one RatingSet)")

    def same_universe(self, other: RatingSet) -> bool:
        """True when both sets index users and items identically."""
        return (self.n_users == other.n_users and self.n_items == other.n_items
                and np.array_equal(self.user_ids, other.user_ids)
                and np.array_equal(self.item_ids, other.item_ids))


def build_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with sorted column indices that keeps explicit zeros (a stored 0 is a known value)."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    order = _csr_order(rows, cols, shape)
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return sp.csr_matrix((np.asarray(values, dtype=np.float32)[order], np.asarray(cols, dtype=np.int32)[order],
                          indptr), shape=shape)


def _csr_order(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``np.lexsort((cols, rows))``, the entries by row then column, equal pairs in their given order, sorted
    faster: entries already by column (a rating set by user, for I-CFN) need one stable sort by row, a radix
    sort for fewer than 65,537 rows; else one stable sort of the pairs' ranks ``row · n_cols + col``."""
    if len(cols) and np.all(cols[1:] >= cols[:-1]):
        return np.argsort(rows.astype(np.uint16) if shape[0] <= 1 << 16 else rows, kind="stable")
    if shape[0] * shape[1] < 1 << 62:
        return np.argsort(rows.astype(np.int64) * shape[1] + cols, kind="stable")
    return np.lexsort((cols, rows))


def _scalar(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _resolve_duplicates(u: np.ndarray, i: np.ndarray, r: np.ndarray, ids: tuple[np.ndarray, np.ndarray],
                        policy: DuplicatePolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = u.astype(np.int64) * len(ids[1]) + i
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup = sorted_key[1:] == sorted_key[:-1]
    if not dup.any():
        return u, i, r
    if policy == "error":
        first, later, count = first_duplicate(u, i)  # type: ignore[misc]
        user, item = (_scalar(side[index[first]]) for side, index in zip(ids, (u, i)))
        raise ValueError(f"{count} duplicate (user, item) pair(s), first (user {user!r}, item {item!r}) at "
                         f"positions {first} and {later}; pass duplicates='last' or duplicates='mean' to merge them")
    if policy not in ("last", "mean"):
        raise ValueError(f"duplicates must be 'error', 'last' or 'mean', got {policy!r}")
    starts = np.flatnonzero(np.r_[True, ~dup])
    if policy == "last":
        ends = np.r_[starts[1:], len(order)] - 1
        keep = np.sort(order[ends])
        return u[keep], i[keep], r[keep]
    sums = np.add.reduceat(r[order].astype(np.float64), starts)
    counts = np.diff(np.r_[starts, len(order)])
    keep = order[starts]
    out_r = (sums / counts).astype(np.float32)
    back = np.argsort(keep)
    return u[keep][back], i[keep][back], out_r[back]
