"""Side-information helpers: one-hot / multi-hot encodings, count matrices and their low-rank embeddings.

Every helper returns float32 arrays (what :class:`~cfn_fast.data.ratings.RatingSet` stores) and,
where columns have meaning, a tuple of column names so a model's input stays interpretable.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg

from ..interop import to_host
from .labelled import align_rows

__all__ = ["build_count_matrix", "low_rank_embedding", "multi_hot", "one_hot", "sample_side_features"]

# Below this many cells a dense SVD is cheaper and exact, and ARPACK's k < min(shape) limit
# does not cut the rank.
_DENSE_SVD_CELLS = 4_000_000


def _is_missing(value: Any) -> bool:
    """True for None and float NaN (pandas' marker for an empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def one_hot(values: Iterable[Any], categories: Sequence[Any] | None = None, *, prefix: str = "",
            unknown: str = "error") -> tuple[np.ndarray, tuple[str, ...]]:
    """One column per category, a 1 where ``values[row]`` equals it.

    ``categories`` fixes the columns and their order (default: the sorted distinct values).
    A value outside ``categories`` raises ``ValueError`` (``unknown="error"``) or gives an
    all-zero row (``unknown="ignore"``).  Column names are ``prefix + str(category)``.
    """
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    vals = list(values)
    if categories is None:
        present = [v for v in vals if not _is_missing(v)]
        categories = sorted(set(present), key=lambda v: (str(type(v)), v))
    cats = list(categories)
    position = {c: j for j, c in enumerate(cats)}
    if len(position) != len(cats):
        raise ValueError(f"categories contain duplicates: {cats}")
    out = np.zeros((len(vals), len(cats)), dtype=np.float32)
    bad = []
    for row, v in enumerate(vals):
        j = position.get(v)
        if j is None:
            bad.append(v)
        else:
            out[row, j] = 1.0
    if bad and unknown == "error":
        raise ValueError(f"{len(bad)} value(s) outside the categories, e.g. {bad[:5]}; "
                         f"categories are {cats}")
    return out, tuple(f"{prefix}{c}" for c in cats)


def _labels(entry: Any, sep: str) -> list[str]:
    """The labels of one multi-hot entry: a ``sep``-joined string, a list of labels, or empty."""
    if _is_missing(entry):
        return []
    if isinstance(entry, str):
        return [s.strip() for s in entry.split(sep) if s.strip()]
    return [str(s) for s in entry]


def multi_hot(entries: Iterable[Any], sep: str = "|", *, categories: Sequence[str] | None = None,
              prefix: str = "", unknown: str = "error") -> tuple[np.ndarray, tuple[str, ...]]:
    """Several 1s per row: ``entries`` are label lists or ``"a|b"`` strings (``sep``-joined).

    ``categories`` fixes the columns (default: sorted distinct labels).  Empty strings, ``None``
    and NaN give all-zero rows.  A label outside ``categories`` raises ``ValueError`` unless
    ``unknown="ignore"``.
    """
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    rows = [_labels(e, sep) for e in entries]
    cats = sorted({lab for r in rows for lab in r}) if categories is None else [str(c) for c in categories]
    position = {c: j for j, c in enumerate(cats)}
    out = np.zeros((len(rows), len(cats)), dtype=np.float32)
    bad = []
    for i, labels in enumerate(rows):
        for lab in labels:
            j = position.get(lab)
            if j is None:
                bad.append(lab)
            else:
                out[i, j] = 1.0
    if bad and unknown == "error":
        raise ValueError(f"{len(bad)} label(s) outside the categories, e.g. {sorted(set(bad))[:5]}; "
                         f"categories are {cats}")
    return out, tuple(f"{prefix}{c}" for c in cats)


def build_count_matrix(row_index: Any, col_ids: Any, n_rows: int | None = None
                       ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Count how often each (row, column label) pair occurs: e.g. tags per movie, friends per user.

    ``row_index`` are dense row indices (``-1`` or other negatives, as
    ``RatingSet.item_index(..., missing="-1")`` gives for unknown ids, are dropped);
    ``col_ids`` are arbitrary labels, mapped to columns in sorted order.  Returns the
    ``(n_rows, n_labels)`` float32 CSR matrix and the sorted label array.
    """
    rows = np.asarray(row_index).astype(np.int64, copy=False)
    cols = np.asarray(col_ids)
    if rows.ndim != 1 or cols.ndim != 1 or len(rows) != len(cols):
        raise ValueError(f"row_index and col_ids must be 1-D and equally long, got shapes "
                         f"{rows.shape} and {cols.shape}")
    keep = rows >= 0
    rows, cols = rows[keep], cols[keep]
    if n_rows is None:
        n_rows = int(rows.max()) + 1 if len(rows) else 0
    if len(rows) and rows.max() >= n_rows:
        raise ValueError(f"row index {int(rows.max())} out of range for n_rows={n_rows}")
    labels, col_index = np.unique(cols, return_inverse=True)
    data = np.ones(len(rows), dtype=np.float32)
    # COO -> CSR sums duplicate (row, col) entries, which is exactly the count we want.
    m = sp.coo_matrix((data, (rows, col_index.ravel())), shape=(n_rows, len(labels))).tocsr()
    m.sum_duplicates()
    return m, labels


def _fix_signs(u: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-magnitude entry is positive: SVD signs are arbitrary."""
    if u.size == 0:
        return u
    idx = np.argmax(np.abs(u), axis=0)
    signs = np.sign(u[idx, np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return u * signs


def low_rank_embedding(matrix: Any, rank: int = 50) -> np.ndarray:
    """Row embedding ``P[:, :k] @ diag(sqrt(d[:k]))`` of a truncated SVD ``matrix ~ P diag(d) Q^T``.

    Singular values are sorted in decreasing order and each column's sign is fixed (largest
    |entry| positive), so the result is deterministic.  ``k = min(rank, min(shape))``: large
    matrices use ARPACK (``scipy.sparse.linalg.svds``, which needs ``k <= min(shape) - 1``, so
    ``k`` is clipped there), small ones an exact dense SVD.  Returns float32 ``(n_rows, k)``.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    m = sp.csr_matrix(matrix, dtype=np.float64) if sp.issparse(matrix) else \
        sp.csr_matrix(np.asarray(matrix, dtype=np.float64))
    n_rows, n_cols = m.shape
    small = min(n_rows, n_cols)
    if small == 0 or m.nnz == 0:
        return np.zeros((n_rows, min(rank, small)), dtype=np.float32)
    if n_rows * n_cols <= _DENSE_SVD_CELLS or small <= 2:
        k = min(rank, small)
        p, d, _ = scipy.linalg.svd(m.toarray(), full_matrices=False)
    else:
        k = min(rank, small - 1)
        # A fixed start vector makes ARPACK's result reproducible run to run.
        v0 = np.random.default_rng(0).standard_normal(small)
        p, d, _ = scipy.sparse.linalg.svds(m, k=k, v0=v0)
    order = np.argsort(-d, kind="stable")[:k]
    p, d = p[:, order], np.clip(d[order], 0.0, None)
    return (_fix_signs(p) * np.sqrt(d)).astype(np.float32)


def as_feature_matrix(features: Any, n_rows: int, what: str = "side information") -> np.ndarray:
    """``features`` (dense, SciPy sparse, or any array library) as a C-contiguous float32
    ``(n_rows, n_features)`` matrix; ``ValueError`` naming ``what`` when it is not numeric, has
    another number of rows, or holds NaN or infinite values."""
    features = to_host(features)  # any array library; no copy for host float32 data
    if sp.issparse(features):
        features = features.toarray()
    try:
        arr = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a numeric array of shape ({n_rows}, n_features), "
                         f"got {type(features).__name__}") from None
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(f"{what} must have shape ({n_rows}, n_features) for this data set, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def sample_side_features(kind: str, ratings: Any, user_features: Any, item_features: Any) -> Any:
    """The features given for the side a ``kind`` of CFN reads (users for ``"user"``, items for ``"item"``;
    ``None``: use those stored in ``ratings``), aligned on the rating set's ids when labelled.  Both sides'
    are checked; features of the other side are ignored with a warning rather than silently training a
    plain CFN."""
    user_features = align_rows(user_features, ratings.user_ids, "user_features", "user")
    item_features = align_rows(item_features, ratings.item_ids, "item_features", "item")
    for name, value, rows in (("user_features", user_features, ratings.n_users),
                              ("item_features", item_features, ratings.n_items)):
        if value is not None:
            as_feature_matrix(value, rows, name)
    used, unused = ("user", "item") if kind == "user" else ("item", "user")
    if (item_features if unused == "item" else user_features) is not None:
        warnings.warn(f"{unused}_features are ignored: a {'U' if kind == 'user' else 'I'}-CFN uses only "
                      f"{used} features (pass {used}_features=, or train kind={unused!r} to use "
                      f"{unused} features)", UserWarning, stacklevel=4)
    return user_features if kind == "user" else item_features
