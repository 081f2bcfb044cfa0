"""Inference products of the NumPy engine whose result for a row never depends on the other rows of its batch.

A BLAS matrix product may sum a row's terms in an order that depends on the shape of the call: OpenBLAS hands a
one-row product to gemv, MKL picks kernels by size.  A user's scores then changed in the last bit with the number
of users scored together, and ``recommend`` and ``recommend_batch`` ordered near-tied items differently.  So every
inference product here is a sequence of calls of one shape, fixed by the model:

* :func:`sparse_rows_product`: the first layer, ``CSR @ dense`` through SciPy, which sums each row's entries in
  their stored order, one row at a time (no BLAS);
* :func:`row_block_product`: ``rows @ weight.T`` in blocks of :data:`ROW_BLOCK` rows (the last block padded with
  zero rows) against the whole weight;
* :func:`column_block_product`: ``rows @ weight[cols].T`` for a selection of output columns (an I-CFN's users):
  blocks of :data:`WIDE_BLOCK` rows (the last padded with zero rows) against blocks of :data:`COL_BLOCK` columns
  (the last padded by repeating a column).

Padding costs a little arithmetic, never a different result; the sizes trade one-row latency against batch speed.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["ROW_BLOCK", "COL_BLOCK", "WIDE_BLOCK", "sparse_rows_product", "row_block_product",
           "column_block_product"]

#: rows per product against every output column
ROW_BLOCK = 8
#: selected output columns per product, and rows per such product
COL_BLOCK = 32
WIDE_BLOCK = 256


def sparse_rows_product(inputs: sp.csr_matrix, weight_t: np.ndarray) -> np.ndarray:
    """``inputs @ weight_t`` (float32) for a CSR ``inputs`` and a C-contiguous ``(n_inputs, width)`` ``weight_t``:
    each row the sum of its own entries' weight rows, in stored order."""
    inputs = sp.csr_matrix(inputs, dtype=np.float32)
    return np.asarray(inputs @ weight_t, dtype=np.float32)


def row_block_product(rows: np.ndarray, weight_t: np.ndarray, block: int = ROW_BLOCK) -> np.ndarray:
    """``rows @ weight_t`` (float32; ``weight_t`` C-contiguous ``(k, n)``) in calls of shape ``(block, k) @ (k, n)``."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n = rows.shape[0]
    out = np.empty((n, weight_t.shape[1]), dtype=np.float32)
    full = n - n % block
    for start in range(0, full, block):
        np.matmul(rows[start:start + block], weight_t, out=out[start:start + block])
    if full < n:
        padded = np.zeros((block, rows.shape[1]), dtype=np.float32)
        padded[:n - full] = rows[full:]
        out[full:] = (padded @ weight_t)[:n - full]
    return out


def column_block_product(rows: np.ndarray, weight: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ weight[cols].T`` (float32; ``weight`` ``(n_outputs, k)``) in calls of shape
    ``(WIDE_BLOCK, k) @ (k, COL_BLOCK)``: neither the number of columns nor the number of rows asked for
    changes a value."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    cols = np.asarray(cols, dtype=np.int64)
    n = rows.shape[0]
    out = np.empty((n, len(cols)), dtype=np.float32)
    if n == 0 or len(cols) == 0:
        return out
    full = n - n % WIDE_BLOCK
    blocks = [(start, rows[start:start + WIDE_BLOCK]) for start in range(0, full, WIDE_BLOCK)]
    if full < n:
        tail = np.zeros((WIDE_BLOCK, rows.shape[1]), dtype=np.float32)
        tail[:n - full] = rows[full:]
        blocks.append((full, tail))
    result = np.empty((WIDE_BLOCK, COL_BLOCK), dtype=np.float32)
    for first in range(0, len(cols), COL_BLOCK):
        block = cols[first:first + COL_BLOCK]
        taken = len(block)
        if taken < COL_BLOCK:
            block = np.concatenate([block, np.full(COL_BLOCK - taken, block[-1])])
        selected_t = np.ascontiguousarray(np.asarray(weight, dtype=np.float32)[block].T)
        for start, part in blocks:
            np.matmul(part, selected_t, out=result)
            stop = min(start + WIDE_BLOCK, n)
            out[start:stop, first:first + taken] = result[:stop - start, :taken]
    return out
