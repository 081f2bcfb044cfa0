"""Defaults that hold on any rating data (issue 13): density-aware step, kind="auto", the warning for
unused side features, scale-aware baselines and the sweep's smoke run (the bias centring and kind="auto"'s
validation run: tests/test_centring.py)."""
from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from cfn_fast import CFN
from cfn_fast.data import synthetic_ratings, train_test_split
from cfn_fast.data.ratings import RatingSet
from cfn_fast.settings import AUTO_MIN_SAMPLES, DEFAULTS, REFERENCE_KNOWN_PER_SAMPLE, choose_kind, density_step_factor
from cfn_fast.tools import baselines as B
from cfn_fast.tools.baselines.common import REFERENCE_SCALE, to_reference_scale

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- density-aware step
@pytest.mark.parametrize("kind, ml1m_density", [("item", 243.0), ("user", 149.0)])
def test_ml1m_density_keeps_the_tuned_step(kind: str, ml1m_density: float) -> None:
    assert density_step_factor(kind, ml1m_density) == 1.0
    assert density_step_factor(kind, 2.0) == 1.0          # sparse data never gets a larger step


@pytest.mark.parametrize("kind", ["item", "user"])
def test_dense_data_gets_a_step_shrinking_like_one_over_root_density(kind: str) -> None:
    ref = REFERENCE_KNOWN_PER_SAMPLE[kind]
    assert density_step_factor(kind, 4 * ref) == pytest.approx(0.5)
    assert density_step_factor(kind, 100 * ref) == pytest.approx(0.1)


def _dense_narrow() -> RatingSet:
    # 1,500 users x 20 items at 90 % density: about 1,200 ratings per item, scale -10..10
    return synthetic_ratings(1500, 20, 27_000, scale=(-10, 10), side_info=False, max_density=0.9, seed=0)


def test_default_lr_follows_the_density_and_an_explicit_lr_is_used_as_given() -> None:
    train = _dense_narrow()
    model = CFN("item", hidden=(8,), epochs=1, backend="numpy").fit(train)
    known = train.nnz / train.n_items
    expected = DEFAULTS["item"].lr * math.sqrt(REFERENCE_KNOWN_PER_SAMPLE["item"] / known)
    assert model.resolved_params()["lr"] == pytest.approx(expected)
    assert model.history_[0].lr == pytest.approx(expected / (1 + DEFAULTS["item"].lr_decay))
    explicit = CFN("item", hidden=(8,), epochs=1, lr=0.07, backend="numpy").fit(train)
    assert explicit.resolved_params()["lr"] == 0.07


def test_dense_data_trains_with_the_defaults_on_every_seed() -> None:
    train, test = train_test_split(_dense_narrow(), 0.1, seed=0)
    floor = B.GlobalMean().fit(train).score(test)
    for seed in range(3):
        model = CFN("user", hidden=(32,), epochs=5, backend="cpu", seed=seed).fit(train)
        assert model.score(test) < floor


def test_resolved_lr_survives_save_and_load(tmp_path) -> None:
    model = CFN("item", hidden=(8,), epochs=1, backend="numpy").fit(_dense_narrow())
    loaded = CFN.load(model.save(tmp_path / "m.npz"))
    assert loaded.resolved_params()["lr"] == pytest.approx(model.resolved_params()["lr"])


# ----------------------------------------------------------------------------- kind="auto"
def test_choose_kind_rule() -> None:
    assert choose_kind(6040, 3706, 900_000) == "item"          # ML-1M: items are the better-observed side
    assert choose_kind(943, 1682, 90_000) == "item"            # ML-100K: users denser but under 1,000 of them
    assert choose_kind(1000, 4000, 24_000) == "user"           # many sparse items, 1,000 users
    assert choose_kind(100, 5000, 400_000) == "item"           # wide: too few users for U-CFN
    assert choose_kind(5000, 100, 400_000) == "user"           # narrow: too few items for I-CFN
    assert choose_kind(5000, AUTO_MIN_SAMPLES, 10_000) == "item"
    assert choose_kind(500, 500, 10_000) == "item"             # ties go to items
    assert choose_kind(300, 200, 5_000) == "user"


def test_auto_kind_is_reported_persisted_and_used(tmp_path) -> None:
    data = synthetic_ratings(120, 30, 1500, side_info=False, seed=1)
    model = CFN("auto", centring="sample", hidden=(8,), epochs=1, backend="numpy").fit(data)
    kind = model.kind_
    assert model.kind == "auto" and kind == model.selection_.kind
    assert model.resolved_params()["kind"] == kind
    assert model.resolved_params()["lr"] == DEFAULTS[kind].lr
    assert model.preprocessing_.kind == kind
    loaded = CFN.load(model.save(tmp_path / "auto.npz"))
    assert loaded.kind_ == kind
    np.testing.assert_allclose(loaded.predict_indices(data.user, data.item),
                               model.predict_indices(data.user, data.item))
    ids = data.item_ids if kind == "user" else data.user_ids
    model.fold_in({ids[0]: 4.0})                               # a sample of the kind it chose


def _demo(*options: str) -> dict:
    import contextlib
    import io
    import json

    from cfn_fast.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["demo", "--users", "60", "--items", "40", "--ratings", "600", "--epochs", "1", "--hidden", "8",
              "--backend", "numpy", "--json", *options])
    return json.loads(out.getvalue())


def test_cli_defaults_to_the_blend() -> None:
    result = _demo()
    assert result["kind"] == "blend" and result["centring"] is None
    blend = result["blend"]
    assert blend["how"] == "validation set given to fit" and len(blend["validation_rmse"]) == 5  # and factors
    assert blend["blend_rmse"] <= blend["bias_rmse"]
    assert all(member["weight"] > 0 and member["kind"] in ("item", "user") for member in blend["members"])


def test_cli_kind_auto_reports_its_choice() -> None:
    result = _demo("--kind", "auto")
    assert result["kind"] == result["selection"]["kind"] and result["centring"] == result["selection"]["centring"]
    assert len(result["selection"]["validation_rmse"]) == 4


# ----------------------------------------------------------------------------- unused side features
def test_features_of_the_unused_side_warn_naming_the_used_side() -> None:
    data = synthetic_ratings(60, 40, 600, side_info=False, seed=0)
    with pytest.warns(UserWarning, match="user_features are ignored: a I-CFN uses only item features"):
        CFN("item", hidden=(4,), epochs=0, backend="numpy").fit(data, user_features=np.ones((60, 3)))
    with pytest.warns(UserWarning, match="item_features are ignored: a U-CFN uses only user features"):
        CFN("user", hidden=(4,), epochs=0, backend="numpy").fit(data, item_features=np.ones((40, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CFN("user", hidden=(4,), epochs=0, backend="numpy").fit(data, user_features=np.ones((60, 3)))


# ----------------------------------------------------------------------------- scale-aware baselines
def _rescaled(data: RatingSet, low: float, high: float) -> RatingSet:
    a, b = (float(s) for s in data.scale)
    mapped = low + (data.rating.astype(np.float64) - a) * (high - low) / (b - a)
    return RatingSet(data.user, data.item, mapped.astype(np.float32), data.user_ids, data.item_ids, (low, high),
                     data.user_features, data.item_features)


def test_reference_scale_map_is_the_identity_on_1_to_5() -> None:
    data = synthetic_ratings(50, 30, 400, seed=0)
    assert to_reference_scale(data) is data
    other = to_reference_scale(_rescaled(data, -10, 10))
    assert other.scale == REFERENCE_SCALE
    np.testing.assert_allclose(other.rating, data.rating, atol=1e-5)


QUICK_BASELINES = [B.UserItemBias(), B.ALSWR(rank=5, n_iter=3), B.BPMF(rank=4, n_samples=3, burn_in=1),
                   B.SVDFeature(rank=8, n_epochs=3), B.LLORMA(rank=4, n_anchors=2, n_iter=2, embedding_rank=3),
                   B.IAutoRec(hidden=8, max_iter=5), B.LinearICFN(hidden=(8,), epochs=2)]


@pytest.mark.parametrize("baseline", QUICK_BASELINES, ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("low, high", [(1, 100), (-10, 10)])
def test_baselines_are_scale_equivariant(baseline: B.Baseline, low: float, high: float) -> None:
    """Fitting on a linearly rescaled copy gives exactly the rescaled predictions: the defaults hold on any scale."""
    data = synthetic_ratings(80, 50, 1200, seed=3)
    train, test = train_test_split(data, 0.2, seed=0)
    base = type(baseline)(**baseline.get_params()).fit(train).predict_indices(test.user, test.item)
    scaled_train = _rescaled(train, low, high)
    got = type(baseline)(**baseline.get_params()).fit(scaled_train).predict_indices(test.user, test.item)
    expected = low + (base - 1.0) * (high - low) / 4.0
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * (high - low))


# ----------------------------------------------------------------------------- synthetic data, packaging
@pytest.mark.parametrize("scale", [(1, 100), (-10, 10)])
def test_synthetic_ratings_on_other_scales(scale: tuple[int, int]) -> None:
    data = synthetic_ratings(100, 20, 1800, scale=scale, side_info=False, max_density=0.9, seed=0)
    assert data.scale == (float(scale[0]), float(scale[1])) and data.nnz == 1800
    assert data.rating.min() >= scale[0] and data.rating.max() <= scale[1]
    assert np.all(data.rating == np.round(data.rating)) and len(np.unique(data.rating)) > 10
    with pytest.raises(ValueError, match="max_density"):
        synthetic_ratings(10, 10, 50, max_density=0.95)


def test_synthetic_default_is_unchanged_by_the_new_parameters() -> None:
    a = synthetic_ratings(200, 100, 3000, seed=4)
    b = synthetic_ratings(200, 100, 3000, seed=4, scale=None, max_density=0.5)
    np.testing.assert_array_equal(a.rating, b.rating)
    assert a.scale == (1.0, 5.0)


def test_threadpoolctl_is_a_core_dependency() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    dependencies = text[text.index("dependencies = ["):text.index("]", text.index("dependencies = ["))]
    assert '"threadpoolctl' in dependencies
    from threadpoolctl import threadpool_info

    from cfn_fast.tools.baselines.common import single_thread_blas
    with single_thread_blas():
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")


# ----------------------------------------------------------------------------- the sweep's smoke run
def test_sweep_quick_mode_runs_and_prints_every_row(capsys) -> None:
    spec = importlib.util.spec_from_file_location("sweep_defaults", ROOT / "bench" / "sweep_defaults.py")
    sweep = importlib.util.module_from_spec(spec)
    sys.modules["sweep_defaults"] = sweep
    spec.loader.exec_module(sweep)
    assert len([s for s in sweep.FULL_SETS if not s.name.startswith("ml-")]) >= 8
    sweep.main(["--quick", "--seeds", "1", "--sets", "q-sparse,q-narrow"])
    out = capsys.readouterr().out
    for row in ("I-CFN", "U-CFN", "I-CFN, bias centring", "U-CFN, bias centring", "auto", "Global mean", "Item mean",
                "Bias", "ALS-WR", "BPMF", "SVDFeature", "LLORMA", "I-AutoRec", "Linear I-CFN"):
        assert f"| {row}" in out
    assert "q-narrow" in out and "auto" in out
