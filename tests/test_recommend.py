"""recommend / recommend_batch / fold_in, and the shared top-n ranking rule."""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast import CFN, synthetic_ratings, train_test_split
from cfn_fast.fitted.foldin import FoldIn
from cfn_fast.fitted.ranking import top_n
from cfn_fast.fitted.scoring import item_codes
from cfn_fast.model import FoldInError


@pytest.fixture(scope="module")
def split():
    return train_test_split(synthetic_ratings(300, 200, 6000, seed=0), 0.1, seed=0)


@pytest.fixture(scope="module", params=["user", "item"])
def fitted(request, split):
    return CFN(request.param, (16,), 3, backend="numpy").fit(split[0])


@pytest.fixture(scope="module")
def plain_split():
    return train_test_split(synthetic_ratings(300, 200, 6000, seed=0, side_info=False), 0.1, seed=0)


# ----------------------------------------------------------------------------- top_n
def test_top_n_orders_best_first_ties_by_index():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 0.5])
    np.testing.assert_array_equal(top_n(scores, 3), [1, 3, 2])
    np.testing.assert_array_equal(top_n(scores, 1), [1])
    np.testing.assert_array_equal(top_n(scores, 10), [1, 3, 2, 0, 4])
    assert len(top_n(scores, 0)) == 0


def test_top_n_excludes():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 0.5])
    np.testing.assert_array_equal(top_n(scores, 2, np.array([1])), [3, 2])
    np.testing.assert_array_equal(top_n(scores, 9, np.array([0, 1, 2, 3])), [4])
    assert len(top_n(scores, 3, np.arange(5))) == 0


def test_top_n_ties_at_the_boundary_are_deterministic():
    scores = np.array([2.0, 1.0, 2.0, 2.0, 1.0])
    np.testing.assert_array_equal(top_n(scores, 2), [0, 2])
    np.testing.assert_array_equal(top_n(scores, 4), [0, 2, 3, 1])


# ----------------------------------------------------------------------------- recommend
def test_recommend_scores_equal_predict_and_skip_seen(fitted, split):
    train = split[0]
    for user in (0, 17, 299):
        ids, scores = fitted.recommend(user, n=15, min_support=0)
        assert len(ids) == 15 and np.all(np.diff(scores) <= 0)
        seen = train.item_ids[train.item[train.user == user]]
        assert not np.isin(ids, seen).any()
        np.testing.assert_allclose(scores, fitted.predict(np.full(len(ids), user), ids), atol=1e-5)
        # the best unseen item according to predict is first
        all_items = train.item_ids
        pred = fitted.predict(np.full(len(all_items), user), all_items)
        pred[np.isin(all_items, seen)] = -np.inf
        assert scores[0] == pytest.approx(pred.max(), abs=1e-5)


def test_recommend_including_seen(fitted, split):
    train = split[0]
    user = 3
    ids, scores = fitted.recommend(user, n=train.n_items, exclude_seen=False, min_support=0)
    assert sorted(ids.tolist()) == train.item_ids.tolist()


def test_recommend_fewer_than_n_when_seen_exhausts(fitted, split):
    train = split[0]
    counts = np.bincount(train.user, minlength=train.n_users)
    user = int(np.argmax(counts))
    ids, _ = fitted.recommend(user, n=train.n_items, min_support=0)
    assert len(ids) == train.n_items - counts[user]


def test_recommend_batch_matches_single(fitted):
    users = [4, 0, 250, 4]
    batch = fitted.recommend_batch(users, n=7, chunk=3)
    assert len(batch) == 4
    for user, (ids, scores) in zip(users, batch):
        one_ids, one_scores = fitted.recommend(user, n=7)
        np.testing.assert_array_equal(ids, one_ids)
        np.testing.assert_allclose(scores, one_scores, atol=1e-6)   # BLAS rounding differs by batch


def test_recommend_rejects_many_users_and_unknown(fitted):
    with pytest.raises(ValueError, match="recommend takes one user id"):
        fitted.recommend([1, 2])
    with pytest.raises(KeyError, match="unknown user id"):
        fitted.recommend(10_000)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        fitted.recommend(1, n=-1)


def test_item_cfn_codes_are_cached_and_invalidated(split):
    m = CFN("item", (16,), 2, backend="numpy").fit(split[0])
    m.recommend(1)
    codes = item_codes(m.runtime_)
    m.recommend(2)
    assert item_codes(m.runtime_) is codes      # reused
    m.partial_fit(1)
    assert item_codes(m.runtime_) is not codes  # invalidated by training
    ids, scores = m.recommend(1, 5)
    np.testing.assert_allclose(scores, m.predict([1] * 5, ids), atol=1e-5)


@pytest.mark.parametrize("kind", ["user", "item"])
@pytest.mark.parametrize("side", [True, False])
def test_recommend_cold_user(kind, side):
    full = synthetic_ratings(120, 80, 2000, seed=1, side_info=side)
    train = full.subset((full.user != 5) & (full.item != 7))
    m = CFN(kind, (8,), 2, backend="numpy").fit(train)
    ids, scores = m.recommend(5, n=80, min_support=0)
    assert len(ids) == 80
    np.testing.assert_allclose(scores, m.predict([5] * 80, ids), atol=1e-5)


def test_string_ids(split):
    train = split[0]
    named = train.__class__.from_arrays(np.char.add("u", train.user_ids[train.user].astype(str)),
                                        np.char.add("i", train.item_ids[train.item].astype(str)),
                                        train.rating, scale=train.scale)
    m = CFN("user", (8,), 1, backend="numpy").fit(named)
    ids, scores = m.recommend("u3", 4)
    assert ids.dtype == object and all(i.startswith("i") for i in ids)
    fold = m.fold_in({"i1": 5.0, "i2": 3.0})
    assert fold.predict(["i1"]).shape == (1,)


# ----------------------------------------------------------------------------- fold-in
def test_fold_in_an_existing_row_reproduces_its_predictions(fitted, split):
    train = split[0]
    if fitted.kind == "user":
        u = 11
        sel = train.user == u
        fold = fitted.fold_in(train.item_ids[train.item[sel]], train.rating[sel],
                              features=train.user_features[u])
        expected = fitted.predict(np.full(train.n_items, u), train.item_ids)
        assert fold.new == "user" and np.array_equal(fold.ids, train.item_ids)
    else:
        i = 11
        sel = train.item == i
        fold = fitted.fold_in(train.user_ids[train.user[sel]], train.rating[sel],
                              features=train.item_features[i])
        expected = fitted.predict(train.user_ids, np.full(train.n_users, i))
        assert fold.new == "item" and np.array_equal(fold.ids, train.user_ids)
    np.testing.assert_allclose(fold.ratings, expected, atol=1e-5)
    np.testing.assert_allclose(fold.predict(fold.ids[:5]), expected[:5], atol=1e-5)
    np.testing.assert_array_equal(fold(fold.ids[:5]), fold.predict(fold.ids[:5]))
    assert "FoldIn(new" in repr(fold)


def test_fold_in_recommend_skips_given_ratings(fitted, split):
    train = split[0]
    side = train.user_features if fitted.kind == "user" else train.item_features
    other = train.item_ids if fitted.kind == "user" else train.user_ids
    fold = fitted.fold_in({other[0]: 5.0, other[1]: 1.0, other[2]: 4.0}, features=side[0])
    ids, scores = fold.recommend(10, min_support=0)
    assert len(ids) == 10 and not np.isin(ids, other[:3]).any() and np.all(np.diff(scores) <= 0)
    ids_all, _ = fold.recommend(len(other), exclude_seen=False, min_support=0)
    assert len(ids_all) == len(other)


def test_fold_in_dict_equals_arrays(fitted, split):
    train = split[0]
    side = (train.user_features if fitted.kind == "user" else train.item_features)[3]
    other = train.item_ids if fitted.kind == "user" else train.user_ids
    a = fitted.fold_in({other[5]: 2.0, other[9]: 5.0}, features=side)
    b = fitted.fold_in([other[9], other[5]], [5.0, 2.0], features=side)
    np.testing.assert_array_equal(a.ratings, b.ratings)


def test_fold_in_without_ratings_uses_side_information(fitted, split):
    train = split[0]
    side = train.user_features if fitted.kind == "user" else train.item_features
    a = fitted.fold_in(features=side[0])
    b = fitted.fold_in(features=side[-1])
    assert a.mean == pytest.approx(fitted.preprocessing_.global_mean)
    assert not np.array_equal(a.ratings, b.ratings)          # the features matter
    assert np.all((a.ratings >= 1) & (a.ratings <= 5))


def test_fold_in_without_ratings_or_side_uses_input_means(plain_split):
    train = plain_split[0]
    m = CFN("user", (8,), 1, backend="numpy").fit(train)
    fold = m.fold_in()
    item_means = np.bincount(train.item, weights=train.rating, minlength=train.n_items) / \
        np.bincount(train.item, minlength=train.n_items)
    np.testing.assert_allclose(fold.ratings, item_means, rtol=1e-6)


def test_fold_in_what_each_kind_can_do(split):
    train = split[0]
    icfn = CFN("item", (8,), 1, backend="numpy").fit(train)
    with pytest.raises(FoldInError, match="an I-CFN cannot fold in a new user: users are the input dimensions"):
        icfn.fold_in({0: 4.0}, features=train.item_features[0], new="user")
    ucfn = CFN("user", (8,), 1, backend="numpy").fit(train)
    with pytest.raises(FoldInError, match="a U-CFN cannot fold in a new item"):
        ucfn.fold_in({0: 4.0}, features=train.user_features[0], new="item")
    assert isinstance(ucfn.fold_in({0: 4.0}, features=train.user_features[0], new="user"), FoldIn)


def test_fold_in_bad_input(split, plain_split):
    m = CFN("user", (8,), 1, backend="numpy").fit(split[0])
    feats = split[0].user_features[0]
    with pytest.raises(ValueError, match="this model uses 12 user features: pass features="):
        m.fold_in({0: 4.0})
    with pytest.raises(ValueError, match="fold-in features must have 12 values"):
        m.fold_in({0: 4.0}, features=feats[:3])
    with pytest.raises(ValueError, match="fold-in features contain NaN"):
        m.fold_in({0: 4.0}, features=np.full(12, np.nan))
    with pytest.raises(ValueError, match="outside the scale"):
        m.fold_in({0: 9.0}, features=feats)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.fold_in({0: np.nan}, features=feats)
    with pytest.raises(ValueError, match="more than once"):
        m.fold_in([0, 0], [4.0, 3.0], features=feats)
    with pytest.raises(ValueError, match="differ in length"):
        m.fold_in([0, 1], [4.0], features=feats)
    with pytest.raises(KeyError, match="unknown item id"):
        m.fold_in({10_000: 4.0}, features=feats)
    with pytest.raises(KeyError, match="needs retraining"):
        m.fold_in({0: 4.0}, features=feats).predict([10_000])
    plain = CFN("user", (8,), 1, backend="numpy").fit(plain_split[0])
    with pytest.raises(ValueError, match="trained without user side information"):
        plain.fold_in({0: 4.0}, features=feats)
