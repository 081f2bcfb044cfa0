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
    ("dtype", "float16", "dtype must be 'float32' or 'bfloat16', got 'float16'"),
    ("dtype", None, "dtype must be 'float32' or 'bfloat16', got None"),
])
def test_every_setting_is_checked_by_its_declaration(name, value, message):
    with pytest.raises(ValueError, match=message):
        resolve({"kind": "item", name: value})


def test_the_search_space_is_declared_with_the_settings():
    space = search_space()
    assert set(space) == {"lr", "lr_decay", "weight_decay", "alpha", "beta", "mask_ratio"}
    assert all(kind in ("log", "uniform") and low < high for kind, low, high in space.values())


@pytest.mark.parametrize("argv", [["demo"], ["fit", "--ratings", "ratings.csv"]])
def test_the_command_line_model_options_are_the_declared_settings(argv):
    from cfn_fast.cli import build_parser
    from cfn_fast.cli.common import model_from_args

    parser = build_parser()
    flagged = [s for s in SETTINGS if s.flag is not None]
    assert {s.name for s in SETTINGS} - {s.name for s in flagged} == {"verbose", "profile"}
    # left out, every option gives the declaration's default (the CLI's own where it declares one)
    params = model_from_args(parser.parse_args(argv)).get_params()
    for setting in flagged:
        expected = setting.cli.get("default", setting.default)
        assert params[setting.name] == (tuple(expected) if setting.name == "hidden" else expected), setting.name
    # given, each flag sets its setting
    values = {"kind": "blend", "quality": "best", "centring": "bias", "hidden": ["7", "5"], "epochs": "3",
              "alpha": "0.9", "beta": "0.3",
              "mask_ratio": "0.1", "lr": "0.02", "lr_decay": "0.5", "weight_decay": "0.01", "batch_size": "9",
              "backend": "numpy", "seed": "4", "dtype": "bfloat16", "dropout": "0.2"}
    sharding = {"shards": "3", "ray_address": "auto", "max_worker_bytes": "2G"}    # one network only: a second call
    kernelised = {"kernel_dim": "5"}              # not with dropout, bfloat16 or shards: a third call
    declared = {s.name for s in flagged}
    assert set(values) | set(sharding) | set(kernelised) | {"use_side_info"} == declared   # a new option: a value here
    given = [token for s in flagged if s.name in values
             for token in [s.flag, *([values[s.name]] if isinstance(values[s.name], str) else values[s.name])]]
    params = model_from_args(parser.parse_args([*argv, *given, "--no-side-info"])).get_params()
    assert params["use_side_info"] is False and params["hidden"] == (7, 5)
    for name in ("kind", "quality", "centring", "backend", "dtype"):
        assert params[name] == values[name]
    for name in ("epochs", "batch_size", "seed"):
        assert params[name] == int(values[name])
    for name in ("alpha", "beta", "mask_ratio", "lr", "lr_decay", "weight_decay", "dropout"):
        assert params[name] == float(values[name])
    given = [token for s in flagged if s.name in sharding for token in (s.flag, sharding[s.name])]
    params = model_from_args(parser.parse_args([*argv, "--kind", "item", *given])).get_params()
    assert (params["shards"], params["ray_address"], params["max_worker_bytes"]) == (3, "auto", 2 * 1024 ** 3)
    params = model_from_args(parser.parse_args([*argv, "--kind", "item", "--kernel-dim", "5"])).get_params()
    assert params["kernel_dim"] == 5


def test_dtype_is_an_engine_setting_with_its_storage_types():
    from cfn_fast.settings import DTYPES
    dtype = next(s for s in SETTINGS if s.name == "dtype")
    assert DTYPES == ("float32", "bfloat16") == dtype.cli["choices"]
    assert dtype.default == dtype.engine_default == "float32" and dtype.engine and dtype.search is None
    assert TrainConfig().dtype == "float32" and TrainConfig(dtype="bfloat16").dtype == "bfloat16"
    assert train_config(resolve({"kind": "item", "dtype": "bfloat16"})).dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16', got 'fp16'"):
        TrainConfig(dtype="fp16")
    model = CFN(dtype="bfloat16")
    assert model.get_params()["dtype"] == "bfloat16" and "dtype='bfloat16'" in repr(model)
    assert CFN().set_params(dtype="bfloat16").dtype == "bfloat16"
