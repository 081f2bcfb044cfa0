"""Models that travel: pickle, cloudpickle, deepcopy, joblib (loky) and multiprocessing ``spawn`` ship a
CFN / StackedCFN to another process, which predicts bit for bit as the original; clone, get_params(deep),
set_params follow scikit-learn; to_backend moves a fitted model."""
from __future__ import annotations

import copy
import dataclasses
import logging
import multiprocessing
import pickle

import numpy as np
import pytest

from cfn_fast import CFN, NotFittedError, StackedCFN, available_backends, synthetic_ratings, train_test_split
from cfn_fast.backends import BackendUnavailable

cloudpickle = pytest.importorskip("cloudpickle")
joblib = pytest.importorskip("joblib")
sklearn_base = pytest.importorskip("sklearn.base")

CPU_BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
TRAIN, TEST = train_test_split(synthetic_ratings(150, 90, 3000, seed=5), 0.1, seed=1)
USERS = np.arange(TRAIN.n_users)


@pytest.fixture(scope="module", params=[(b, kind, side) for b in CPU_BACKENDS for kind in ("user", "item")
                                        for side in (True, False)],
                ids=lambda p: f"{p[0]}-{p[1]}-{'side' if p[2] else 'plain'}")
def fitted(request) -> CFN:
    backend, kind, side = request.param
    return CFN(kind, (12, 6), 2, backend=backend, use_side_info=side, seed=3).fit(TRAIN, validation=TEST)


def _outputs(model) -> dict[str, np.ndarray]:
    """Everything a worker would compute: pair predictions, top-10 lists, a fold-in row."""
    recs = model.recommend_batch(TRAIN.user_ids[USERS[:20]], 10)
    features = None if model.side_ is None else model.side_[0]
    sample_ids = TRAIN.item_ids if model.kind == "user" else TRAIN.user_ids
    fold = model.fold_in(sample_ids[:5], [4.0, 3.0, 5.0, 1.0, 2.0], features)
    return {"pairs": model.predict_indices(TEST.user, TEST.item), "rec_ids": np.concatenate([r[0] for r in recs]),
            "rec_scores": np.concatenate([r[1] for r in recs]), "fold": fold.ratings}


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)   # bit for bit


def _outputs_in_worker(model) -> dict[str, np.ndarray]:
    return _outputs(model)


# ----------------------------------------------------------------------------- in-process copies
@pytest.mark.parametrize("how", ["pickle", "pickle-protocol-2", "cloudpickle", "deepcopy"])
def test_fitted_model_copies_predict_bit_for_bit(fitted, how):
    expected = _outputs(fitted)
    copied = {"pickle": lambda m: pickle.loads(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)),
              "pickle-protocol-2": lambda m: pickle.loads(pickle.dumps(m, protocol=2)),
              "cloudpickle": lambda m: cloudpickle.loads(cloudpickle.dumps(m)),
              "deepcopy": copy.deepcopy}[how](fitted)
    assert not copied.runtime_.engine_built                      # rebuilt on first use ...
    _assert_identical(_outputs(copied), expected)
    assert copied.engine_ is not fitted.engine_                  # ... as its own engine
    assert copied.backend_ == fitted.backend_ and copied.get_params() == fitted.get_params()
    assert [r.as_dict() for r in copied.history_] == [r.as_dict() for r in fitted.history_]
    assert copied.epochs_trained_ == fitted.epochs_trained_ and copied.best_epoch_ == fitted.best_epoch_


def test_pickled_state_is_plain_data(fitted):
    state = fitted.__getstate__()
    assert set(state) == {"state_version", "attributes", "arrays", "config"}
    assert set(state["attributes"]) <= set(fitted.get_params()) | {"_validation"}   # no engine, no cache
    assert all(isinstance(a, np.ndarray) for a in state["arrays"].values())
    payload = pickle.dumps(fitted)
    assert b"SparseCFN" not in payload and b"CpuEngine" not in payload and b"NumpyEngine" not in payload


def test_ids_travel_unchanged():
    """A file stores bytes ids as unicode (no pickles there); a pickle keeps them exactly."""
    ids = np.array([b"u%05d" % k for k in TRAIN.user_ids])
    named = dataclasses.replace(TRAIN, user_ids=ids)
    m = CFN("user", (6,), 1, backend=CPU_BACKENDS[0]).fit(named)
    back = pickle.loads(pickle.dumps(m))
    assert back.train_.user_ids.dtype == ids.dtype
    np.testing.assert_array_equal(back.predict(ids[3:5], TRAIN.item_ids[:2]), m.predict(ids[3:5], TRAIN.item_ids[:2]))


def test_unfitted_models_travel_and_fit_the_same():
    for model in (CFN("item", (8,), 1, backend=CPU_BACKENDS[0], lr=0.05),
                  StackedCFN("item", (8, 4), 1, pretrain={"epochs": 1}, backend=CPU_BACKENDS[0])):
        for copied in (pickle.loads(pickle.dumps(model)), cloudpickle.loads(cloudpickle.dumps(model)),
                       copy.deepcopy(model)):
            assert type(copied) is type(model) and copied.get_params() == model.get_params()
            with pytest.raises(NotFittedError):
                copied.predict_indices(TEST.user, TEST.item)
    original = CFN("item", (8,), 2, backend=CPU_BACKENDS[0]).fit(TRAIN)
    shipped = pickle.loads(pickle.dumps(CFN("item", (8,), 2, backend=CPU_BACKENDS[0]))).fit(TRAIN)
    np.testing.assert_array_equal(shipped.predict_indices(TEST.user, TEST.item),
                                  original.predict_indices(TEST.user, TEST.item))


def test_unpickled_model_continues_training_exactly(fitted):
    copied = pickle.loads(pickle.dumps(fitted))
    reference = copy.deepcopy(fitted)          # leave the module fixture untouched
    reference.partial_fit(1)
    copied.partial_fit(1)
    assert copied.epochs_trained_ == reference.epochs_trained_ == 3
    for a, b in zip(reference.layers_, copied.layers_):
        for x, y in zip(a.arrays(), b.arrays()):
            np.testing.assert_array_equal(x, y)
    _assert_identical(_outputs(copied), _outputs(reference))


def test_a_state_from_another_version_is_refused(fitted):
    state = fitted.__getstate__()
    state["state_version"] = 99
    with pytest.raises(ValueError, match="state version 99"):
        CFN.__new__(CFN).__setstate__(state)


# ----------------------------------------------------------------------------- other processes
def test_joblib_loky_workers_predict_bit_for_bit(fitted):
    expected = _outputs(fitted)
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_outputs_in_worker)(fitted) for _ in range(2))
    for result in results:
        _assert_identical(result, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multiprocessing_spawn_worker_predicts_bit_for_bit(backend):
    model = CFN("item", (12,), 2, backend=backend, seed=2).fit(TRAIN)
    expected = _outputs(model)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_outputs_in_worker, (model,))
    _assert_identical(result, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_stacked_model_travels(backend):
    stacked = StackedCFN("item", (10, 5), 1, pretrain={"epochs": 1}, backend=backend, seed=1).fit(TRAIN)
    expected = stacked.predict_indices(TEST.user, TEST.item)
    for copied in (pickle.loads(pickle.dumps(stacked)), cloudpickle.loads(cloudpickle.dumps(stacked)),
                   copy.deepcopy(stacked)):
        np.testing.assert_array_equal(copied.predict_indices(TEST.user, TEST.item), expected)
        np.testing.assert_array_equal(copied.pretrained_.predict_indices(TEST.user, TEST.item),
                                      stacked.pretrained_.predict_indices(TEST.user, TEST.item))
    worker = joblib.Parallel(n_jobs=1, backend="loky")([joblib.delayed(_outputs_in_worker)(stacked.model_)])[0]
    _assert_identical(worker, _outputs(stacked.model_))


# ----------------------------------------------------------------------------- GPU model on a CPU machine
def test_model_pickled_on_cuda_falls_back_to_cpu_with_a_warning(caplog):
    if "cuda" in available_backends():
        pytest.skip("needs a machine without CUDA")
    model = CFN("item", (8,), 1, backend=CPU_BACKENDS[-1]).fit(TRAIN)
    expected = model.predict_indices(TEST.user, TEST.item)
    state = model.__getstate__()
    state["attributes"]["backend"] = state["config"]["backend_trained"] = "cuda"  # as fitted on a GPU machine
    payload = pickle.dumps(state)
    with caplog.at_level(logging.WARNING, logger="cfn_fast"):
        here = CFN.__new__(CFN)
        here.__setstate__(pickle.loads(payload))    # what unpickling a model does
    assert here.backend_ == ("cpu" if "cpu" in available_backends() else "numpy")
    assert "fitted on backend 'cuda' and now runs on" in caplog.text and "unavailable" in caplog.text
    assert here.backend == "cuda"                   # the parameter is the user's; only the engine moved
    np.testing.assert_array_equal(here.predict_indices(TEST.user, TEST.item), expected)


# ----------------------------------------------------------------------------- scikit-learn conventions
def test_clone_get_params_set_params_follow_scikit_learn(fitted):
    for model in (CFN("user", (7, 3), 4, lr=0.02, backend="numpy", seed=9),
                  StackedCFN("item", (9, 4), 2, pretrain={"epochs": 1}, seed=2), fitted):
        cloned = sklearn_base.clone(model)
        assert type(cloned) is type(model)
        assert cloned.get_params(deep=True) == model.get_params(deep=False) == model.get_params()
        assert not hasattr(cloned, "layers_")                     # a clone is unfitted
    model = CFN()
    assert model.set_params(hidden=(5,), epochs=1) is model and model.get_params()["hidden"] == (5,)
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        model.set_params(nope=1)
    assert sklearn_base.clone(model).fit(TRAIN).epochs_trained_ == 1


# ----------------------------------------------------------------------------- to_backend
@pytest.mark.parametrize("target", CPU_BACKENDS)
def test_to_backend_moves_a_fitted_model(fitted, target):
    before = fitted.predict_indices(TEST.user, TEST.item)
    engine = fitted.engine_
    moved = fitted.to_backend(target)
    assert moved is not fitted and moved.backend_ == target and moved.backend == target
    assert fitted.engine_ is engine and fitted.backend_ in CPU_BACKENDS           # the original is untouched
    predicted = moved.predict_indices(TEST.user, TEST.item)
    if target == fitted.backend_:
        np.testing.assert_array_equal(predicted, before)
    else:
        np.testing.assert_allclose(predicted, before, rtol=0, atol=1e-5)
    assert type(moved.engine_).name == target
    moved.partial_fit(1)
    assert moved.epochs_trained_ == fitted.epochs_trained_ + 1


def test_to_backend_errors_and_unfitted():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        CFN().to_backend("tpu")
    if "cuda" not in available_backends():
        with pytest.raises(BackendUnavailable, match="backend 'cuda' is unavailable"):
            CFN().to_backend("cuda")
    unfitted = CFN("item", (4,), 1).to_backend("numpy")
    assert unfitted.backend == "numpy" and not hasattr(unfitted, "layers_")


def test_stacked_to_backend():
    stacked = StackedCFN("item", (10, 5), 1, pretrain={"epochs": 1}, backend=CPU_BACKENDS[-1], seed=1).fit(TRAIN)
    moved = stacked.to_backend("numpy")
    assert moved.backend == "numpy" and moved.model_.backend_ == "numpy" and moved.pretrained_.backend_ == "numpy"
    assert stacked.model_.backend_ == CPU_BACKENDS[-1]
    np.testing.assert_allclose(moved.predict_indices(TEST.user, TEST.item),
                               stacked.predict_indices(TEST.user, TEST.item), rtol=0, atol=1e-5)
