"""Dropout on the hidden layers (``dropout=p``, not in the paper): the draws, the reference's gradients
against finite differences, ``dropout=0`` as the paper's step, and the cpu engine against the reference."""
from __future__ import annotations

import numpy as np
import pytest
from test_backends import HIDDEN, SHAPES, assert_layers_close, assert_layers_equal, make_engine, make_problem
from test_reference import as64, random_csr

import cfn_fast.backends as backends
from cfn_fast import CFN, synthetic_ratings, train_test_split
from cfn_fast.backends import resolve_backend, trains_dropout
from cfn_fast.backends.base import TrainConfig
from cfn_fast.backends.numpy_backend import NumpyEngine, backward, corrupted_batch, forward, reconstruction_loss
from cfn_fast.corruption import (
    dropout_key,
    dropout_multipliers,
    dropout_scale,
    dropout_threshold,
    epoch_key,
    mask_threshold,
)
from cfn_fast.engine import make_engine as make_engine_api
from cfn_fast.network import init_layers


# ----------------------------------------------------------------------------- the draws
def test_multipliers_depend_on_the_sample_not_on_its_batch():
    key, widths = dropout_key(3, 2), (40, 30)
    threshold, scale = dropout_threshold(0.3), dropout_scale(0.3)
    everyone = dropout_multipliers(key, np.arange(50), widths, threshold, scale)
    some = dropout_multipliers(key, np.array([17, 4, 33]), widths, threshold, scale)
    for layer_all, layer_some, width in zip(everyone, some, widths):
        assert layer_all.shape == (50, width) and layer_all.dtype == np.float32
        np.testing.assert_array_equal(layer_some, layer_all[[17, 4, 33]])
        assert set(np.unique(layer_all)) == {np.float32(0.0), scale}
    dropped = np.mean(np.concatenate([m.ravel() for m in everyone]) == 0)
    assert dropped == pytest.approx(0.3, abs=0.03)
    # another epoch draws anew; the layers draw different units
    other = dropout_multipliers(dropout_key(3, 3), np.arange(50), widths, threshold, scale)
    assert not np.array_equal(other[0], everyone[0])
    assert not np.array_equal(everyone[0][:, :30], everyone[1])


def test_dropout_key_is_not_the_masking_key():
    assert dropout_key(0, 1) != epoch_key(0, 1)
    with pytest.raises(ValueError, match="dropout must be in"):
        dropout_threshold(1.0)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        TrainConfig(dropout=1.0)


# ----------------------------------------------------------------------------- the reference
def dropped_loss(layers, X, known, hidden, side, alpha, beta, multipliers) -> float:
    acts = forward(layers, np.where(known & ~hidden, X, 0.0), side, multipliers)
    return reconstruction_loss(acts[-1], X, known, hidden, alpha, beta)[0]


@pytest.mark.parametrize("hidden", [(7,), (6, 5)])
@pytest.mark.parametrize("side_dim", [0, 3])
def test_gradients_with_dropout_match_finite_differences(hidden, side_dim):
    rng = np.random.default_rng(1)
    samples = random_csr(6, 11, 0.5, seed=2)
    layers = as64(init_layers(11, hidden, side_dim, seed=3))
    side = rng.normal(size=(6, side_dim)) if side_dim else None
    rows = np.arange(6)
    X, known, hidden_mask = corrupted_batch(samples, rows, epoch_key(0, 1), mask_threshold(0.4))
    X = X.astype(np.float64)
    multipliers = dropout_multipliers(dropout_key(0, 1), rows, hidden, dropout_threshold(0.4), dropout_scale(0.4))
    assert all((m == 0).any() and (m > 1).any() for m in multipliers)
    alpha, beta = 1.3, 0.4
    acts = forward(layers, np.where(known & ~hidden_mask, X, 0.0), side, multipliers)
    _, out_grad = reconstruction_loss(acts[-1], X, known, hidden_mask, alpha, beta)
    grads = backward(layers, acts, side, out_grad, multipliers)
    eps = 1e-6
    for layer, grad in zip(layers, grads):
        for param, g in zip(layer.arrays(), grad.arrays()):
            for index in list(np.ndindex(param.shape))[:: max(1, param.size // 25)]:
                old = param[index]
                param[index] = old + eps
                up = dropped_loss(layers, X, known, hidden_mask, side, alpha, beta, multipliers)
                param[index] = old - eps
                down = dropped_loss(layers, X, known, hidden_mask, side, alpha, beta, multipliers)
                param[index] = old
                assert g[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def paper_step(layers, samples, side, rows, epoch, lr, config):
    """The reference's step as it was before dropout, written out: forward, loss, backward, SGD."""
    X, known, hidden = corrupted_batch(samples, rows, epoch_key(config.seed, epoch), mask_threshold(config.mask_ratio))
    part = None if side is None else side[rows]
    acts = [np.where(known & ~hidden, X, np.float32(0.0))]
    for layer in layers:
        z = acts[-1] @ layer.weight.T + layer.bias
        if part is not None:
            z += part @ layer.side_weight.T
        acts.append(np.tanh(z))
    loss, out_grad = reconstruction_loss(acts[-1], X, known, hidden, config.alpha, config.beta)
    delta, grads = out_grad * (1.0 - acts[-1] ** 2), []
    for index in range(len(layers) - 1, -1, -1):
        grads.append([delta.T @ acts[index], delta.sum(axis=0)] + ([] if part is None else [delta.T @ part]))
        if index > 0:
            delta = (delta @ layers[index].weight) * (1.0 - acts[index] ** 2)
    shrink, step = np.float32(1.0 - lr * config.weight_decay), np.float32(lr / len(rows))
    for layer, grad in zip(layers, grads[::-1]):
        for param, g in zip(layer.arrays(), grad):
            param *= shrink
            param -= step * g
    return loss


@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_no_dropout_is_the_paper_step_bit_for_bit(hidden, side_dim):
    samples, side, layers = make_problem("I-like", hidden, side_dim, seed=4)
    config = TrainConfig(batch_size=6, seed=2, dropout=0.0)
    engine = NumpyEngine(layers, config, samples, side)
    mine = [layer.copy() for layer in layers]
    for step, rows in enumerate([np.array([4, 0, 9, 2, 17]), np.array([1, 5, 6, 7, 8, 10])]):
        assert engine.sgd_step(rows, 1 + step, 0.1) == paper_step(mine, samples, side, rows, 1 + step, 0.1, config)
    assert_layers_equal(engine.get_layers(), mine)


def test_dropout_changes_training_not_inference():
    samples, side, layers = make_problem("I-like", (12, 9), 4, seed=5)
    plain = NumpyEngine(layers, TrainConfig(batch_size=6), samples, side)
    dropping = NumpyEngine(layers, TrainConfig(batch_size=6, dropout=0.5), samples, side)
    np.testing.assert_array_equal(dropping.encode(samples, side), plain.encode(samples, side))
    rows = np.arange(6)
    assert dropping.gradients(rows, 1)[0] != plain.gradients(rows, 1)[0]


# ----------------------------------------------------------------------------- the cpu engine
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_cpu_gradients_and_steps_with_dropout_match_reference(shape, hidden, side_dim):
    samples, side, layers = make_problem(shape, hidden, side_dim, seed=3)
    config = TrainConfig(batch_size=8, seed=5, dropout=0.3)
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine("cpu", layers, config, samples, side)
    rows = np.array([0, 1, 2, 3, 5, 8, 13, 20])   # with the empty row 1 and single-rating rows 2, 3
    loss_ref, grads_ref = ref.gradients(rows, 1)
    loss, grads = engine.gradients(rows, 1)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    assert_layers_close(grads, grads_ref, 1e-4, "gradient")
    for step, batch in enumerate([np.array([4, 0, 9, 2, 17]), np.array([3]), np.array([1, 5, 6, 7, 8, 10, 11])]):
        loss_ref = ref.sgd_step(batch, epoch=1 + step, lr=0.1)
        loss = engine.sgd_step(batch, epoch=1 + step, lr=0.1)
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert_layers_close(engine.get_layers(), ref.get_layers(), 1e-5, f"after step {step}")


def test_cpu_epoch_with_dropout_matches_reference_whatever_the_threads():
    samples, side, layers = make_problem("U-like", (12, 9), 4, seed=6)
    config = TrainConfig(batch_size=7, seed=1, dropout=0.25)
    ref = NumpyEngine(layers, config, samples, side)
    results = []
    for threads in (1, 2):
        engine = make_engine("cpu", layers, config, samples, side, threads=threads)
        loss = engine.train_epoch(2, 0.1)
        results.append(engine.get_layers())
    assert loss == pytest.approx(ref.train_epoch(2, 0.1), rel=1e-5)
    assert_layers_close(results[0], ref.get_layers(), 1e-5, "epoch")
    assert_layers_equal(results[1], results[0])


# ----------------------------------------------------------------------------- cuda and the estimator
RATINGS = synthetic_ratings(120, 70, 2000, seed=3)
CUDA_MESSAGE = "dropout is not on cuda yet; use backend='cpu' or 'numpy'"


def test_cuda_refuses_dropout_before_any_gpu_work():
    from cfn_fast.backends.cuda_backend import CudaEngine  # imports no CuPy: the refusal comes first
    samples, side, layers = make_problem("I-like", (8,), 0)
    with pytest.raises(ValueError, match=CUDA_MESSAGE):
        CudaEngine(layers, TrainConfig(dropout=0.2), samples, side)
    with pytest.raises(ValueError, match=CUDA_MESSAGE):
        make_engine_api("cuda", layers, TrainConfig(dropout=0.2), samples, side)
    with pytest.raises(ValueError, match=CUDA_MESSAGE):
        CFN("item", (8,), 1, backend="cuda", dropout=0.2).fit(RATINGS)
    assert not trains_dropout("cuda") and trains_dropout("numpy")


def test_auto_picks_an_engine_that_trains_dropout_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(backends, "_why_unavailable", lambda name: None)   # every backend usable, a GPU too
    assert resolve_backend("auto") == "cuda"
    assert resolve_backend("auto", "float32", 0.2) == "cpu"


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_dropout_network_fits_and_predicts_as_an_ordinary_one(backend):
    train, test = train_test_split(RATINGS, 0.1, seed=0)
    model = CFN("item", (12, 8), 3, backend=backend, dropout=0.3, seed=1).fit(train)
    plain = CFN("item", (12, 8), 3, backend=backend, seed=1).fit(train)
    assert model.get_params()["dropout"] == 0.3
    assert not np.array_equal(model.layers_[0].weight, plain.layers_[0].weight)
    assert np.all(np.isfinite(model.predict_indices(test.user, test.item)))


def test_cpu_bfloat16_epoch_with_dropout_matches_reference():
    samples, side, layers = make_problem("I-like", (12, 9), 4, seed=3)
    config = TrainConfig(batch_size=6, seed=2, dtype="bfloat16", dropout=0.3)
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine("cpu", layers, config, samples, side)
    assert engine.train_epoch(1, 0.1) == pytest.approx(ref.train_epoch(1, 0.1), rel=1e-5)
    assert_layers_close(engine.get_layers(), ref.get_layers(), 1e-3, "bfloat16 epoch")   # to the bfloat16 ulp
