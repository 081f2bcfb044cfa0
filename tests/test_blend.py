"""CFN(kind="blend"), the default: the bias model and CFN networks weighted on validation
(cfn_fast.training.blending), and what a blend does through the product verbs."""
import math

import numpy as np
import pytest

from cfn_fast import CFN, RatingSet, train_test_split
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.preprocessing import BiasModel
from cfn_fast.training.blending import SHRINKAGE_GRID, blend_weights, candidate_params, choose_shrinkage

SMALL = {"hidden": (32,), "epochs": 10, "backend": "cpu"}


@pytest.fixture(scope="module")
def split():
    return train_test_split(synthetic_ratings(300, 150, 20_000, seed=3, side_info=False), 0.1, seed=0)


@pytest.fixture(scope="module")
def blend(split):
    return CFN(**SMALL).fit(split[0])


def test_the_default_kind_is_the_blend_and_the_paper_models_stay_reachable():
    assert CFN().kind == "blend" and CFN().quality == "default"
    assert CFN("item").kind == "item" and CFN("user").kind == "user"


def test_weights_recover_an_informative_member_and_ignore_noise():
    rng = np.random.default_rng(0)
    signal, noise = rng.normal(size=2000), rng.normal(size=2000)
    deltas = np.stack([signal, noise], axis=1)
    weights = blend_weights(deltas, 0.7 * signal + 0.1 * rng.normal(size=2000), 0.0)
    assert weights[0] == pytest.approx(0.7, abs=0.02) and weights[1] < 0.02
    assert np.all(blend_weights(deltas, -signal, 0.0) >= 0)          # never reversed
    assert np.all(blend_weights(deltas, signal, math.inf) == 0)      # infinite shrinkage: the bias model alone
    shrunk = blend_weights(deltas, 0.7 * signal, 100.0)
    assert 0 < shrunk[0] < 0.7


def test_cross_validation_keeps_the_bias_model_when_members_are_noise():
    rng = np.random.default_rng(1)
    residual = rng.normal(size=500)
    deltas = rng.normal(scale=0.5, size=(500, 4))
    shrinkage, errors = choose_shrinkage(deltas, residual, seed=0)
    assert shrinkage >= 300 and set(errors) == {str(s) for s in SHRINKAGE_GRID}
    informative = np.stack([residual + rng.normal(scale=0.3, size=500), rng.normal(size=500)], axis=1)
    assert choose_shrinkage(informative, residual, seed=0)[0] <= 30


def test_the_blend_is_chosen_on_validation_and_refitted(blend, split):
    train, test = split
    report = blend.blend_.report
    assert report["how"] == "validation part" and len(report["validation_rmse"]) == 5     # 4 networks, factors
    assert report["blend_rmse"] <= report["bias_rmse"]      # the weights never lose to the bias model where chosen
    assert 1 <= len(blend.fitted_.networks) <= 2 and np.all(blend.blend_.weights > 0)
    for network, params in zip(blend.fitted_.networks, blend.blend_.member_params):
        assert network.inputs.nnz == train.nnz and network.kind == params["kind"]   # refitted on all of train
    bias = BiasModel.fit(train).predict(test.user, test.item)
    bias_rmse = float(np.sqrt(np.mean((bias - test.rating) ** 2)))
    assert blend.score(test) <= bias_rmse
    assert blend.kind_ == "blend" and blend.resolved_params()["kind"] == "blend"


def test_predict_recommend_and_score_agree(blend, split):
    train, test = split
    by_index = blend.predict_indices(test.user, test.item)
    by_id = blend.predict(train.user_ids[test.user], train.item_ids[test.item])
    np.testing.assert_array_equal(by_index, by_id)
    low, high = train.scale
    assert np.all((by_index >= low) & (by_index <= high))
    items, scores = blend.recommend(train.user_ids[0], 5)
    np.testing.assert_allclose(scores, blend.predict(np.repeat(train.user_ids[0], 5), items), rtol=0, atol=1e-12)
    seen = set(train.item_ids[train.item[train.user == 0]].tolist())
    assert not seen & set(items.tolist())


def test_fold_in_blends_the_members_that_can_fold_in(blend, split):
    train, _ = split
    kinds = [p["kind"] for p in blend.blend_.member_params]
    for new, other_ids, kind in (("user", train.item_ids, "user"), ("item", train.user_ids, "item")):
        weights = blend.blend_.fold_in_weights[new]
        assert all(w == 0 for w, k in zip(weights, kinds) if k != kind)
        fold = blend.fold_in(other_ids[:6], [5, 4, 4, 3, 2, 1], new=new)
        assert fold.new == new and len(fold.ratings) == len(other_ids)
        assert np.all(np.isfinite(fold.ratings))
    # a new user defaults: what is folded in without new= is a user
    assert blend.fold_in(train.item_ids[:3], [5, 4, 3]).new == "user"


def test_a_blend_without_members_of_a_side_folds_in_with_the_bias_model(split):
    train, _ = split
    model = CFN(**SMALL, centring="sample").fit(train)
    bias = model.blend_.bias
    fold = model.fold_in(train.item_ids[:4], [5, 5, 4, 1], new="user")
    if not np.any(model.blend_.fold_in_weights["user"]):
        offset = bias.offset_of_new("user", np.arange(4), np.array([5.0, 5.0, 4.0, 1.0]))
        np.testing.assert_allclose(fold.ratings, np.clip(bias.row_of_new("user", offset), bias.low, bias.high))


def test_too_few_ratings_give_the_bias_model_alone():
    tiny = synthetic_ratings(30, 20, 150, seed=0, side_info=False)
    model = CFN(**SMALL).fit(tiny)
    assert model.fitted_.networks == () and "too few ratings" in model.blend_.report["how"]
    bias = BiasModel.fit(tiny)
    np.testing.assert_array_equal(model.predict_indices(tiny.user, tiny.item), bias.predict(tiny.user, tiny.item))
    assert len(model.recommend(tiny.user_ids[0], 3)[0]) <= 3
    assert CFN(hidden=(8,), epochs=0).fit(tiny).blend_.report["how"].endswith("(epochs=0)")


def test_a_validation_set_given_to_fit_is_used_without_refitting(split):
    train, test = split
    part, validation = train_test_split(train, 0.1, seed=5)
    model = CFN(**SMALL).fit(part, validation=validation)
    assert model.blend_.report["how"] == "validation set given to fit"
    assert all(network.inputs.nnz == part.nnz for network in model.fitted_.networks)


def test_one_network_verbs_ask_for_a_member(blend, split):
    with pytest.raises(ValueError, match="member=k"):
        blend.encode()
    with pytest.raises(ValueError, match="member=k"):
        blend.layers_  # noqa: B018
    with pytest.raises(ValueError, match="partial_fit continues one network"):
        blend.partial_fit(1)
    with pytest.raises(ValueError, match="member"):
        blend.encode(member=len(blend.fitted_.networks))
    codes = blend.encode(member=0)
    assert codes.shape[1] == 32
    member = blend.member(0)
    assert member.kind == blend.blend_.member_params[0]["kind"] and member.kind_ in ("item", "user")
    np.testing.assert_array_equal(member.encode(), codes)
    member.partial_fit(1)                                   # a copy: the blend is left as it is
    np.testing.assert_array_equal(blend.encode(member=0), codes)


def test_a_set_of_bias_and_noise_keeps_the_bias_model_alone():
    """Ratings that are μ + b_u + b_i and noise: no network nor the factors beat the bias model on validation,
    and the cross-validation keeps it alone (the same predictions exactly)."""
    rng = np.random.default_rng(0)
    pairs = rng.choice(400 * 200, 12_000, replace=False)
    users, items = pairs // 200, pairs % 200
    offsets = 3.5 + rng.normal(0, 0.5, 400)[users] + rng.normal(0, 0.5, 200)[items]
    ratings = RatingSet.from_arrays(users, items, np.clip(np.round(offsets + rng.normal(0, 1, 12_000)), 1, 5))
    train, test = train_test_split(ratings, 0.1, seed=0)
    model = CFN(hidden=(16,), epochs=3, backend="cpu").fit(train)
    report = model.blend_.report
    assert report["shrinkage"] == math.inf and model.fitted_.networks == () and model.blend_.factors == ()
    bias = BiasModel.fit(train).predict(test.user, test.item)
    np.testing.assert_array_equal(model.predict_indices(test.user, test.item), bias)


def test_quality_belongs_to_the_blend_and_best_weighs_more_networks(split):
    with pytest.raises(ValueError, match="quality"):
        CFN("item", quality="best").fit(split[0])
    with pytest.raises(ValueError, match="quality"):
        CFN(quality="great").fit(split[0])
    params = CFN(**SMALL).get_params()
    default, best = candidate_params(params, "default"), candidate_params(params, "best")
    assert len(default) == 4 and len(best) > len(default)
    assert all(p["quality"] == "default" and p["kind"] in ("item", "user") for p in best)
    with pytest.raises(ValueError, match="early_stopping, callbacks and initial_layers"):
        CFN(**SMALL).fit(split[0], callbacks=[lambda record: False])


@pytest.mark.parametrize("scale, half_stars", [((1, 5), True), ((1, 100), False), ((-10, 10), False)])
def test_the_default_is_at_or_below_the_bias_model_on_other_scales(scale, half_stars):
    ratings = synthetic_ratings(300, 150, 20_000, seed=7, side_info=False, scale=scale, half_stars=half_stars)
    train, test = train_test_split(ratings, 0.1, seed=0)
    model = CFN(**SMALL).fit(train)
    bias = BiasModel.fit(train).predict(test.user, test.item)
    bias_rmse = float(np.sqrt(np.mean((bias - test.rating) ** 2)))
    assert model.score(test) <= bias_rmse


def test_the_factor_member_predicts_folds_in_and_falls_back_on_the_bias_model(blend, split):
    from cfn_fast.training.factors import Factors
    train, test = split
    assert len(blend.blend_.factors) == 1 and blend.blend_.factor_weights["pairs"][0] > 0   # low-rank data
    assert blend.blend_.factor_weights["user"][0] > 0 and blend.blend_.factor_weights["item"][0] > 0
    factors, bias = Factors.fit(train, rank=8), BiasModel.fit(train)
    alone = factors.predict(bias, test.user, test.item)
    assert np.sqrt(np.mean((alone - test.rating) ** 2)) < np.sqrt(np.mean((bias.predict(test.user, test.item)
                                                                            - test.rating) ** 2))
    np.testing.assert_allclose(factors.user_scores(bias, test.user[:5])[np.arange(5), test.item[:5]], alone[:5])
    # a user without training ratings has zero factors: the bias model's prediction
    cold = Factors(np.zeros_like(factors.user_factors), factors.item_factors, factors.reg, factors.low, factors.high)
    np.testing.assert_array_equal(cold.predict(bias, test.user, test.item), bias.predict(test.user, test.item))
    row = factors.row_of_new(bias.predict(np.zeros(train.n_items, dtype=int), np.arange(train.n_items)), "user",
                             np.array([0, 1, 2]), np.array([5.0, 4.0, 1.0]))
    assert row.shape == (train.n_items,) and np.all((row >= 1) & (row <= 5))
    # on the scale 1..100 the factors work on 1..5 and map back
    wide = synthetic_ratings(200, 100, 6000, seed=1, side_info=False, scale=(1, 100))
    predicted = Factors.fit(wide, rank=4).predict(BiasModel.fit(wide), wide.user, wide.item)
    assert predicted.min() >= 1 and predicted.max() <= 100 and np.corrcoef(predicted, wide.rating)[0, 1] > 0.5
