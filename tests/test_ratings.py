"""RatingSet, splits, preprocessing, synthetic data and metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfn_fast import RatingSet, synthetic_ratings, train_test_split, train_validation_test_split
from cfn_fast.metrics import mean_ci, rmse, rmse_by_popularity
from cfn_fast.preprocessing import Preprocessing

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def small_set() -> RatingSet:
    return RatingSet.from_arrays([10, 10, 20, 30, 30, 30], [5, 7, 5, 5, 7, 9], [1, 5, 3, 4, 2, 5], scale=(1, 5))


def test_rating_set_maps_original_ids_to_dense_indices():
    r = small_set()
    assert (r.n_users, r.n_items, r.nnz) == (3, 3, 6)
    assert r.user_ids.tolist() == [10, 20, 30] and r.item_ids.tolist() == [5, 7, 9]
    assert r.user_index([30, 10]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="unknown user"):
        r.user_index([99])
    assert r.item_index([9, 99], missing="-1").tolist() == [2, -1]


def test_string_ids_and_dataframe_and_sparse_constructors():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user": ["b", "a", "b"], "item": ["x", "y", "y"], "rating": [1.0, 2.0, 3.0]})
    r = RatingSet.from_dataframe(frame)
    assert r.user_ids.tolist() == ["a", "b"] and r.scale == (1.0, 3.0)
    m = r.to_csr("user").toarray()
    assert m.tolist() == [[0, 2], [1, 3]]
    again = RatingSet.from_sparse(r.to_csr("user"), scale=(1, 5))
    assert np.array_equal(again.to_csr("user").toarray(), m)


def test_split_is_deterministic_disjoint_and_keeps_the_universe():
    r = synthetic_ratings(100, 80, 2000, seed=3)
    a_train, a_test = train_test_split(r, 0.2, seed=5)
    b_train, b_test = train_test_split(r, 0.2, seed=5)
    c_train, c_test = train_test_split(r, 0.2, seed=6)
    assert np.array_equal(a_test.rating, b_test.rating) and np.array_equal(a_test.user, b_test.user)
    assert not np.array_equal(a_test.user, c_test.user)
    assert a_test.nnz == 400 and a_train.nnz == 1600
    def keys(s):
        return set(zip(s.user.tolist(), s.item.tolist()))

    assert not keys(a_train) & keys(a_test)
    assert a_train.same_universe(r) and a_test.same_universe(r)
    train, val, test = train_validation_test_split(r, 0.1, 0.1, seed=0)
    assert train.nnz + val.nnz + test.nnz == r.nnz
    assert np.array_equal(test.user, train_test_split(r, 0.1, seed=0)[1].user)


def test_preprocessing_round_trip_and_centring():
    r = small_set()
    for kind in ("user", "item"):
        pre = Preprocessing.fit(kind, r)
        m = pre.centred_matrix(r)
        assert m.nnz == r.nnz
        # centred rows average to zero
        row_sums = np.asarray(m.sum(axis=1)).ravel()
        np.testing.assert_allclose(row_sums, 0.0, atol=1e-6)
        samples, inputs = (r.user, r.item) if kind == "user" else (r.item, r.user)
        back = pre.to_rating(samples, np.asarray(m[samples, inputs]).ravel())
        np.testing.assert_allclose(back, r.rating, atol=1e-5)
    pre = Preprocessing.fit("user", r)
    assert pre.to_unit(np.array([1.0, 3.0, 5.0])).tolist() == [-1.0, 0.0, 1.0]
    # predictions are clipped to the rating scale
    assert pre.to_rating(np.array([0, 0]), np.array([5.0, -5.0])).tolist() == [5.0, 1.0]


def test_explicit_zero_centred_values_stay_known():
    r = RatingSet.from_arrays([0, 0, 1], [0, 1, 0], [3, 3, 4], scale=(1, 5))
    m = Preprocessing.fit("user", r).centred_matrix(r)
    assert m.nnz == 3 and m[0, 0] == 0.0


def test_synthetic_is_deterministic_long_tailed_with_side_information():
    a = synthetic_ratings(seed=1)
    b = synthetic_ratings(seed=1)
    assert np.array_equal(a.rating, b.rating) and np.array_equal(a.user, b.user)
    assert a.nnz == 100_000 and a.user_features.shape == (2000, 12) and a.item_features.shape == (1000, 16)
    per_item = np.bincount(a.item, minlength=a.n_items)
    assert per_item.min() >= 1 and per_item.max() > 20 * np.median(per_item) / 4
    assert set(np.unique(a.rating).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_metrics():
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == pytest.approx(np.sqrt(0.5))
    ci = mean_ci([0.84, 0.85, 0.83, 0.845, 0.835])
    assert ci.mean == pytest.approx(0.84) and 0 < ci.half_width < 0.02
    # five items, one per popularity bucket; only the most popular one (item 4) is mispredicted
    buckets = rmse_by_popularity(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0, 3.0]),
                                 np.arange(5), np.array([1, 5, 9, 12, 30]))
    assert buckets["full"] == pytest.approx(np.sqrt(4 / 5)) and buckets["80-100%"] == pytest.approx(2.0)
    assert buckets["0-20%"] == 0.0



@pytest.mark.parametrize("shape", [(5, 7), (70_000, 3), (3, 70_000), (1, 1)])
def test_build_csr_orders_entries_as_lexsort(shape):
    """build_csr's faster sorts give np.lexsort's order: by row, then column, a repeated pair in its given order
    (entries given by column, by row, or in no order)."""
    from cfn_fast.data.ratings import build_csr
    rng = np.random.default_rng(sum(shape))
    for given in ("by column", "by row", "any"):
        rows, cols = rng.integers(0, min(shape[0], 40), 300), rng.integers(0, min(shape[1], 6), 300)
        if given != "any":
            first, second = (cols, rows) if given == "by column" else (rows, cols)
            order = np.lexsort((second, first))
            rows, cols = rows[order], cols[order]
        values = np.arange(300, dtype=np.float32)     # tells equal pairs apart
        csr = build_csr(rows, cols, values, shape)
        order = np.lexsort((cols, rows))
        np.testing.assert_array_equal(csr.data, values[order])
        np.testing.assert_array_equal(csr.indices, cols[order])
        np.testing.assert_array_equal(csr.indptr, np.r_[0, np.cumsum(np.bincount(rows, minlength=shape[0]))])
