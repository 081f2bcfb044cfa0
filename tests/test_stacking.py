"""Warm starts (``CFN.fit(initial_layers=...)``) and the layer-wise recipe of :class:`StackedCFN`."""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast import CFN, NotFittedError, StackedCFN, synthetic_ratings, train_test_split
from cfn_fast.network import init_layers
from cfn_fast.stacking import insert_middle_layers

TRAIN, TEST = train_test_split(synthetic_ratings(240, 160, 5000, seed=3), 0.1, seed=0)
PRETRAIN = {"epochs": 2, "lr": 0.08, "lr_decay": 0.2}


def _stacked(**kw) -> StackedCFN:
    settings = {"hidden": (12, 6), "epochs": 2, "pretrain": PRETRAIN, "backend": "numpy", "seed": 1, **kw}
    return StackedCFN("item", **settings)


def test_insert_middle_layers_builds_the_mirrored_stack():
    outer = init_layers(50, (12,), side_dim=3, seed=0)
    stack = insert_middle_layers(outer, 5, seed=1)
    assert [layer.weight.shape for layer in stack] == [(12, 50), (5, 12), (12, 5), (50, 12)]
    assert all(layer.side_weight.shape[1] == 3 for layer in stack)
    np.testing.assert_array_equal(stack[0].weight, outer[0].weight)
    np.testing.assert_array_equal(stack[-1].weight, outer[1].weight)
    assert stack[0].weight is not outer[0].weight                     # copies, the outer model is untouched
    deeper = insert_middle_layers(stack, 3, seed=2)
    assert [layer.weight.shape for layer in deeper][2:4] == [(3, 5), (5, 3)]
    with pytest.raises(ValueError, match="even number"):
        insert_middle_layers(stack[:3], 4)


def test_initial_layers_are_the_starting_point(backend):
    source = CFN("item", (10,), 2, backend=backend, use_side_info=False).fit(TRAIN)
    copy = CFN("item", (10,), 0, backend=backend, use_side_info=False, seed=7).fit(TRAIN, initial_layers=source.layers_)
    np.testing.assert_allclose(copy.predict_indices(TEST.user, TEST.item),
                               source.predict_indices(TEST.user, TEST.item), rtol=0, atol=1e-6)
    moved = CFN("item", (10,), 1, backend=backend, use_side_info=False).fit(TRAIN, initial_layers=source.layers_)
    assert not np.allclose(moved.layers_[0].weight, source.layers_[0].weight)
    np.testing.assert_array_equal(copy.layers_[0].weight, source.layers_[0].weight)   # the source is not modified


@pytest.mark.parametrize("make, error, message", [
    (lambda ls: ls[:1], ValueError, "sequence of 2 Layer"),
    (lambda ls: ["w", ls[1]], TypeError, r"initial_layers\[0\] must be a cfn_fast.network.Layer"),
    (lambda ls: [ls[0], type(ls[1])(ls[1].weight[:, :3], ls[1].bias)], ValueError,
     r"initial_layers\[1\].weight must have shape"),
    (lambda ls: [type(ls[0])(ls[0].weight * np.nan, ls[0].bias), ls[1]], ValueError, "NaN or infinite"),
])
def test_bad_initial_layers_are_named(make, error, message):
    layers = init_layers(TRAIN.n_users, (10,), 0, seed=0)
    with pytest.raises(error, match=message):
        CFN("item", (10,), 1, backend="numpy", use_side_info=False).fit(TRAIN, initial_layers=make(layers))


def test_initial_layers_must_match_the_side_information():
    plain = init_layers(TRAIN.n_users, (10,), 0, seed=0)
    with pytest.raises(ValueError, match=r"initial_layers\[0\].side_weight must have shape"):
        CFN("item", (10,), 1, backend="numpy", use_side_info=True).fit(TRAIN, initial_layers=plain)


def test_stacked_cfn_fine_tunes_the_pretrained_outer_layers():
    frozen = _stacked(epochs=0).fit(TRAIN)
    assert frozen.model_.get_params()["hidden"] == (12, 6, 12)
    outer = frozen.pretrained_.layers_
    np.testing.assert_array_equal(frozen.model_.layers_[0].weight, outer[0].weight)
    np.testing.assert_array_equal(frozen.model_.layers_[-1].weight, outer[-1].weight)
    assert frozen.pretrained_.get_params()["hidden"] == (12,) and frozen.pretrained_.epochs_trained_ == 2

    tuned = _stacked().fit(TRAIN, validation=TEST)
    assert len(tuned.history_) == 2 and tuned.history_[-1].validation_rmse == pytest.approx(tuned.score(TEST))
    assert not np.array_equal(tuned.model_.layers_[0].weight, tuned.pretrained_.layers_[0].weight)
    assert np.isfinite(tuned.score(TEST)) and tuned.score(TEST) < 1.2


def test_stacked_cfn_is_deterministic_and_saves_as_a_cfn(tmp_path):
    a, b = _stacked().fit(TRAIN), _stacked().fit(TRAIN)
    np.testing.assert_array_equal(a.predict_indices(TEST.user, TEST.item), b.predict_indices(TEST.user, TEST.item))
    loaded = CFN.load(a.save(tmp_path / "stacked.npz"))
    assert loaded.get_params()["hidden"] == (12, 6, 12)
    np.testing.assert_array_equal(loaded.predict_indices(TEST.user, TEST.item),
                                  a.predict_indices(TEST.user, TEST.item))


def test_three_levels_are_added_one_at_a_time():
    model = _stacked(hidden=(12, 8, 4), epochs=1).fit(TRAIN)
    assert [layer.weight.shape[0] for layer in model.model_.layers_] == [12, 8, 4, 8, 12, TRAIN.n_users]


def test_stacked_cfn_bad_settings():
    with pytest.raises(ValueError, match="at least two hidden widths"):
        _stacked(hidden=(12,)).fit(TRAIN)
    with pytest.raises(ValueError, match=r"pretrain: unknown setting\(s\) \['hiden'\]"):
        _stacked(pretrain={"hiden": 3}).fit(TRAIN)
    with pytest.raises(ValueError, match="mask_ratio must be"):
        _stacked(mask_ratio=1.5).fit(TRAIN)
    with pytest.raises(ValueError, match="unknown parameter 'depth'"):
        _stacked().set_params(depth=3)
    assert _stacked().set_params(epochs=4).get_params()["epochs"] == 4
    with pytest.raises(NotFittedError):
        _stacked().predict_indices(TEST.user, TEST.item)
