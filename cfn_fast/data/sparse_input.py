"""Ratings given as a SciPy sparse matrix: one policy for every entry point.

A stored entry is one rating.  So two stored entries at one (row, column), which SciPy would add up
(2 and 3 becoming a rating of 5), are an error naming the first of them; and so are **explicit
zeros**, stored entries whose value is 0: arithmetic and masking leave them behind
(``m[m < 2] = 0``, ``a - b``), and nothing in the matrix tells such debris from a rating of 0, which,
counted, would also lower the observed rating scale.  ``matrix.eliminate_zeros()`` drops them; when 0
is a rating on your scale, pass the entries as arrays (``RatingSet.from_arrays(coo.row, coo.col,
coo.data)`` with ``coo = matrix.tocoo()``) or, to ``CFN.encode``, dense rows with NaN for the unknown
entries.

Entry points: ``RatingSet.from_sparse`` (and so ``load_ratings`` of a matrix, and ``fit`` of a set built
from one), ``CFN.encode`` and ``CFN.fold_in`` of sparse rows.  An engine's ``samples`` hold centred values,
where a stored 0 is a known rating: :func:`stored_entries` with ``zeros_allowed=True`` checks only duplicates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["first_duplicate", "stored_entries", "ZEROS_HINT"]

#: what to do about explicit zeros (the end of the error's sentence)
ZEROS_HINT = ("drop them with matrix.eliminate_zeros(), or, if 0 is a rating, pass the entries as arrays "
              "(RatingSet.from_arrays)")


def first_duplicate(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int] | None:
    """``(first position, later position, number of repeats)`` of the first (in order) pair
    ``(rows[k], cols[k])`` seen before, or None when every pair is distinct."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) < 2:
        return None
    order = np.lexsort((np.arange(len(rows)), cols, rows))   # by pair, then by position
    same = (rows[order][1:] == rows[order][:-1]) & (cols[order][1:] == cols[order][:-1])
    if not same.any():
        return None
    later = order[1:][same]
    at = int(np.argmin(later))
    earliest = int(np.flatnonzero(same)[at])
    while earliest > 0 and same[earliest - 1]:   # back to the first entry of that pair
        earliest -= 1
    return int(order[earliest]), int(later[at]), int(same.sum())


def stored_entries(matrix: Any, what: str, *, zeros_allowed: bool = False, duplicates_allowed: bool = False,
                   zeros_hint: str = ZEROS_HINT, duplicates_hint: str = "") -> sp.coo_matrix:
    """The stored entries of a sparse ``matrix`` as COO, in stored order, never summed: ``ValueError``
    naming ``what`` and the first duplicate (row, column), or the first explicit zero; the hints end
    the messages."""
    coo = sp.coo_matrix(matrix)   # from CSR/CSC/COO: keeps repeated entries as they are
    found = None if duplicates_allowed else first_duplicate(coo.row, coo.col)
    if found is not None:
        first, later, count = found
        raise ValueError(f"{what} stores (row {int(coo.row[first])}, column {int(coo.col[first])}) more than "
                         f"once (entries {first} and {later}; {count} repeated entr{'y' if count == 1 else 'ies'}); "
                         f"a stored entry is one rating, which SciPy would add up: keep one entry per (row, column)"
                         f"{duplicates_hint}")
    if not zeros_allowed:
        zeros = np.flatnonzero(coo.data == 0)
        if len(zeros):
            k = int(zeros[0])
            raise ValueError(f"{what} stores {len(zeros)} explicit zero(s), first at (row {int(coo.row[k])}, column "
                             f"{int(coo.col[k])}); a stored entry is a rating, and a stored 0 is more often left by "
                             f"arithmetic than meant: {zeros_hint}")
    return coo
