"""End-to-end training of the estimator: accuracy on synthetic data, side information, determinism, cold rows, ML-1M."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfn_fast import CFN, RatingSet, synthetic_ratings, train_test_split
from cfn_fast.metrics import rmse

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def synthetic_split():
    return train_test_split(synthetic_ratings(seed=0), 0.1, seed=0)


def item_mean_rmse(train: RatingSet, test: RatingSet) -> float:
    counts = np.bincount(train.item, minlength=train.n_items)
    means = np.bincount(train.item, weights=train.rating, minlength=train.n_items) / np.maximum(counts, 1)
    means[counts == 0] = train.rating.mean()
    return rmse(means[test.item], test.rating)


@pytest.mark.parametrize("kind", ["item", "user"])
def test_cfn_beats_item_mean_by_ten_percent_on_synthetic(kind, synthetic_split):
    train, test = synthetic_split
    model = CFN(kind=kind, hidden=(200,), epochs=10, backend="numpy").fit(train)
    assert model.score(test) <= 0.9 * item_mean_rmse(train, test)


def test_side_information_helps_on_synthetic(synthetic_split):
    train, test = synthetic_split
    plain = CFN(kind="item", hidden=(200,), epochs=8, backend="numpy", use_side_info=False).fit(train)
    plus = CFN(kind="item", hidden=(200,), epochs=8, backend="numpy", use_side_info=True).fit(train)
    assert plus.score(test) < plain.score(test)


def test_fit_is_deterministic_and_records_history(synthetic_split):
    train, test = synthetic_split
    a = CFN(kind="user", hidden=(32,), epochs=2, backend="numpy", seed=4).fit(train, validation=test)
    b = CFN(kind="user", hidden=(32,), epochs=2, backend="numpy", seed=4).fit(train, validation=test)
    assert [h.epoch for h in a.history_] == [1, 2]
    assert a.history_[-1].validation_rmse == pytest.approx(a.score(test))
    np.testing.assert_array_equal(a.predict_indices(test.user, test.item), b.predict_indices(test.user, test.item))


def test_cold_rows_are_predicted_not_dropped():
    r = synthetic_ratings(120, 60, 2400, seed=2)
    cold_item = 0
    train = r.subset(r.item != cold_item)
    for side in (True, False):
        model = CFN(kind="item", hidden=(16,), epochs=2, backend="numpy", use_side_info=side).fit(train)
        users = np.arange(5)
        pred = model.predict_indices(users, np.full(5, cold_item))
        assert np.all(np.isfinite(pred)) and np.all((pred >= 1) & (pred <= 5))
    assert model.score(r.subset(r.item == cold_item)) < 2.0


@pytest.mark.skipif(not (SHARED / "ml-1m" / "ratings.npz").exists(), reason="../shared/data/ml-1m is absent")
def test_ml1m_smoke():
    data = np.load(SHARED / "ml-1m" / "ratings.npz", allow_pickle=False)
    ratings = RatingSet.from_arrays(data["user"], data["item"], data["rating"], scale=(1, 5))
    assert (ratings.nnz, ratings.n_users, ratings.n_items) == (1_000_209, 6040, 3706)
    train, test = train_test_split(ratings, 0.1, seed=0)
    model = CFN(kind="item", hidden=(100,), epochs=3).fit(train)
    assert model.score(test) < 0.93

