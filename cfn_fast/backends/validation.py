"""The checks every engine's arguments pass before any kernel runs (one place for all backends).

The kernels trust their inputs: a column index out of range or a decreasing ``indptr`` made them (and
SciPy's own C++ routines) read and write outside their arrays.  So a matrix is checked with NumPy
alone, on its raw arrays, before SciPy converts or slices it; an index array is checked for its type
(a boolean mask or float rows are not indices) and range; numbers are checked as the estimator checks
its settings (:mod:`cfn_fast.settings`).  Errors name the argument, what it must be and what was given:
``TypeError`` for the wrong kind of object, ``IndexError`` for an index out of range, ``ValueError``
for the rest.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.side_info import as_feature_matrix
from ..interop import is_device_array, to_host
from ..settings import is_finite, is_int, is_real

__all__ = ["sparse_matrix", "matrix_shape", "index_array", "checked_epoch", "checked_lr", "side_matrix",
           "codes_matrix", "MAX_EPOCH"]

#: epochs are numbered from 1; the masking noise's key takes the epoch as an unsigned 64-bit integer
MAX_EPOCH = 2**63 - 1

_INT64_MAX = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- numbers
def checked_epoch(epoch: Any) -> int:
    """``epoch`` as an int in ``[1, MAX_EPOCH]`` (epochs are numbered from 1, as the schedule's)."""
    if not is_int(epoch) or epoch < 1:
        raise ValueError(f"epoch must be an integer >= 1 (epochs are numbered from 1), got {epoch!r}")
    if epoch > MAX_EPOCH:
        raise ValueError(f"epoch must be an integer below 2**63, got {epoch!r}")
    return int(epoch)


def checked_lr(lr: Any, weight_decay: float) -> float:
    """``lr`` as a float, finite and > 0, with ``lr * weight_decay < 1`` (the estimator's rules)."""
    if not (is_real(lr) and is_finite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if lr * weight_decay >= 1:
        raise ValueError(f"lr * weight_decay must be < 1 (otherwise weight decay flips the sign of the weights), "
                         f"got {lr * weight_decay!r}")
    return float(lr)


# ----------------------------------------------------------------------------- index arrays
def index_array(index: Any, n: int, what: str, *, allow_empty: bool = True) -> np.ndarray:
    """``index`` as a 1-D int64 array of positions in ``[0, n)``.

    ``TypeError`` for anything but integers (a boolean mask would be read as positions 0 and 1, float
    positions would be truncated), ``ValueError`` for another shape, ``IndexError`` out of range."""
    arr = np.asarray(to_host(index))
    if arr.dtype.kind == "b":
        raise TypeError(f"{what} must be an integer array of indices, got a boolean array (a mask); "
                        f"pass np.flatnonzero(mask)")
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a one-dimensional array of indices, got shape {arr.shape}")
    if arr.size == 0:
        if not allow_empty:
            raise ValueError(f"{what} must be a non-empty array of indices (a mini-batch), got shape {arr.shape}")
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array of indices, got dtype {arr.dtype}")
    # compared in the given dtype: a uint64 above 2**63 must not wrap to a negative int64
    bad = arr >= n if arr.dtype.kind == "u" else (arr < 0) | (arr >= n)
    if bad.any():
        raise IndexError(f"{what} must lie in [0, {n}), got {arr[bad][:5].tolist()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


# ----------------------------------------------------------------------------- dense arrays
def side_matrix(side: Any, n_rows: int, side_dim: int, what: str = "side") -> np.ndarray | None:
    """Side information of ``n_rows`` rows for an engine built with ``side_dim`` side features (0: none)."""
    if side is None:
        if side_dim:
            raise ValueError(f"{what} is None, but this engine was built with {side_dim} side features: pass "
                             f"{what}, an array of shape ({n_rows}, {side_dim})")
        return None
    if not side_dim:
        raise ValueError(f"{what} given, but this engine was built without side information: pass {what}=None")
    arr = as_feature_matrix(side, n_rows, what)
    if arr.shape[1] != side_dim:
        raise ValueError(f"{what} must have shape ({n_rows}, {side_dim}), got {arr.shape}")
    return arr


def codes_matrix(codes: Any, width: int) -> Any:
    """Hidden codes ``(n, width)``: float32 on the host, or a device array as given (checked by shape)."""
    if is_device_array(codes):
        if len(codes.shape) != 2 or codes.shape[1] != width or np.dtype(codes.dtype).kind not in "iuf":
            raise ValueError(f"codes must be a numeric array of shape (n, {width}), got {codes.dtype} "
                             f"{tuple(codes.shape)}")
        return codes
    arr = np.asarray(codes)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"codes must be a numeric array of shape (n, {width}), got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"codes must have shape (n, {width}) (the last hidden layer's width), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


# ----------------------------------------------------------------------------- sparse matrices
def sparse_matrix(matrix: Any, what: str, n_columns: int | None = None, *,
                  rows: np.ndarray | None = None) -> sp.csr_matrix:
    """``matrix`` as a float32 CSR after checking its raw arrays (the same object when it is one already).

    Checked: the format's structure (``indptr`` of ``n_rows + 1`` non-decreasing entries from 0, as many
    indices as values), every index in range, real finite values, no (row, column) stored twice, and
    ``n_columns`` columns when given.  ``rows``: check the entries of these rows only (``predict_entries``
    reads no other; the structure is always checked whole)."""
    if not sp.issparse(matrix):
        raise TypeError(f"{what} must be a SciPy sparse matrix, got {type(matrix).__name__}")
    n_rows, n_cols = matrix_shape(matrix, what)
    if n_columns is not None and n_cols != n_columns:
        raise ValueError(f"{what} must have {n_columns} columns (the network's inputs), got {n_cols}")
    fmt = matrix.format
    if fmt == "csr":
        _compressed(matrix.indptr, matrix.indices, matrix.data, n_rows, n_cols, what, rows)
        return _as_float32_csr(matrix, n_rows, n_cols)
    if fmt == "csc":
        _compressed(matrix.indptr, matrix.indices, matrix.data, n_cols, n_rows, what, None, transposed=True)
    elif fmt == "coo":
        _coordinates(matrix, n_rows, n_cols, what)
    elif fmt == "bsr":
        _blocks(matrix, n_rows, n_cols, what)
    # sound now (or a pure-Python format: lil, dok, dia), SciPy converts it safely; check the result too
    try:
        converted = sp.csr_matrix(matrix.tocsr(), dtype=np.float32)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ValueError(f"{what} is not a valid {fmt} matrix: {exc}") from None
    _compressed(converted.indptr, converted.indices, converted.data, n_rows, n_cols, what, rows)
    return converted


def matrix_shape(matrix: Any, what: str) -> tuple[int, int]:
    """``(rows, columns)`` of a sparse matrix, checked to be two non-negative ints."""
    shape = getattr(matrix, "shape", None)
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(is_int(s) and s >= 0 for s in shape)):
        raise ValueError(f"{what} must be a 2-D sparse matrix, got shape {shape!r}")
    return int(shape[0]), int(shape[1])


def _integers(values: Any, what: str, name: str, *, as_int64: bool = False) -> np.ndarray:
    """A 1-D integer array (``as_int64``: converted, for arithmetic; else as given, not copied)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(f"{what}: {name} must be a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    if as_int64 and arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
        raise ValueError(f"{what}: {name} holds {arr.max()}, beyond any matrix size")
    return arr.astype(np.int64, copy=False) if as_int64 else arr


def _values(data: Any, what: str, ndim: int = 1) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != ndim:
        raise ValueError(f"{what}: data must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _compressed(indptr: Any, indices: Any, data: Any, n_major: int, n_minor: int, what: str,
                rows: np.ndarray | None, *, transposed: bool = False, data_ndim: int = 1) -> None:
    """Compressed sparse rows (columns when ``transposed``): the structure, then the entries of ``rows``."""
    major, minor = ("column", "row") if transposed else ("row", "column")
    ptr = _integers(indptr, what, "indptr", as_int64=True)
    idx = _integers(indices, what, "indices")
    values = _values(data, what, data_ndim)
    if len(ptr) != n_major + 1:
        raise ValueError(f"{what}: indptr must have {n_major + 1} entries ({major}s + 1), got {len(ptr)}")
    if ptr[0] != 0:
        raise ValueError(f"{what}: indptr must start at 0, got {ptr[0]}")
    drops = np.flatnonzero(ptr[1:] < ptr[:-1])
    if drops.size:
        k = int(drops[0])
        raise ValueError(f"{what}: indptr must be non-decreasing, got indptr[{k + 1}] = {ptr[k + 1]} < "
                         f"indptr[{k}] = {ptr[k]}")
    if len(idx) != len(values):
        raise ValueError(f"{what}: indices and data differ in length: {len(idx)} and {len(values)}")
    if ptr[-1] > len(idx):
        raise ValueError(f"{what}: indptr ends at {ptr[-1]}, but only {len(idx)} entries are stored")
    if rows is None:
        positions, owner = slice(0, int(ptr[-1])), None
    else:
        positions, owner = _entries_of(ptr, rows)
    _entries(idx[positions], values[positions], ptr, owner, n_minor, what, major, minor)


def _entries_of(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the stored entries of ``rows`` (sorted, distinct), and the row of each."""
    starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    owner = np.repeat(rows, counts)
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return first + np.arange(len(owner)), owner


def _entries(idx: np.ndarray, values: np.ndarray, ptr: np.ndarray, owner: np.ndarray | None, n_minor: int,
             what: str, major: str, minor: str) -> None:
    if idx.size == 0:
        return
    if owner is None:
        owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    bad = idx >= n_minor if idx.dtype.kind == "u" else (idx < 0) | (idx >= n_minor)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise IndexError(f"{what}: {minor} indices must lie in [0, {n_minor}), got {idx[k]} in {major} {owner[k]}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite values")
    same_line = owner[1:] == owner[:-1]
    if np.any(same_line & (idx[1:] <= idx[:-1])):   # unsorted somewhere: sort to find repeats
        order = np.lexsort((idx, owner))
        idx, owner = idx[order], owner[order]
        repeat = np.flatnonzero((owner[1:] == owner[:-1]) & (idx[1:] == idx[:-1]))
        if repeat.size:
            k = int(repeat[0])
            raise ValueError(f"{what} stores ({major} {owner[k]}, {minor} {idx[k]}) more than once; merge "
                             f"the duplicates (sum_duplicates()) or drop them first")


def _coordinates(matrix: Any, n_rows: int, n_cols: int, what: str) -> None:
    row, col = _integers(matrix.row, what, "row", as_int64=True), _integers(matrix.col, what, "col", as_int64=True)
    values = _values(matrix.data, what)
    if not len(row) == len(col) == len(values):
        raise ValueError(f"{what}: row, col and data differ in length: {len(row)}, {len(col)}, {len(values)}")
    for name, index, n in (("row", row, n_rows), ("column", col, n_cols)):
        bad = (index < 0) | (index >= n)
        if bad.any():
            raise IndexError(f"{what}: {name} indices must lie in [0, {n}), got {index[bad][0]}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite values")
    key = row * max(n_cols, 1) + col
    unique, counts = np.unique(key, return_counts=True)
    if np.any(counts > 1):
        k = int(unique[np.flatnonzero(counts > 1)[0]])
        raise ValueError(f"{what} stores (row {k // max(n_cols, 1)}, column {k % max(n_cols, 1)}) more than "
                         f"once; merge the duplicates (sum_duplicates()) or drop them first")


def _blocks(matrix: Any, n_rows: int, n_cols: int, what: str) -> None:
    block_rows, block_cols = matrix.blocksize
    if block_rows < 1 or block_cols < 1 or n_rows % block_rows or n_cols % block_cols:
        raise ValueError(f"{what}: blocks of {matrix.blocksize} do not tile the shape {(n_rows, n_cols)}")
    _compressed(matrix.indptr, matrix.indices, matrix.data, n_rows // block_rows, n_cols // block_cols, what,
                None, data_ndim=3)


def _as_float32_csr(matrix: Any, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """The checked CSR itself when it already is a float32 ``csr_matrix`` (the CUDA engine recognises its
    own training matrix by identity), else a float32 ``csr_matrix`` of its stored entries."""
    nnz = int(matrix.indptr[-1])
    arrays = (matrix.data, matrix.indices, matrix.indptr)
    if isinstance(matrix, sp.csr_matrix) and all(isinstance(a, np.ndarray) for a in arrays) \
            and matrix.data.dtype == np.float32 and matrix.indices.dtype.kind == matrix.indptr.dtype.kind == "i" \
            and len(matrix.indices) == nnz:
        return matrix
    indices = np.asarray(matrix.indices[:nnz]).astype(np.int64)
    indptr = np.asarray(matrix.indptr).astype(np.int64)
    return sp.csr_matrix((np.asarray(matrix.data[:nnz], dtype=np.float32), indices, indptr), shape=(n_rows, n_cols))
