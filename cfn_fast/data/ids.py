"""Original user and item ids: exact, whatever their type, and never copied at a fixed width.

* **Integers** of every type up to 64 bits (``int8`` .. ``int64``, ``uint8`` .. ``uint64``, Python ints up to
  ``2**64 - 1``) become ``int64``, or ``uint64`` when an id is beyond ``int64``; a lookup converts the query
  to the id map's type exactly (NumPy would compare ``int64`` with ``uint64`` through float64, where ids
  above ``2**53`` collide).  Negative ids, ids of 65 bits or more, and float ids at or above ``2**53`` (a
  float cannot hold them exactly) are errors.
* **Strings** stay Python ``str`` objects in an object array: never a fixed-width ``<U`` copy, whose every
  element takes as much memory as the longest id (one 5,000-character id among ML-100K's ids grew memory by
  3.8 GB).  pandas columns, categoricals and lists of ``str`` keep their objects; a ``<U`` array given by
  the caller becomes Python strings (a fixed-width bytes array stays as given).
* **Missing** ids (``None``, NaN, pandas ``NA``) and a mix of numbers and strings are errors.

Id maps are sorted arrays: original id -> index is a binary search (:func:`lookup`).
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["as_id_array", "lookup", "text_ids", "show_ids", "id_entries", "ids_of"]

INT64_MAX = int(np.iinfo(np.int64).max)
UINT64_MAX = int(np.iinfo(np.uint64).max)
FLOAT_EXACT = 2 ** 53


def _missing(arr: np.ndarray) -> np.ndarray:
    """Mask of missing values (None, NaN, pandas NA / NaT) in an object array."""
    pd = sys.modules.get("pandas")  # pandas missing markers can only be present if pandas is loaded
    if pd is not None:
        return np.asarray(pd.isna(arr), dtype=bool)
    return np.fromiter((v is None or (isinstance(v, float) and math.isnan(v)) for v in arr), dtype=bool,
                       count=len(arr))


def _reject_missing(missing: np.ndarray, arr: np.ndarray, what: str) -> None:
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        value = arr[first].item() if isinstance(arr[first], np.generic) else arr[first]
        raise ValueError(f"{what} contain {int(missing.sum())} missing value(s) ({value!r} at position "
                         f"{first}); every rating needs a user and an item id")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def text_ids(values: Any) -> np.ndarray:
    """Ids as an object array of Python ``str`` (anything else through ``str``), never fixed-width."""
    return _objects([v if isinstance(v, str) else str(v) for v in values])


def _integers(values: list, what: str) -> np.ndarray:
    """Python / NumPy integers as int64, or uint64 when one is beyond int64; exact."""
    if not values:
        return np.zeros(0, dtype=np.int64)
    low, high = int(min(values)), int(max(values))
    if low < 0:
        raise ValueError(f"{what} must be non-negative; found {low}")
    if high > UINT64_MAX:
        raise ValueError(f"{what} must fit in 64 bits (at most 2**64 - 1); found {high}")
    return np.array(values, dtype=np.int64 if high <= INT64_MAX else np.uint64)


def _from_sequence(ids: Any) -> np.ndarray:
    """A NumPy array of a non-NumPy input without a fixed-width string copy."""
    if hasattr(ids, "to_numpy") and hasattr(ids, "index"):   # pandas Series / Index / Categorical column
        return np.asarray(ids.to_numpy())
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        ids = [ids]
    try:
        values = list(ids)
    except TypeError:   # not a sequence (None, an object): the shape check names it
        return np.asarray(ids)
    kinds = {type(v) for v in values}
    if kinds and all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
        arr = np.asarray(values)
        # NumPy gives int64 / uint64 when one holds them all, exactly; a mix beyond int64 it turns into float64
        return arr if arr.dtype.kind in "iu" else _objects(values)
    if any(issubclass(k, (str, bytes)) for k in kinds):
        return _objects(values)
    return np.asarray(values)


def _uniform(arr: np.ndarray, what: str) -> np.ndarray:
    """Object ids as one type: integers, or strings; a mix of numbers and strings is an error (``1`` and
    ``"1"`` would otherwise become one id)."""
    kinds = {"int" if _is_int(v) else "str" if isinstance(v, str) else type(v).__name__ for v in arr}
    if kinds == {"int"}:
        return _integers(arr.tolist(), what)
    if kinds <= {"str"}:
        return arr
    if "str" in kinds and len(kinds) > 1:
        first = next(v for v in arr if not isinstance(v, str))
        raise ValueError(f"{what} mix strings and {type(first).__name__} values (e.g. {first!r}); "
                         f"use one id type")
    return text_ids(arr) if kinds <= {"bytes"} else np.asarray(arr.tolist())


def as_id_array(ids: Any, what: str) -> np.ndarray:
    """``ids`` as a 1-D array of one exact id type (see the module docstring); ``ValueError`` naming ``what``."""
    arr = ids.reshape(1) if isinstance(ids, np.ndarray) and ids.ndim == 0 else \
        ids if isinstance(ids, np.ndarray) else _from_sequence(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "U":
        arr = arr.astype(object)   # the caller's fixed-width text: Python strings from here on
    if arr.dtype.kind == "O":
        _reject_missing(_missing(arr), arr, what)
        arr = _uniform(arr, what)
    if arr.dtype.kind == "f":
        _reject_missing(np.isnan(arr), arr, what)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be integers (or strings); got non-integer values such as "
                             f"{arr[arr != np.round(arr)][:3].tolist()}")
        if arr.size and np.abs(arr).max() >= FLOAT_EXACT:
            raise ValueError(f"{what} are floats as large as {np.abs(arr).max():.17g}, beyond 2**53 where a float "
                             f"no longer holds every integer: pass them as integers (int64 or uint64)")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        raise ValueError(f"{what} must be integers or strings, not booleans")
    if arr.dtype.kind in "iu":
        if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
            raise ValueError(f"{what} must be non-negative; found {int(arr.min())}")
        wide = arr.dtype.kind == "u" and arr.size and int(arr.max()) > INT64_MAX
        arr = arr.astype(np.uint64 if wide else np.int64, copy=False)
    return arr


_KINDS = {"i": "integer", "u": "integer", "O": "string", "U": "string", "S": "bytes"}


def _id_kind(arr: np.ndarray) -> str:
    return _KINDS.get(arr.dtype.kind, "other")


def _shown(value: Any, width: int = 40) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, str) and len(value) > width:
        return f"{value[:width]}... ({len(value):,} characters)"
    return value


def show_ids(ids: np.ndarray, k: int = 5) -> str:
    """The first ``k`` ids for a message (a very long string id shortened)."""
    return str([_shown(v) for v in ids[:k]])


def _comparable(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(ids in the id map's integer type, mask of those that can be in it or None for all)``: exact, never
    through float."""
    possible = None
    if ids.dtype == np.uint64 and sorted_ids.dtype.kind == "i":     # ids beyond int64 cannot be in the map
        possible = ids <= np.uint64(INT64_MAX)
        ids = np.where(possible, ids, 0).astype(np.int64)
    elif sorted_ids.dtype == np.uint64 and ids.dtype.kind == "i":   # nor can negative ids
        possible = ids >= 0
        ids = np.where(possible, ids, 0).astype(np.uint64)
    return ids, possible   # any other pair of integer types NumPy compares exactly


def lookup(sorted_ids: np.ndarray, ids: np.ndarray, what: str, strict: bool = True) -> np.ndarray:
    """Indices of original ``ids`` (from :func:`as_id_array`) in the sorted id map, by binary search;
    ``KeyError`` for unknown ids when ``strict``, else -1 for them."""
    if len(sorted_ids) == 0:
        if strict and len(ids):
            raise KeyError(f"unknown {what} id(s): {show_ids(ids)}")
        return np.full(len(ids), -1, dtype=np.int32)
    query, possible = _comparable(sorted_ids, ids)
    if _id_kind(query) != _id_kind(sorted_ids):   # string ids in an integer map, or the other way: none is known
        pos, found = np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    else:
        pos = np.minimum(np.searchsorted(sorted_ids, query), len(sorted_ids) - 1)
        found = np.asarray(sorted_ids[pos] == query, dtype=bool)
        if possible is not None:
            found &= possible
    if strict and not np.all(found):
        unknown = ids[~found]
        distinct = np.unique(unknown)  # count ids, not occurrences (a test set names a new user many times)
        repeats = f" ({len(unknown):,} occurrences)" if len(unknown) > len(distinct) else ""
        raise KeyError(f"{len(distinct)} unknown {what} id(s), e.g. {show_ids(distinct)}{repeats}")
    return np.where(found, pos, -1).astype(np.int32)


# ----------------------------------------------------------------------------- ids in .npz files
def id_entries(name: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The file entries of an id map, exact and without pickles: integers as they are (int64 / uint64); strings
    as fixed-width unicode ``name`` when that is exact (numpy drops trailing NULs) and no more than about twice
    their size, else as ``name_utf8`` (UTF-8 bytes, uint8) with ``name_offsets`` (int64, one more than ids)."""
    if ids.dtype.kind in "iu":
        return {name: ids}
    text = ids.astype(str).tolist() if ids.dtype.kind == "S" else [v if isinstance(v, str) else str(v) for v in ids]
    longest = max(map(len, text), default=0)
    if longest * len(text) <= 2 * sum(map(len, text)) + 16384 and not any(t.endswith("\0") for t in text):
        return {name: np.array(text, dtype=str) if text else np.zeros(0, dtype="<U1")}
    encoded = [t.encode("utf-8", "surrogatepass") for t in text]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return {f"{name}_utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{name}_offsets": offsets}


def ids_of(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The id map ``name`` of :func:`id_entries`' entries: integers, or an object array of Python ``str``."""
    if f"{name}_utf8" in arrays:
        blob, offsets = arrays[f"{name}_utf8"], arrays[f"{name}_offsets"]
        if blob.dtype != np.uint8 or blob.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.ndim != 1 \
                or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{name}_utf8 / {name}_offsets do not describe a list of ids (uint8 bytes, and offsets "
                             f"from 0 to their length, never decreasing)")
        data = blob.tobytes()
        try:
            return text_ids([data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(offsets[:-1], offsets[1:])])
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}_utf8 is not UTF-8 text ({exc})") from None
    ids = arrays[name]
    return ids.astype(object) if ids.dtype.kind == "U" else ids
