"""Same results whatever the batch (issue 21): a user's scores, predictions, codes and outputs are bit-identical
whatever else is computed with them, on numpy and cpu; exact ties rank by ascending index, so ``recommend`` and
``recommend_batch`` agree."""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast import CFN, RatingSet, available_backends, rmse, synthetic_ratings, train_test_split

HOST_BACKENDS = [name for name in ("numpy", "cpu") if name in available_backends()]
SHAPES = {"stacked, side information": ((24, 12), True), "one layer": ((24,), False)}


@pytest.fixture(scope="module")
def split():
    return train_test_split(synthetic_ratings(150, 110, 4000, seed=3), 0.1, seed=0)


@pytest.fixture(scope="module", params=[(kind, backend, shape) for kind in ("user", "item")
                                        for backend in HOST_BACKENDS for shape in SHAPES],
                ids=lambda p: "-".join(p))
def model(request, split) -> CFN:
    kind, backend, shape = request.param
    hidden, side = SHAPES[shape]
    return CFN(kind, hidden, 2, backend=backend, use_side_info=side, seed=1).fit(split[0])


def _chunks(values: np.ndarray, size: int) -> list[np.ndarray]:
    return [values[start:start + size] for start in range(0, len(values), size)]


def test_recommend_scores_do_not_depend_on_the_batch(model):
    train = model.train_
    users = train.user_ids
    everything = dict(n=train.n_items, exclude_seen=False, min_support=0)
    full = model.recommend_batch(users, **everything)
    for chunk in (1, 7):
        for (ids, scores), (ids_all, scores_all) in zip(model.recommend_batch(users, chunk=chunk, **everything), full):
            assert np.array_equal(scores, scores_all) and np.array_equal(ids, ids_all)
    # the finding: recommend and recommend_batch ordered near-ties differently (scores 1e-8 apart)
    batch = model.recommend_batch(users[:30])
    for user, (ids, scores) in zip(users[:30], batch):
        one_ids, one_scores = model.recommend(user)
        assert np.array_equal(one_ids, ids) and np.array_equal(one_scores, scores)


def test_predictions_do_not_depend_on_the_batch(model, split):
    test = split[1]
    users, items = test.user_ids[test.user], test.item_ids[test.item]
    full = model.predict(users, items)
    one_by_one = np.concatenate([model.predict(users[k:k + 1], items[k:k + 1]) for k in range(40)])
    assert np.array_equal(one_by_one, full[:40])
    sevens = np.concatenate([model.predict(u, i) for u, i in zip(_chunks(users, 7), _chunks(items, 7))])
    assert np.array_equal(sevens, full)
    by_index = np.concatenate([model.predict_indices(u, i) for u, i in zip(_chunks(test.user, 7),
                                                                            _chunks(test.item, 7))])
    assert np.array_equal(by_index, full)
    assert model.score(test) == rmse(sevens, test.rating)


def test_codes_and_outputs_do_not_depend_on_the_batch(model):
    rows = model.train_.to_csr(model.kind_)
    side = model.side_
    codes = model.encode(rows, side)
    parts = [model.encode(rows[s:s + 7], None if side is None else side[s:s + 7]) for s in range(0, rows.shape[0], 7)]
    assert np.array_equal(np.concatenate(parts), codes)
    assert np.array_equal(model.encode(rows[5], None if side is None else side[5:6]), codes[5:6])
    decoded = model.decode(codes, side)
    for size in (1, 7):
        parts = [model.decode(codes[s:s + size], None if side is None else side[s:s + size])
                 for s in range(0, 28, size)]
        assert np.array_equal(np.concatenate(parts), decoded[:28])
    cols = np.arange(rows.shape[1])[::-1]
    by_cols = model.decode(codes, side, cols=cols)
    for size in (1, 7):
        parts = [model.decode(codes, side, cols=part) for part in _chunks(cols[:21], size)]
        assert np.array_equal(np.concatenate(parts, axis=1), by_cols[:, :21])


def _everything(model: CFN) -> dict:
    return dict(n=model.train_.n_items, exclude_seen=False, min_support=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_exact_ties_rank_by_ascending_index_ucfn(split, backend):
    model = CFN("user", (16,), 1, backend=backend, use_side_info=False, seed=2).fit(split[0])
    saturated = np.arange(3, model.train_.n_items, 4)
    model.layers_[-1].bias[saturated] = 50.0   # outputs pinned at tanh = 1: equal scores, equal unclipped scores
    tied = model.to_backend(backend)
    users = tied.train_.user_ids[:12]
    for user, (ids, _) in zip(users, tied.recommend_batch(users, **_everything(tied))):
        assert np.array_equal(tied.recommend(user, **_everything(tied))[0], ids)
        assert np.array_equal(ids[:len(saturated)], tied.train_.item_ids[saturated])


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_exact_ties_rank_by_ascending_index_icfn(split, backend):
    train = split[0]
    copies = 6   # item 0's ratings given to 6 more items: identical samples, so equal scores for every user
    take = train.item == 0
    user = np.concatenate([train.user] + [train.user[take]] * copies)
    item = np.concatenate([train.item] + [np.full(int(take.sum()), train.n_items + k) for k in range(copies)])
    rating = np.concatenate([train.rating] + [train.rating[take]] * copies)
    twins = RatingSet.from_arrays(user, item, rating, scale=train.scale)
    model = CFN("item", (16,), 1, backend=backend, use_side_info=False, seed=2).fit(twins)
    twin_ids = twins.item_ids[[0, *range(train.n_items, train.n_items + copies)]]
    users = twins.user_ids[:12]
    for user, (ids, _) in zip(users, model.recommend_batch(users, **_everything(model))):
        assert np.array_equal(model.recommend(user, **_everything(model))[0], ids)
        where = np.flatnonzero(np.isin(ids, twin_ids))
        assert np.array_equal(ids[where], twin_ids) and np.all(np.diff(where) == 1)


@pytest.mark.skipif("cpu" not in HOST_BACKENDS, reason="no compiled cpu kernels")
def test_cpu_outputs_do_not_depend_on_the_thread_count(split):
    model = CFN("item", (24,), 1, backend="cpu", seed=1).fit(split[0])
    engine = model.engine_
    codes = model.encode()
    users = np.arange(model.train_.n_users)[::-1]
    engine.threads = 1
    one = engine.decode(codes, model.side_, users), engine.decode(codes[:5], model.side_[:5])
    engine.threads = 2
    two = engine.decode(codes, model.side_, users), engine.decode(codes[:5], model.side_[:5])
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
