"""Property tests of the public API on random small rating sets (int and str ids, both kinds,
with and without side information).  Bounded: few examples, no deadline."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfn_fast import CFN, RatingSet
from cfn_fast.fitted.ranking import top_n

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def rating_sets(draw) -> RatingSet:
    n_users = draw(st.integers(2, 12))
    n_items = draw(st.integers(2, 12))
    cells = draw(st.lists(st.integers(0, n_users * n_items - 1), min_size=1, max_size=n_users * n_items,
                          unique=True))
    cells = np.array(cells)
    half = draw(st.booleans())
    low, high = (0.5, 5.0) if half else (1.0, 5.0)
    steps = int((high - low) / (0.5 if half else 1.0))
    rating = low + np.array(draw(st.lists(st.integers(0, steps), min_size=len(cells), max_size=len(cells)))) * \
        (0.5 if half else 1.0)
    if draw(st.booleans()):   # string ids
        user_ids = np.array([f"u{k:03d}-{draw(st.sampled_from('abc'))}" for k in range(n_users)])
        item_ids = np.array([f"item {k}" for k in range(n_items)])
    else:                     # sparse non-negative int ids
        user_ids = np.array(sorted(draw(st.lists(st.integers(0, 10**9), min_size=n_users, max_size=n_users,
                                                 unique=True))))
        item_ids = np.array(sorted(draw(st.lists(st.integers(0, 10**6), min_size=n_items, max_size=n_items,
                                                 unique=True))))
    side = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    uf = rng.random((n_users, 3)).astype(np.float32) if side else None
    itf = rng.random((n_items, 2)).astype(np.float32) if side else None
    return RatingSet.from_arrays(user_ids[cells // n_items], item_ids[cells % n_items], rating, scale=(low, high),
                                 user_ids=user_ids, item_ids=item_ids, user_features=uf, item_features=itf)


models = st.fixed_dictionaries({
    "kind": st.sampled_from(["user", "item"]),
    "hidden": st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple),
    "epochs": st.integers(0, 2),
    "batch_size": st.integers(1, 8),
    "seed": st.integers(0, 1000),
})


def _fit(data: RatingSet, params: dict) -> CFN:
    return CFN(backend="numpy", **params).fit(data)


@SETTINGS
@given(data=rating_sets(), params=models)
def test_predictions_finite_and_within_scale(data, params):
    m = _fit(data, params)
    users = np.repeat(data.user_ids, data.n_items)
    items = np.tile(data.item_ids, data.n_users)
    pred = m.predict(users, items)
    low, high = data.scale
    assert pred.shape == (data.n_users * data.n_items,)
    assert np.all(np.isfinite(pred)) and np.all(pred >= low) and np.all(pred <= high)
    assert np.isfinite(m.score(data))


@SETTINGS
@given(data=rating_sets(), params=models)
def test_save_load_round_trip_is_identical(data, params):
    m = _fit(data, params)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = CFN.load(m.save(Path(tmp) / "m.npz"))
    np.testing.assert_array_equal(m.predict_indices(data.user, data.item),
                                  loaded.predict_indices(data.user, data.item))
    u = data.user_ids[0]
    for (a_ids, a_sc), (b_ids, b_sc) in zip(m.recommend_batch([u], 3), loaded.recommend_batch([u], 3)):
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_sc, b_sc)
    assert loaded.train_.user_ids.dtype == data.user_ids.dtype


@SETTINGS
@given(data=rating_sets(), params=models, n=st.integers(0, 15), exclude=st.booleans(),
       min_support=st.integers(0, 3))
def test_recommend_never_returns_seen_items(data, params, n, exclude, min_support):
    m = _fit(data, params)
    lists = m.recommend_batch(data.user_ids, n, exclude_seen=exclude, min_support=min_support)
    assert len(lists) == data.n_users
    low, high = data.scale
    support = np.bincount(data.item, minlength=data.n_items)
    for index, (ids, scores) in enumerate(lists):
        seen = data.item[data.user == index]
        eligible = support >= min_support
        if exclude:
            eligible[seen] = False
        assert len(ids) == min(n, int(eligible.sum())) and len(set(ids.tolist())) == len(ids)
        assert np.all(support[data.item_index(ids)] >= min_support)
        if exclude:
            assert not np.isin(ids, data.item_ids[seen]).any()
        assert np.all(np.diff(scores) <= 0) and np.all((scores >= low) & (scores <= high))


@SETTINGS
@given(data=rating_sets(), params=models, take=st.integers(0, 5))
def test_fold_in_is_finite_and_within_scale(data, params, take):
    m = _fit(data, params)
    other = data.item_ids if m.kind == "user" else data.user_ids
    ids = other[:take]
    low, high = data.scale
    ratings = np.linspace(low, high, len(ids))
    features = None if m.side_ is None else np.full(m.side_.shape[1], 0.5)
    fold = m.fold_in(ids, ratings, features=features)
    assert fold.ratings.shape == (len(other),)
    assert np.all(np.isfinite(fold.ratings)) and np.all((fold.ratings >= low) & (fold.ratings <= high))
    rec, _ = fold.recommend(len(other), min_support=0)
    assert not np.isin(rec, ids).any() and len(rec) == len(other) - len(ids)


@settings(max_examples=25, deadline=None)
@given(scores=st.lists(st.integers(0, 4).map(float), min_size=0, max_size=20), n=st.integers(0, 25),
       data=st.data())
def test_top_n_matches_a_stable_sort(scores, n, data):
    scores = np.array(scores, dtype=np.float64)
    exclude = np.array(data.draw(st.lists(st.integers(0, max(len(scores) - 1, 0)), max_size=len(scores))),
                       dtype=np.int64) if len(scores) else np.zeros(0, dtype=np.int64)
    got = top_n(scores, n, exclude)
    keep = np.setdiff1d(np.arange(len(scores)), exclude)
    expected = keep[np.argsort(-scores[keep], kind="stable")][:n]
    np.testing.assert_array_equal(got, expected)
