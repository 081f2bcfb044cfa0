"""Settings changed after ``fit`` (``set_params``, population-based training) reach the engine: the
next ``partial_fit`` equals a fresh engine built with those settings from the same layers."""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast import CFN
from cfn_fast.backends import TrainConfig, engine_class
from cfn_fast.data import synthetic_ratings
from cfn_fast.network import copy_layers
from cfn_fast.training.trainer import learning_rate

CHANGES = {"lr": 0.03, "lr_decay": 1.5, "weight_decay": 0.2, "alpha": 0.3, "beta": 1.4, "mask_ratio": 0.6,
           "batch_size": 7, "seed": 5}


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings(60, 40, 900, seed=3)


def _fitted(ratings, backend: str) -> CFN:
    return CFN("item", (8,), epochs=2, backend=backend, use_side_info=False, seed=1).fit(ratings)


def _layers_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for la, lb in zip(a, b) for x, y in zip(la.arrays(), lb.arrays()))


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_changed_setting_equals_a_fresh_engine_from_the_same_layers(ratings, backend, name):
    model = _fitted(ratings, backend)
    before = copy_layers(model.layers_)
    model.set_params(**{name: CHANGES[name]})
    model.partial_fit(1)

    p = model.resolved_params()
    config = TrainConfig(alpha=p["alpha"], beta=p["beta"], mask_ratio=p["mask_ratio"],
                         weight_decay=p["weight_decay"], batch_size=p["batch_size"], seed=model.seed)
    fresh = engine_class(backend)(copy_layers(before), config, model.inputs_, model.side_)
    fresh.train_epoch(3, learning_rate(p["lr"], p["lr_decay"], 3))
    assert _layers_equal(model.layers_, fresh.get_layers())

    unchanged = _fitted(ratings, backend).partial_fit(1)       # the setting matters: without it, another result
    assert not _layers_equal(model.layers_, unchanged.layers_)


def test_unchanged_settings_keep_the_engine(ratings):
    model = _fitted(ratings, "numpy")
    engine = model.engine_
    model.set_params(epochs=9, verbose=0).partial_fit(1)
    assert model.engine_ is engine


def test_changed_settings_after_load_reach_the_engine(ratings, tmp_path):
    model = _fitted(ratings, "numpy")
    path = model.save(tmp_path / "m.npz")
    loaded = CFN.load(path).set_params(mask_ratio=0.5, weight_decay=0.1)
    loaded.partial_fit(1)
    reference = _fitted(ratings, "numpy").set_params(mask_ratio=0.5, weight_decay=0.1).partial_fit(1)
    assert _layers_equal(loaded.layers_, reference.layers_)
    assert loaded.engine_.config.mask_ratio == 0.5 and loaded.engine_.config.weight_decay == 0.1


def test_changing_the_architecture_after_fit_is_refused(ratings):
    model = _fitted(ratings, "numpy").set_params(hidden=(4,))
    with pytest.raises(ValueError, match="hidden=.*does not match the fitted network; call fit"):
        model.partial_fit(1)


@pytest.mark.parametrize("change, message", [({"kind": "user"}, "kind='user' does not match the fitted model "
                                                                "(kind 'item')"),
                                             ({"centring": "bias"}, "centring='bias' does not match the fitted "
                                                                    "model (centring 'sample')")])
def test_changing_what_the_network_learned_after_fit_is_refused(ratings, change, message):
    """The kind and the centring fixed the training data; partial_fit must not go on under other ones."""
    model = _fitted(ratings, "numpy")
    before = copy_layers(model.layers_)
    model.set_params(**change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.partial_fit(1)
    assert _layers_equal(model.layers_, before)
    model.set_params(kind="auto", centring=None).partial_fit(1)   # "auto" / None: go on with what was fitted
    assert model.kind_ == "item" and model.centring_ == "sample"
