"""The NumPy reference engine against the paper's equations: gradients, loss, corruption, SGD, schedule."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast.backends.base import TrainConfig, epoch_order
from cfn_fast.backends.numpy_backend import (
    NumpyEngine,
    backward,
    corrupted_batch,
    forward,
    reconstruction_loss,
    sgd_update,
)
from cfn_fast.corruption import epoch_key, hidden_entries, mask_threshold
from cfn_fast.network import Layer, init_layers
from cfn_fast.training.trainer import learning_rate


def random_csr(n_rows: int, n_cols: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(n_rows, n_cols, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data = (m.data * 1.6 - 0.8).astype(np.float32)
    m.sort_indices()
    return m


def as64(layers: list[Layer]) -> list[Layer]:
    return [Layer(layer.weight.astype(np.float64), layer.bias.astype(np.float64),
                  None if layer.side_weight is None else layer.side_weight.astype(np.float64)) for layer in layers]


def batch_loss(layers, X, known, hidden, side, alpha, beta) -> float:
    acts = forward(layers, np.where(known & ~hidden, X, 0.0), side)
    return reconstruction_loss(acts[-1], X, known, hidden, alpha, beta)[0]


@pytest.mark.parametrize("hidden", [(7,), (6, 5)])
@pytest.mark.parametrize("side_dim", [0, 3])
def test_gradients_match_finite_differences(hidden, side_dim):
    rng = np.random.default_rng(1)
    samples = random_csr(6, 11, 0.5, seed=2)
    layers = as64(init_layers(11, hidden, side_dim, seed=3))
    side = rng.normal(size=(6, side_dim)) if side_dim else None
    rows = np.arange(6)
    X, known, hidden_mask = corrupted_batch(samples, rows, epoch_key(0, 1), mask_threshold(0.4))
    X = X.astype(np.float64)
    assert hidden_mask.any() and (known & ~hidden_mask).any()
    alpha, beta = 1.3, 0.4
    acts = forward(layers, np.where(known & ~hidden_mask, X, 0.0), side)
    _, out_grad = reconstruction_loss(acts[-1], X, known, hidden_mask, alpha, beta)
    grads = backward(layers, acts, side, out_grad)
    eps = 1e-6
    for layer, grad in zip(layers, grads):
        for param, g in zip(layer.arrays(), grad.arrays()):
            for index in list(np.ndindex(param.shape))[:: max(1, param.size // 25)]:
                old = param[index]
                param[index] = old + eps
                up = batch_loss(layers, X, known, hidden_mask, side, alpha, beta)
                param[index] = old - eps
                down = batch_loss(layers, X, known, hidden_mask, side, alpha, beta)
                param[index] = old
                assert g[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_loss_weights_alpha_on_hidden_beta_on_visible_zero_on_unknown():
    X = np.array([[0.5, -0.2, 0.0, 0.3]], dtype=np.float32)
    known = np.array([[True, True, False, True]])
    hidden = np.array([[True, False, False, False]])
    output = np.array([[0.1, 0.1, 0.9, 0.1]], dtype=np.float32)
    loss, grad = reconstruction_loss(output, X, known, hidden, alpha=2.0, beta=0.5)
    expected = 2.0 * 0.4 ** 2 + 0.5 * (0.3 ** 2 + 0.2 ** 2)
    assert loss == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, [[2 * 2.0 * -0.4, 2 * 0.5 * 0.3, 0.0, 2 * 0.5 * -0.2]], rtol=1e-6)
    # an unknown entry gives no error whatever the output there
    output2 = output.copy()
    output2[0, 2] = -0.9
    assert reconstruction_loss(output2, X, known, hidden, 2.0, 0.5)[0] == pytest.approx(loss)


def test_corruption_hides_at_the_mask_ratio_and_never_a_whole_row():
    samples = random_csr(400, 300, 0.05, seed=4)
    rows = np.arange(400)
    hidden = hidden_entries(samples.indptr, rows, epoch_key(7, 3), mask_threshold(0.25))
    assert hidden.mean() == pytest.approx(0.25, abs=0.02)
    counts = np.diff(samples.indptr)
    per_row = np.add.reduceat(hidden.astype(int), samples.indptr[:-1][counts > 0])
    assert np.all(per_row < counts[counts > 0]), "a row lost every known entry"
    # anew every epoch, identical for the same (seed, epoch)
    again = hidden_entries(samples.indptr, rows, epoch_key(7, 3), mask_threshold(0.25))
    other = hidden_entries(samples.indptr, rows, epoch_key(7, 4), mask_threshold(0.25))
    assert np.array_equal(hidden, again) and not np.array_equal(hidden, other)
    # the draw of an entry does not depend on which other rows share its batch
    part = hidden_entries(samples.indptr, rows[100:200], epoch_key(7, 3), mask_threshold(0.25))
    assert np.array_equal(part, hidden[samples.indptr[100]:samples.indptr[200]])


def test_swap_rule_single_rating_rows_stay_visible():
    samples = sp.csr_matrix((np.ones(50, np.float32), np.arange(50) % 5, np.arange(51)), shape=(50, 5))
    for epoch in range(1, 20):
        assert not hidden_entries(samples.indptr, np.arange(50), epoch_key(0, epoch), mask_threshold(0.9)).any()


def test_sgd_decays_every_parameter_including_weights_of_missing_inputs():
    samples = random_csr(8, 10, 0.3, seed=5)
    samples = samples[:, :9]  # input 9 is never observed
    samples = sp.hstack([samples, sp.csr_matrix((8, 1), dtype=np.float32)], format="csr")
    layers = init_layers(10, (4,), 2, seed=0)
    engine = NumpyEngine(layers, TrainConfig(weight_decay=0.1, mask_ratio=0.0, batch_size=8), samples,
                         np.ones((8, 2), np.float32))
    lr = 0.5
    before = engine.get_layers()
    engine.sgd_step(np.arange(8), epoch=1, lr=lr)
    after = engine.get_layers()
    # the input weights of column 9 get no gradient: they decay by exactly (1 - lr * wd)
    np.testing.assert_allclose(after[0].weight[:, 9], before[0].weight[:, 9] * (1 - lr * 0.1), rtol=1e-6)
    # and so do output weights/bias of the never-observed output 9
    np.testing.assert_allclose(after[1].weight[9], before[1].weight[9] * (1 - lr * 0.1), rtol=1e-6)
    np.testing.assert_allclose(after[1].bias[9], before[1].bias[9] * (1 - lr * 0.1), rtol=1e-6)


def test_sgd_update_divides_gradient_by_batch_size():
    layer = Layer(np.ones((2, 2), np.float32), np.zeros(2, np.float32))
    grad = Layer(np.full((2, 2), 4.0, np.float32), np.ones(2, np.float32))
    sgd_update([layer], [grad], lr=0.1, batch_size=4, weight_decay=0.5)
    np.testing.assert_allclose(layer.weight, 1 - 0.1 * (4.0 / 4 + 0.5 * 1.0))
    np.testing.assert_allclose(layer.bias, -0.1 * (1 / 4))


def test_side_information_enters_every_layer_and_is_not_reconstructed():
    layers = init_layers(5, (3, 4), side_dim=2, seed=1)
    assert [layer.side_weight.shape for layer in layers] == [(3, 2), (4, 2), (5, 2)]
    assert layers[-1].weight.shape == (5, 4)  # the output has the rating dimensions only
    x = np.zeros((1, 5), np.float32)
    base = forward(layers, x, np.zeros((1, 2), np.float32))
    for changed in range(3):
        probe = [layer.copy() for layer in layers]
        probe[changed].side_weight[:] = 0.0
        out = forward(probe, x, np.ones((1, 2), np.float32))
        full = forward(layers, x, np.ones((1, 2), np.float32))
        assert not np.allclose(out[-1], full[-1]), f"side information unused in layer {changed}"
    assert base[-1].shape == (1, 5)


def test_initialisation_bound_is_one_over_sqrt_fan_in():
    layers = init_layers(400, (300,), side_dim=100, seed=0)
    assert np.abs(layers[0].weight).max() <= 1 / np.sqrt(500)
    assert np.abs(layers[0].weight).max() > 0.95 / np.sqrt(500)
    assert np.abs(layers[1].bias).max() <= 1 / np.sqrt(400)


def test_learning_rate_schedule_counts_epochs_from_one():
    assert learning_rate(0.1, 0.5, 1) == pytest.approx(0.1 / 1.5)
    assert learning_rate(0.1, 0.0, 9) == pytest.approx(0.1)


def test_epoch_visits_every_nonempty_row_once_and_last_batch_is_partial():
    samples = random_csr(23, 6, 0.4, seed=6)
    engine = NumpyEngine(init_layers(6, (3,)), TrainConfig(batch_size=5), samples, None)
    order = epoch_order(0, 1, engine.trainable)
    assert sorted(order.tolist()) == np.flatnonzero(np.diff(samples.indptr)).tolist()
    seen = []
    engine.sgd_step = lambda rows, epoch, lr: seen.append(len(rows)) or 0.0  # type: ignore[method-assign]
    engine.train_epoch(1, 0.1)
    assert sum(seen) == len(order) and seen[-1] == len(order) - 5 * (len(seen) - 1)


def test_predict_entries_uses_the_full_uncorrupted_row():
    samples = random_csr(10, 8, 0.5, seed=7)
    engine = NumpyEngine(init_layers(8, (5,), seed=2), TrainConfig(mask_ratio=0.5), samples, None)
    rows, cols = np.array([0, 3, 3, 9]), np.array([1, 0, 7, 2])
    expected = forward(engine.layers, samples.toarray(), None)[-1][rows, cols]
    np.testing.assert_allclose(engine.predict_entries(samples, None, rows, cols), expected, rtol=1e-5, atol=1e-6)
