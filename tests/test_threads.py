"""A fitted model shared by many threads: prediction, recommendation and fold-in give exactly what one
thread gives, and lazily built members (the engine after unpickling, the inference caches) are built once.
Throughput is measured in bench/thread_throughput.py, not here."""
from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cfn_fast.fitted.runtime as runtime_module
from cfn_fast import CFN, available_backends, synthetic_ratings, train_test_split

CPU_BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
TRAIN, TEST = train_test_split(synthetic_ratings(200, 120, 5000, seed=8), 0.1, seed=2)
N_THREADS = 8


def _work(model: CFN, k: int) -> dict[str, np.ndarray]:
    """Thread k's share: a slice of pair predictions, top-10 lists of some users, one fold-in."""
    rng = np.random.default_rng(k)
    users = rng.integers(0, TRAIN.n_users, 400)
    items = rng.integers(0, TRAIN.n_items, 400)
    recs = model.recommend_batch(TRAIN.user_ids[users[:15]], 10)
    other_ids = TRAIN.item_ids if model.kind == "user" else TRAIN.user_ids
    features = None if model.side_ is None else model.side_[k % model.side_.shape[0]]
    fold = model.fold_in(other_ids[k:k + 4], [1.0, 2.5, 4.0, 5.0], features)
    return {"pairs": model.predict_indices(users, items), "rec": np.concatenate([r[0] for r in recs]),
            "scores": np.concatenate([r[1] for r in recs]), "fold": fold.ratings}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["user", "item"])
def test_many_threads_give_what_one_thread_gives(backend, kind, monkeypatch):
    model = CFN(kind, (16, 8), 2, backend=backend, seed=4).fit(TRAIN)
    serial = [_work(model, k) for k in range(3 * N_THREADS)]
    # a fresh copy: engine and caches are not built yet, so the threads race to build them
    shared = pickle.loads(pickle.dumps(model))
    builds = []
    make_engine = runtime_module.make_engine

    def counting_make_engine(*args, **kwargs):
        builds.append(threading.get_ident())
        return make_engine(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "make_engine", counting_make_engine)   # what a runtime builds with
    barrier = threading.Barrier(N_THREADS)

    def job(k: int) -> dict[str, np.ndarray]:
        if k < N_THREADS:
            barrier.wait()        # the first wave starts together
        return _work(shared, k)

    with ThreadPoolExecutor(N_THREADS) as pool:
        parallel = list(pool.map(job, range(3 * N_THREADS)))
    assert len(builds) == 1                                   # one engine, however many threads asked
    for k, (a, b) in enumerate(zip(serial, parallel)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"job {k}: {name}")


def test_caches_are_built_once_under_contention():
    model = pickle.loads(pickle.dumps(CFN("item", (8,), 1, backend=CPU_BACKENDS[-1]).fit(TRAIN)))
    model.engine_                                             # build the engine first
    calls = []
    encode = model.engine_.encode

    def counting_encode(*args, **kwargs):
        calls.append(1)
        return encode(*args, **kwargs)

    model.engine_.encode = counting_encode
    barrier = threading.Barrier(N_THREADS)

    def job(_: int):
        barrier.wait()
        return model.recommend_batch(TRAIN.user_ids[:5], 5)

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(job, range(N_THREADS)))
    assert len(calls) == 1                                    # I-CFN item codes computed once
    for result in results[1:]:
        for (ids_a, scores_a), (ids_b, scores_b) in zip(results[0], result):
            np.testing.assert_array_equal(ids_a, ids_b)
            np.testing.assert_array_equal(scores_a, scores_b)
