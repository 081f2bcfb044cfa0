"""Ratings as SciPy sparse matrices (issue 21): a (row, column) stored twice is an error naming the first one, never
a sum; explicit zeros are errors (the policy of cfn_fast.data.sparse_input), at every entry point."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast import CFN, RatingSet, load_ratings, synthetic_ratings
from cfn_fast.data.sparse_input import first_duplicate


@pytest.fixture(scope="module")
def model() -> CFN:
    return CFN("user", (8,), 1, backend="numpy", use_side_info=False).fit(
        synthetic_ratings(60, 40, 900, seed=0, side_info=False))


def _twice(shape: tuple[int, int]) -> sp.coo_matrix:
    """Entry (0, 3) stored twice, as 2 and then 3 (SciPy would read a rating of 5)."""
    return sp.coo_matrix(([4.0, 2.0, 1.0, 3.0], ([1, 0, 2, 0], [0, 3, 1, 3])), shape=shape)


def _with_zero(shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix(([4.0, 2.0, 5.0], ([0, 1, 2], [0, 3, 1])), shape=shape)
    matrix.data[1] = 0.0   # what m[m < 3] = 0 leaves behind: a stored zero
    return matrix


def test_encode_rejects_duplicate_entries_instead_of_adding_them(model):
    rows = _twice((3, model.train_.n_items))
    with pytest.raises(ValueError, match=r"rows stores \(row 0, column 3\) more than once \(entries 1 and 3"):
        model.encode(rows)
    csr = sp.csr_matrix(([2.0, 3.0, 4.0, 1.0], [3, 3, 0, 1], [0, 2, 3, 4]), shape=(3, model.train_.n_items))
    with pytest.raises(ValueError, match=r"rows stores \(row 0, column 3\) more than once \(entries 0 and 1"):
        model.encode(csr)


def test_duplicates_are_rejected_everywhere_naming_the_first(model, tmp_path):
    n_items = model.train_.n_items
    for make in (lambda: RatingSet.from_sparse(_twice((3, 5))), lambda: load_ratings(_twice((3, 5)))):
        with pytest.raises(ValueError, match=r"the sparse matrix stores \(row 0, column 3\) more than once"):
            make()
    with pytest.raises(ValueError, match=r"first \(user 'b', item 'x'\) at positions 1 and 3"):
        RatingSet.from_arrays(["a", "b", "c", "b"], ["x", "x", "y", "x"], [1, 2, 3, 4])
    item = model.train_.item_ids[5].item()
    with pytest.raises(ValueError, match=f"fold-in ratings name item id {item!r} more than once"):
        model.fold_in([item, model.train_.item_ids[6], item], [3, 4, 5])
    row = sp.coo_matrix(([2.0, 3.0], ([0, 0], [7, 7])), shape=(1, n_items))
    with pytest.raises(ValueError, match=r"the fold-in row stores \(row 0, column 7\) more than once"):
        model.fold_in(row)
    merged = RatingSet.from_sparse(_twice((3, 5)), duplicates="mean")   # asked for: merged as asked
    assert merged.nnz == 3 and 2.5 in merged.rating.tolist()


def test_explicit_zeros_are_rejected_everywhere(model):
    n_items = model.train_.n_items
    for make in (lambda: RatingSet.from_sparse(_with_zero((3, 5))), lambda: load_ratings(_with_zero((3, 5)))):
        with pytest.raises(ValueError, match=r"stores 1 explicit zero\(s\), first at \(row 1, column 3\).*"
                                             r"eliminate_zeros\(\)"):
            make()
    with pytest.raises(ValueError, match=r"rows stores 1 explicit zero.*pass dense rows \(NaN for an unknown"):
        model.encode(_with_zero((3, n_items)))
    with pytest.raises(ValueError, match=r"the fold-in row stores 1 explicit zero.*pass ids and ratings"):
        model.fold_in(_with_zero((3, n_items))[1])


def test_without_the_zeros_and_repeats_every_entry_point_agrees(model):
    clean = _with_zero((3, 5))
    clean.eliminate_zeros()
    assert RatingSet.from_sparse(clean).scale == (4.0, 5.0)          # the zero no longer lowers the scale
    rows = _twice((3, model.train_.n_items)).tocsr()                   # SciPy's sum, made explicit by the caller
    dense = np.full(rows.shape, np.nan)
    dense[rows.nonzero()] = rows.data
    np.testing.assert_array_equal(model.encode(rows), model.encode(dense))
    row = sp.csr_matrix(([4.0, 2.0], ([0, 0], [3, 9])), shape=(1, model.train_.n_items))
    by_row = model.fold_in(row)
    by_ids = model.fold_in(model.train_.item_ids[[3, 9]], [4.0, 2.0])
    np.testing.assert_array_equal(by_row.ratings, by_ids.ratings)
    zero_rated = RatingSet.from_arrays([0, 0, 1], [0, 1, 1], [0.0, 3.0, 5.0], scale=(0, 5))   # 0 as a rating
    assert zero_rated.rating.tolist() == [0.0, 3.0, 5.0]


def test_first_duplicate_is_the_first_repeat_in_stored_order():
    assert first_duplicate(np.array([1, 2, 1, 2]), np.array([0, 0, 0, 0])) == (0, 2, 2)
    assert first_duplicate(np.array([5, 4, 4, 5]), np.array([1, 1, 1, 1])) == (1, 2, 2)
    assert first_duplicate(np.array([1, 2, 3]), np.array([1, 1, 1])) is None
