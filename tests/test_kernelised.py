"""Kernelised weights (``kernel_dim``, Sparse FC): the reference's gradients against finite differences, the cpu
engine against the reference, the fitted model as an ordinary network, and the backends that refuse it."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from small_models import TEST, TRAIN

from cfn_fast import CFN
from cfn_fast.backends import KERNELISED_BACKENDS, available_backends, kernelised, resolve_backend
from cfn_fast.backends.kernelised import effective_layers, init_kernels, kernel_backward, kernel_matrix
from cfn_fast.backends.numpy_backend import backward, corrupted_batch, forward, reconstruction_loss
from cfn_fast.corruption import epoch_key, mask_threshold
from cfn_fast.engine import TrainConfig, init_layers, make_engine, training_inputs
from cfn_fast.network import Layer
from cfn_fast.training.blending import candidate_params

SHAPES = {"U-like": (30, 14), "I-like": (14, 30)}
HIDDEN = {"1-hidden": (8,), "2-hidden": (8, 6)}


def random_csr(n_rows: int, n_cols: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(n_rows, n_cols, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data = (m.data * 1.6 - 0.8).astype(np.float32)
    m.sort_indices()
    return m


def problem(shape: str, hidden: tuple[int, ...], side_dim: int, seed: int = 0):
    n_rows, n_cols = SHAPES[shape]
    samples = random_csr(n_rows, n_cols, 0.35, seed)
    side = np.random.default_rng(seed + 1).normal(size=(n_rows, side_dim)).astype(np.float32) if side_dim else None
    return samples, side, init_layers(n_cols, hidden, side_dim, seed=seed + 2)


def as64(arrays):
    return [a.astype(np.float64) for a in arrays]


def assert_close(got, want, rtol: float, atol: float, what: str) -> None:
    for index, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{what} [{index}]")


def flat(layers_or_kernels) -> list[np.ndarray]:
    return [a for item in layers_or_kernels for a in item.arrays()]


# ----------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("hidden", list(HIDDEN.values()), ids=list(HIDDEN))
@pytest.mark.parametrize("side_dim", [0, 3])
def test_kernel_gradients_match_finite_differences(hidden, side_dim):
    samples, side, layers32 = problem("I-like", hidden, side_dim, seed=3)
    layers = [Layer(*as64([lay.weight, lay.bias]), None if lay.side_weight is None else
                    lay.side_weight.astype(np.float64)) for lay in layers32]
    kernels = init_kernels(layers, 3, seed=5)
    for kernel in kernels:       # spread out, so that some connections are cut (K = 0) and some are not
        kernel.u, kernel.v = 4 * kernel.u.astype(np.float64), 4 * kernel.v.astype(np.float64)
    assert any((kernel_matrix(k) == 0).any() for k in kernels) and all((kernel_matrix(k) > 0).any() for k in kernels)
    rows = np.arange(samples.shape[0])
    X, known, hidden_mask = corrupted_batch(samples, rows, epoch_key(0, 1), mask_threshold(0.3))
    X = X.astype(np.float64)
    inputs = np.where(known & ~hidden_mask, X, 0.0)
    side = None if side is None else side.astype(np.float64)

    def loss() -> float:
        acts = forward(effective_layers(layers, kernels), inputs, side)
        return reconstruction_loss(acts[-1], X, known, hidden_mask, 1.2, 0.4)[0]

    acts = forward(effective_layers(layers, kernels), inputs, side)
    out_grad = reconstruction_loss(acts[-1], X, known, hidden_mask, 1.2, 0.4)[1]
    grads, kernel_grads = kernel_backward(backward(effective_layers(layers, kernels), acts, side, out_grad),
                                          layers, kernels)
    eps = 1e-6
    checked = 0
    for params, gs in ((flat(layers), flat(grads)), (flat(kernels), flat(kernel_grads))):
        for param, g in zip(params, gs):
            for index in list(np.ndindex(param.shape))[:: max(1, param.size // 20)]:
                old = param[index]
                param[index] = old + eps
                up = loss()
                param[index] = old - eps
                down = loss()
                param[index] = old
                assert g[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)
                checked += 1
    assert checked > 50


def test_kernel_is_the_hat_of_the_squared_distance():
    layer = init_layers(9, (4,), 0, seed=0)[:1]
    kernel = init_kernels(layer, 2, seed=1)[0]
    K = kernel_matrix(kernel)
    distance = ((kernel.u[:, None, :] - kernel.v[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(K, np.maximum(0.0, 1.0 - distance), rtol=1e-6, atol=1e-7)
    assert K.shape == (4, 9)
    np.testing.assert_array_equal(effective_layers(layer, [kernel])[0].weight, layer[0].weight * K)


def test_numpy_engine_step_is_the_reference_step():
    samples, side, layers = problem("U-like", (8, 6), 2)
    config = TrainConfig(kernel_dim=3, batch_size=9, seed=4)
    engine = make_engine("numpy", layers, config, samples, side)
    raw, kernels = engine.kernel_state()
    assert raw[0].weight.shape == (8, 14) and kernels[0].u.shape == (8, 3) and kernels[0].v.shape == (14, 3)
    assert_close(flat(engine.get_layers()), flat(effective_layers(raw, kernels)), 0, 0, "exported")
    rows = np.arange(9)
    loss, grads, kernel_grads = engine.kernel_gradients(rows, 1)
    assert_close(flat(engine.gradients(rows, 1)[1]), flat(grads), 0, 0, "gradients")
    engine.sgd_step(rows, 1, 0.1)
    new_raw, new_kernels = engine.kernel_state()
    shrink, step = np.float32(1 - 0.1 * config.weight_decay), np.float32(0.1 / 9)
    assert_close(flat(new_raw), [p * shrink - step * g for p, g in zip(flat(raw), flat(grads))], 1e-6, 1e-7, "W")
    assert_close(flat(new_kernels), [p * shrink - step * g for p, g in zip(flat(kernels), flat(kernel_grads))],
                 1e-6, 1e-7, "u, v")


def test_kernel_dim_zero_is_the_plain_engine():
    samples, side, layers = problem("I-like", (8,), 2)
    plain = make_engine("numpy", layers, TrainConfig(seed=1), samples, side)
    zero = make_engine("numpy", layers, TrainConfig(seed=1, kernel_dim=0), samples, side)
    assert zero.kernel_state() is None
    for engine in (plain, zero):
        engine.train_epoch(1, 0.05)
    assert_close(flat(zero.get_layers()), flat(plain.get_layers()), 0, 0, "kernel_dim=0")
    with pytest.raises(ValueError, match="kernel_gradients needs a kernelised engine"):
        zero.kernel_gradients(np.arange(3), 1)


@pytest.mark.parametrize("backend", KERNELISED_BACKENDS)
def test_loading_layers_ends_the_kernel_and_snapshots_keep_it(backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} is unavailable here")
    samples, side, layers = problem("I-like", (8,), 0)
    engine = make_engine(backend, layers, TrainConfig(kernel_dim=2, batch_size=5), samples, side)
    snap = engine.snapshot()
    before = engine.get_layers()
    engine.train_epoch(1, 0.1)
    engine.restore(snap)
    assert_close(flat(engine.get_layers()), flat(before), 0, 0, "restored")
    assert engine.kernel_state() is not None and engine.max_abs_param() > 0
    engine.set_layers(before)
    assert engine.kernel_state() is None
    assert_close(flat(engine.get_layers()), flat(before), 0, 0, "loaded")


# ----------------------------------------------------------------------------- cpu against the reference
@pytest.fixture
def cpu():
    if "cpu" not in available_backends():
        pytest.skip("the cpu kernels are not built here")


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("hidden", list(HIDDEN.values()), ids=list(HIDDEN))
@pytest.mark.parametrize("side_dim", [0, 3])
def test_cpu_matches_the_reference(cpu, shape, hidden, side_dim, monkeypatch):
    monkeypatch.setattr(kernelised, "KERNEL_INIT_STD", 0.4)     # some connections start cut off (K = 0)
    samples, side, layers = problem(shape, hidden, side_dim, seed=7)
    config = TrainConfig(kernel_dim=4, batch_size=8, seed=2, mask_ratio=0.3)
    ref, fast = (make_engine(b, layers, config, samples, side) for b in ("numpy", "cpu"))
    assert type(fast).__name__ == "KernelisedCpuEngine"
    assert all((kernel_matrix(k) == 0).any() and (kernel_matrix(k) > 0).any() for k in ref.kernel_state()[1])
    rows = np.arange(8)
    for what, (loss_ref, g_ref, k_ref), (loss, g, k) in [("gradients", ref.kernel_gradients(rows, 1),
                                                           fast.kernel_gradients(rows, 1))]:
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert_close(flat(g), flat(g_ref), 2e-4, 2e-6, f"{what} of W, b, S")
        assert_close(flat(k), flat(k_ref), 2e-4, 2e-6, f"{what} of u, v")
    for engine in (ref, fast):
        engine.sgd_step(rows, 1, 0.1)
    assert_close(flat(fast.get_layers()), flat(ref.get_layers()), 1e-5, 1e-6, "one step, effective")
    for a, b in zip(fast.kernel_state(), ref.kernel_state()):
        assert_close(flat(a), flat(b), 1e-5, 1e-6, "one step, parameters")
    assert fast.train_epoch(2, 0.05) == pytest.approx(ref.train_epoch(2, 0.05), rel=1e-4)
    assert_close(flat(fast.get_layers()), flat(ref.get_layers()), 1e-3, 1e-5, "an epoch")


def test_cpu_does_not_depend_on_threads(cpu):
    samples, side, layers = problem("U-like", (8, 6), 2)
    config = TrainConfig(kernel_dim=3, batch_size=6)
    results = []
    for threads in (1, 2):
        engine = make_engine("cpu", layers, config, samples, side, threads=threads)
        engine.train_epoch(1, 0.1)
        results.append(flat(engine.get_layers()))
    assert_close(results[0], results[1], 0, 0, "threads")


# ----------------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("backend", KERNELISED_BACKENDS)
def test_fitted_model_is_an_ordinary_network(backend, tmp_path):
    if backend not in available_backends():
        pytest.skip(f"{backend} is unavailable here")
    model = CFN("item", (10,), 2, backend=backend, kernel_dim=3, seed=0).fit(TRAIN)
    assert model.engine_.kernel_state() is None          # the engine holds W * K, as layers_ does
    plain = CFN("item", (10,), 2, backend=backend, seed=0).fit(TRAIN)
    assert not np.allclose(model.layers_[0].weight, plain.layers_[0].weight)
    predicted = model.predict_indices(TEST.user, TEST.item)
    assert np.all(np.isfinite(predicted))
    path = model.save(tmp_path / "kernel.npz")
    loaded = CFN.load(path, backend="numpy")
    assert loaded.kernel_dim == 3 and loaded.engine_.config.kernel_dim == 0
    np.testing.assert_allclose(loaded.predict_indices(TEST.user, TEST.item), predicted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"partial_fit cannot continue kernelised training \(kernel_dim=3\)"):
        model.partial_fit(1)
    model.set_params(kernel_dim=0).partial_fit(1)        # trains W * K on as a plain CFN
    assert model.epochs_trained_ == 3 and model.engine_.config.kernel_dim == 0


def test_estimator_checks_kernel_dim():
    for bad in (-1, 1.5, True, 33):
        with pytest.raises(ValueError, match="kernel_dim must be an integer in"):
            CFN("item", kernel_dim=bad).fit(TRAIN)
    with pytest.raises(ValueError, match="kernel_dim must be 0 with dtype='bfloat16'"):
        TrainConfig(kernel_dim=2, dtype="bfloat16")


# ----------------------------------------------------------------------------- cuda refuses it
def test_cuda_refuses_kernel_dim_before_any_gpu_work():
    from cfn_fast.backends.cuda_backend import CudaEngine  # imports without CuPy or a GPU

    message = "kernel_dim is not on cuda yet; use backend='cpu' or 'numpy'"
    inputs = training_inputs(TRAIN, "item")
    layers = init_layers(inputs.n_inputs, (8,), inputs.side_dim)
    with pytest.raises(ValueError, match=message):
        CudaEngine(layers, TrainConfig(kernel_dim=2), inputs.samples, inputs.side)
    with pytest.raises(ValueError, match=message):
        make_engine("cuda", layers, TrainConfig(kernel_dim=2), inputs.samples, inputs.side)
    with pytest.raises(ValueError, match=message):
        CFN("item", (8,), 1, backend="cuda", kernel_dim=2).fit(TRAIN)
    assert resolve_backend("auto", kernel_dim=2) in KERNELISED_BACKENDS


def test_best_blend_weighs_a_kernelised_member():
    model = CFN(quality="best")
    members = candidate_params(model.get_params(), "best")
    kernelised = [m for m in members if m["kernel_dim"]]
    assert len(kernelised) == 1 and kernelised[0]["kind"] == "item"
    assert all(not m["kernel_dim"] for m in candidate_params(model.get_params(), "default"))


def test_numpy_profiles_a_kernelised_epoch_and_onnx_exports_the_fitted_network(tmp_path):
    samples, side, layers = problem("I-like", (8,), 0)
    engine = make_engine("numpy", layers, TrainConfig(kernel_dim=2, batch_size=5), samples, side)
    loss, timings = engine.profiled_epoch(1, 0.1)
    assert loss > 0 and {"forward", "backward", "update"} <= {phase for phase, *_ in timings}
    pytest.importorskip("onnx")
    model = CFN("item", (10,), 1, backend="numpy", kernel_dim=3, seed=0).fit(TRAIN)
    path = model.to_onnx(tmp_path / "kernel.onnx")
    assert path is None or tmp_path.joinpath("kernel.onnx").exists()
