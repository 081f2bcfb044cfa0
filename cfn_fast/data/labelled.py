"""Inputs that carry their own labels (pandas ``DataFrame`` / ``Series``): aligned on their labels,
never used by row position behind the user's back.

* :func:`align_rows` -- side information with one row per user (or item): a labelled table is
  reordered to the rating set's sorted ids through its index; ids missing from the index, a
  duplicated label or an index of another id type are errors.  Labels of ids outside the rating
  set are ignored (a feature table may cover more users than the ratings do).  Every path that
  takes features goes through it: ``RatingSet.from_arrays`` / ``with_features``, ``CFN.fit``
  (and so ``StackedCFN.fit``).
* :func:`align_vector` -- one feature vector (``CFN.fold_in``): a labelled Series is matched to the
  model's feature names.
* :func:`check_parallel` -- parallel sequences (user, item, rating; ids and ratings) that are
  Series must share one index, else their rows would pair up by position across different labels.

Plain arrays, lists and sparse matrices pass through unchanged: their rows are positional by
definition.  pandas is never imported here; an object is labelled when it has an ``index``
and ``to_numpy`` (duck typing).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["align_rows", "align_vector", "check_parallel", "is_labelled"]


def is_labelled(value: Any) -> bool:
    """True for a pandas DataFrame / Series (anything with ``index`` and ``to_numpy``)."""
    return hasattr(value, "index") and hasattr(value, "to_numpy") and not isinstance(value, np.ndarray)


def _examples(values: Any, k: int = 5) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in list(values)[:k]]


def align_rows(features: Any, ids: np.ndarray, what: str, side: str) -> Any:
    """``features`` with its rows in the order of ``ids`` (a rating set's sorted user or item ids).

    A labelled table is looked up by its index; anything else is returned unchanged (positional)."""
    if not is_labelled(features):
        return features
    index = features.index
    if getattr(index, "has_duplicates", False):
        dup = index[index.duplicated()]
        raise ValueError(f"{what}: its index repeats {side} id(s) {_examples(dup)}; one row per {side} id")
    positions = np.asarray(index.get_indexer(ids))
    missing = positions < 0
    if missing.any():
        hint = (f" (index dtype {index.dtype}, ids dtype {ids.dtype})"
                if index.dtype.kind != np.asarray(ids).dtype.kind else "")
        raise ValueError(
            f"{what}: its index lacks {int(missing.sum())} of the {len(ids)} {side} ids, e.g. "
            f"{_examples(np.asarray(ids)[missing])}{hint}; index the rows by {side} id "
            f"(frame.set_index('{side}_id')) or pass frame.to_numpy() to use them in the rating set's "
            f"sorted {side}-id order")
    values = features.to_numpy()
    if values.ndim == 1:
        values = values[:, None]
    return values[positions]


def align_vector(features: Any, names: Sequence[str] | None, what: str) -> Any:
    """One feature vector: a labelled Series is reordered to ``names`` (the model's feature names)."""
    if not is_labelled(features):
        return features
    if hasattr(features, "columns"):  # a one-row DataFrame: its columns are the labels
        if len(features) != 1:
            raise ValueError(f"{what} must be one row, got a DataFrame of {len(features)} rows")
        features = features.iloc[0]
    index = features.index
    positional = type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1
    if names is None:
        if positional:
            return features.to_numpy()
        raise ValueError(f"{what} is a labelled Series but the model has no feature names to match its "
                         f"labels to; pass series.to_numpy() to use the values in order")
    if positional:
        raise ValueError(f"{what} has no labels (a default 0..n-1 index); label it with the model's feature "
                         f"names or pass series.to_numpy() to use the values in order")
    positions = np.asarray(index.get_indexer(list(names)))
    missing = positions < 0
    extra = sorted(set(map(str, index)) - set(names))
    if missing.any() or extra:
        raise ValueError(f"{what}: its labels do not match the model's feature names (missing "
                         f"{_examples(np.asarray(names)[missing])}, unknown {extra[:5]})")
    return features.to_numpy()[positions]


def check_parallel(named: dict[str, Any]) -> None:
    """Parallel sequences that carry labels must carry the same ones, row for row."""
    labelled = {name: value.index for name, value in named.items() if is_labelled(value)}
    if len(labelled) < 2:
        return
    (first, reference), *rest = labelled.items()
    for name, index in rest:
        if not reference.equals(index):
            raise ValueError(f"{first} and {name} are pandas objects with different indexes, so their rows "
                             f"would pair up by position across different labels; take them from one "
                             f"DataFrame or reset their indexes")
