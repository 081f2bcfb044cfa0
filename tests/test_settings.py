"""The one declaration of the settings (cfn_fast.settings) and everything derived from it."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from cfn_fast import CFN, DEFAULTS, StackedCFN
from cfn_fast.engine import TrainConfig
from cfn_fast.settings import PER_KIND, SETTING_NAMES, SETTINGS, resolve, search_space, train_config


def test_the_estimator_signature_and_params_come_from_the_declaration():
    params = list(inspect.signature(CFN).parameters)
    assert params == [s.name for s in SETTINGS if s.positional] + [s.name for s in SETTINGS if not s.positional]
    assert CFN.param_names == SETTING_NAMES and tuple(CFN().get_params()) == SETTING_NAMES
    assert CFN().get_params() == {s.name: s.default for s in SETTINGS}
    assert CFN("user", (8,), 3).get_params()["hidden"] == (8,)
    with pytest.raises(TypeError):
        CFN(learning_rate=0.1)


def test_stacked_cfn_takes_the_same_settings_plus_pretraining():
    assert set(StackedCFN.param_names) == (set(SETTING_NAMES) - {"profile"}) | {"pretrain"}
    assert StackedCFN().hidden == (700, 500) and StackedCFN().epochs == 15


def test_train_config_fields_are_declared_engine_settings():
    engine_settings = {s.name for s in SETTINGS if s.engine}
    assert {f.name for f in dataclasses.fields(TrainConfig)} == engine_settings
    resolved = resolve({"kind": "user", "seed": 3})
    config = train_config(resolved)
    assert config == TrainConfig(alpha=DEFAULTS["user"].alpha, beta=DEFAULTS["user"].beta,
                                 mask_ratio=DEFAULTS["user"].mask_ratio, weight_decay=DEFAULTS["user"].weight_decay,
                                 batch_size=DEFAULTS["user"].batch_size, seed=3)
    # the engine API keeps its own keyword defaults (versioned contract)
    assert TrainConfig() == TrainConfig(alpha=1.0, beta=0.5, mask_ratio=0.25, weight_decay=0.05, batch_size=35, seed=0)


def test_per_kind_defaults_and_resolution():
    per_kind = [s.name for s in SETTINGS if s.per_kind]
    assert [f.name for f in dataclasses.fields(DEFAULTS["item"])] == per_kind
    for kind in ("item", "user"):
        resolved = resolve({"kind": kind})
        assert all(resolved[name] == getattr(DEFAULTS[kind], name) for name in per_kind)
    assert resolve({"kind": "auto"})["kind"] == "item"       # validated against the item defaults before fit
    assert resolve({"kind": "item", "lr": 0.5})["lr"] == 0.5  # an explicit lr is used as given ...
    assert resolve({"kind": "item"}, known_per_sample=1200)["lr"] == pytest.approx(DEFAULTS["item"].lr / 2)
    assert resolve({"kind": "item", "lr": 0.5}, known_per_sample=1200)["lr"] == 0.5   # ... whatever the density
    assert PER_KIND


@pytest.mark.parametrize("name, value, message", [
    ("epochs", -1, "epochs must be an integer >= 0, got -1"),
    ("alpha", "x", "alpha must be a finite number >= 0, got 'x'"),
    ("mask_ratio", 1.0, r"mask_ratio must be a number in \[0, 1\), got 1.0"),
    ("batch_size", 2.5, "batch_size must be a positive integer, got 2.5"),
    ("centring", "mean", "centring must be None, 'sample' or 'bias', got 'mean'"),
    ("use_side_info", 1, "use_side_info must be True or False, got 1"),
])
def test_every_setting_is_checked_by_its_declaration(name, value, message):
    with pytest.raises(ValueError, match=message):
        resolve({"kind": "item", name: value})


def test_the_search_space_is_declared_with_the_settings():
    space = search_space()
    assert set(space) == {"lr", "lr_decay", "weight_decay", "alpha", "beta", "mask_ratio"}
    assert all(kind in ("log", "uniform") and low < high for kind, low, high in space.values())
