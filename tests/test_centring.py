"""The bias model's centring (``CFN(centring="bias")``) and ``kind="auto"``'s validation run (issue 13)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from cfn_fast import CFN
from cfn_fast.data import synthetic_ratings, train_test_split
from cfn_fast.preprocessing import Preprocessing
from cfn_fast.tools import baselines as B
from cfn_fast.training.selection import MIN_RATINGS_FOR_VALIDATION, candidates

BACKENDS = ["numpy", "cpu"]


def _data(seed: int = 0, side: bool = False):
    return synthetic_ratings(160, 90, 2600, seed=seed, side_info=side, half_stars=True)


def _pairs(model: CFN):
    train = model.train_
    return train.user, train.item


# ----------------------------------------------------------------------------- the centring itself
@pytest.mark.parametrize("kind", ["item", "user"])
def test_bias_centring_is_the_regularised_bias_model(kind: str) -> None:
    """sample mean + input offset, in ratings, is μ + b_u + b_i of UserItemBias (same shrinkage)."""
    train, test = train_test_split(_data(), 0.1, seed=0)
    pre = Preprocessing.fit(kind, train, "bias")
    samples, inputs = (test.user, test.item) if kind == "user" else (test.item, test.user)
    ours = pre.invert(np.zeros(len(samples)), pre.pair_offsets(samples, inputs))[1]
    theirs = B.UserItemBias().fit(train).predict_indices(test.user, test.item)
    np.testing.assert_allclose(np.clip(ours, *train.scale), theirs, atol=2e-3)


def test_paper_centring_is_unchanged_and_has_no_offsets() -> None:
    train = _data()
    pre = Preprocessing.fit("item", train)
    assert pre.centring == "sample" and pre.input_offset is None
    expected = np.array([np.mean((train.rating[train.item == i] - 2.75) / 2.25) for i in range(5)])
    np.testing.assert_allclose(pre.sample_mean[:5], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="centring must be 'sample' or 'bias'"):
        Preprocessing.fit("item", train, "median")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["item", "user"])
@pytest.mark.parametrize("centring", ["sample", "bias"])
def test_every_path_inverts_the_same_centring(kind: str, centring: str, backend: str) -> None:
    """predict, decode of the training codes, fold-in of a training row, recommend, pickling and the
    file all agree: one centring, inverted the same way everywhere."""
    model = CFN(kind, centring=centring, hidden=(16,), epochs=2, backend=backend, seed=1).fit(_data())
    assert model.centring_ == centring and model.selection_ is None
    users, items = _pairs(model)
    predicted = model.predict_indices(users, items)
    codes, means = model.encode(return_means=True)
    grid = model.decode(codes, means=means)
    samples, inputs = (users, items) if kind == "user" else (items, users)
    np.testing.assert_allclose(grid[samples, inputs], predicted, atol=1e-5)
    # a training sample folded in as a new row gets its own training mean and the same predictions
    s = int(samples[0])
    own = samples == s
    other_ids = model.train_.item_ids if kind == "user" else model.train_.user_ids
    fold = model.fold_in(other_ids[inputs[own]], model.train_.rating[own])
    assert fold.mean == pytest.approx(float(model.preprocessing_.sample_mean[s]), abs=1e-6)
    np.testing.assert_allclose(fold.ratings, grid[s], atol=1e-5)
    # recommend scores are the predictions of the recommended items
    user = model.train_.user_ids[3]
    ids, scores = model.recommend(user, n=5, exclude_seen=False, min_support=0)
    np.testing.assert_allclose(scores, model.predict([user] * len(ids), ids), atol=1e-5)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_indices(users, items), predicted)
    assert again.centring_ == centring


@pytest.mark.parametrize("centring, version", [("sample", 1), ("bias", 2)])
def test_the_file_format_version_says_what_a_reader_needs(tmp_path, centring: str, version: int) -> None:
    model = CFN("user", centring=centring, hidden=(8,), epochs=1, backend="cpu").fit(_data())
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        assert int(z["cfn_version"][0]) == version
        assert ("pre_input_offset" in z.files) == (centring == "bias")
        assert json.loads(str(z["config"][0]))["params"]["centring"] == centring
    loaded = CFN.load(path)
    assert loaded.centring_ == centring
    users, items = _pairs(model)
    np.testing.assert_array_equal(loaded.predict_indices(users, items), model.predict_indices(users, items))


def test_bias_centring_beats_the_paper_centring_on_sparse_data() -> None:
    """About 3 ratings per user and 6 per item: the paper's centring stays above the bias model, the
    bias centring does not (the sweep's ``sparse`` set, small)."""
    data = synthetic_ratings(1200, 600, 3600, side_info=False, seed=0)
    train, test = train_test_split(data, 0.1, seed=0)
    bias = B.UserItemBias().fit(train).score(test)
    paper = CFN("item", backend="cpu").fit(train).score(test)            # library defaults: 600 hidden, 20 epochs
    ours = CFN("item", centring="bias", backend="cpu").fit(train).score(test)
    assert ours < bias < paper


def test_centring_is_validated() -> None:
    with pytest.raises(ValueError, match="centring must be None, 'sample' or 'bias', got 'mean'"):
        CFN("item", centring="mean").fit(_data())


# ----------------------------------------------------------------------------- kind="auto"
def test_candidates() -> None:
    assert candidates(None) == [("item", "sample"), ("item", "bias"), ("user", "sample"), ("user", "bias")]
    assert candidates("bias") == [("item", "bias"), ("user", "bias")]


def test_auto_trains_the_best_validation_candidate_on_all_of_train(tmp_path) -> None:
    data = _data(seed=2)
    model = CFN("auto", hidden=(16,), epochs=3, backend="cpu", seed=4).fit(data)
    choice = model.selection_
    assert choice.how == "validation part" and set(choice.validation_rmse) == {"item/sample", "item/bias",
                                                                          "user/sample", "user/bias"}
    best = min(choice.validation_rmse, key=choice.validation_rmse.get)
    assert f"{model.kind_}/{model.centring_}" == best == f"{choice.kind}/{choice.centring}"
    # what was trained is exactly the explicit model of that kind and centring, on all of train
    same = CFN(model.kind_, centring=model.centring_, hidden=(16,), epochs=3, backend="cpu", seed=4).fit(data)
    users, items = _pairs(model)
    np.testing.assert_array_equal(model.predict_indices(users, items), same.predict_indices(users, items))
    assert model.train_.nnz == data.nnz
    loaded = CFN.load(model.save(tmp_path / "auto.npz"))
    assert (loaded.kind_, loaded.centring_, loaded.selection_) == (model.kind_, model.centring_, model.selection_)
    assert pickle.loads(pickle.dumps(model)).selection_ == choice


def test_auto_scores_the_validation_set_given_to_fit_and_keeps_a_given_centring() -> None:
    train, validation = train_test_split(_data(seed=3), 0.1, seed=9)
    model = CFN("auto", centring="sample", hidden=(8,), epochs=2, backend="cpu").fit(train, validation=validation)
    assert model.selection_.how == "validation set given to fit"
    assert set(model.selection_.validation_rmse) == {"item/sample", "user/sample"}
    for key, value in model.selection_.validation_rmse.items():
        kind, centring = key.split("/")
        alone = CFN(kind, centring=centring, hidden=(8,), epochs=2, backend="cpu").fit(train)
        assert value == pytest.approx(alone.score(validation), abs=1e-12)


def test_auto_falls_back_on_the_shape_rule_without_data_to_validate() -> None:
    tiny = synthetic_ratings(40, 15, MIN_RATINGS_FOR_VALIDATION - 20, side_info=False, seed=0)
    model = CFN("auto", hidden=(4,), epochs=1, backend="numpy").fit(tiny)
    assert model.selection_.how.startswith("shape rule") and not model.selection_.validation_rmse
    assert model.kind_ == "user" and model.centring_ == "bias"      # 15 items < 40 users: items better observed,
    zero = CFN("auto", hidden=(4,), epochs=0, backend="numpy").fit(_data())  # but under 1,000 of them
    assert zero.selection_.how == "shape rule (epochs=0)"


def test_auto_is_deterministic_for_a_seed() -> None:
    data = _data(seed=5)
    a = CFN("auto", hidden=(8,), epochs=2, backend="cpu", seed=7).fit(data)
    b = CFN("auto", hidden=(8,), epochs=2, backend="cpu", seed=7).fit(data)
    assert a.selection_.validation_rmse == b.selection_.validation_rmse
    users, items = _pairs(a)
    np.testing.assert_array_equal(a.predict_indices(users, items), b.predict_indices(users, items))
