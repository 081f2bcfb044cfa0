"""One suite for every training engine (numpy, cpu, cuda), each compared with the NumPy reference.

The ``backend`` fixture (conftest.py) runs every test once per backend and skips the ones
that cannot run here with the reason from :func:`cfn_fast.backends.resolve_backend`.  The
reference against itself is a check of the harness.  Data are small random CSR matrices
with the awkward cases: an empty sample, samples with a single rating, explicit zero values
(known entries whose centred value is 0), an input nobody rated; in two shapes, more
samples than inputs (U-CFN-like) and more inputs than samples (I-CFN-like).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast.backends import engine_class
from cfn_fast.backends.base import TrainConfig, epoch_order
from cfn_fast.backends.numpy_backend import NumpyEngine
from cfn_fast.corruption import epoch_key, hidden_entries, mask_threshold, splitmix64
from cfn_fast.network import Layer, init_layers
from cfn_fast.training.trainer import learning_rate

SHAPES = {"U-like": (48, 21), "I-like": (21, 48)}   # samples x inputs
HIDDEN = {"1-hidden": (16,), "2-hidden": (12, 9)}


# ----------------------------------------------------------------------------- helpers
def make_csr(n_rows: int, n_cols: int, density: float, seed: int) -> sp.csr_matrix:
    """Centred unit ratings with an empty row (1), single-rating rows (2, 3), explicit zeros and an
    input column nobody rated (the last)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[:, -1] = False
    mask[1] = False
    for r in (2, 3):
        mask[r] = False
        mask[r, rng.integers(0, n_cols - 1)] = True
    rows, cols = np.nonzero(mask)
    values = rng.uniform(-1.0, 1.0, len(rows)).astype(np.float32)
    values[rng.random(len(rows)) < 0.12] = 0.0
    indptr = np.r_[0, np.cumsum(mask.sum(axis=1))].astype(np.int64)
    matrix = sp.csr_matrix((values, cols.astype(np.int32), indptr), shape=(n_rows, n_cols))
    assert matrix.nnz == len(values) and (matrix.data == 0).any()   # explicit zeros are stored
    return matrix


def make_problem(shape: str, hidden: tuple[int, ...], side_dim: int, seed: int = 0, density: float = 0.3):
    n_rows, n_cols = SHAPES[shape]
    samples = make_csr(n_rows, n_cols, density, seed)
    side = np.random.default_rng(seed + 1).normal(size=(n_rows, side_dim)).astype(np.float32) if side_dim else None
    return samples, side, init_layers(n_cols, hidden, side_dim, seed=seed + 2)


def make_engine(backend: str, layers, config: TrainConfig, samples, side, **kwargs):
    return engine_class(backend)(layers, config, samples, side, **kwargs)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_layers_close(got: list[Layer], want: list[Layer], rtol: float, what: str = "") -> None:
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want)):
        assert (g.side_weight is None) == (w.side_weight is None), f"{what} layer {index}: side weights"
        for name, a, b in zip(("weight", "bias", "side_weight"), g.arrays(), w.arrays()):
            assert a.shape == b.shape, f"{what} layer {index} {name}: shape {a.shape} != {b.shape}"
            assert a.dtype == np.float32, f"{what} layer {index} {name}: dtype {a.dtype}"
            assert rel_diff(a, b) < rtol, f"{what} layer {index} {name}: relative difference {rel_diff(a, b):.3g}"


def assert_layers_equal(got: list[Layer], want: list[Layer]) -> None:
    for g, w in zip(got, want):
        for a, b in zip(g.arrays(), w.arrays()):
            np.testing.assert_array_equal(a, b)


def needs_threads(backend: str) -> None:
    if "threads" not in inspect.signature(engine_class(backend)).parameters:
        pytest.skip(f"backend {backend!r} has no threads= option")


# ----------------------------------------------------------------------------- gradients and steps
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_gradients_match_reference(backend, shape, hidden, side_dim):
    samples, side, layers = make_problem(shape, hidden, side_dim)
    config = TrainConfig(batch_size=8, seed=5)
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine(backend, layers, config, samples, side)
    rows = np.array([0, 1, 2, 3, 5, 8, 13, 20])   # with the empty row 1 and single-rating rows 2, 3
    for epoch in (1, 2):
        loss_ref, grads_ref = ref.gradients(rows, epoch)
        loss, grads = engine.gradients(rows, epoch)
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert_layers_close(grads, grads_ref, 1e-4, f"epoch {epoch} gradient")
    # gradients leave the parameters alone
    assert_layers_equal(engine.get_layers(), layers)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_sgd_steps_match_reference(backend, shape, hidden, side_dim):
    samples, side, layers = make_problem(shape, hidden, side_dim, seed=3)
    config = TrainConfig(batch_size=6, seed=2)
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine(backend, layers, config, samples, side)
    batches = [np.array([4, 0, 9, 2, 17]), np.array([3]), np.array([1, 5, 6, 7, 8, 10, 11, 12])]
    for step, rows in enumerate(batches):
        loss_ref = ref.sgd_step(rows, epoch=1 + step, lr=0.1)
        loss = engine.sgd_step(rows, epoch=1 + step, lr=0.1)
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert_layers_close(engine.get_layers(), ref.get_layers(), 1e-5, f"after step {step}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_three_epochs_match_reference(backend, shape, hidden, side_dim):
    samples, side, layers = make_problem(shape, hidden, side_dim, seed=7)
    config = TrainConfig(alpha=1.1, beta=0.6, mask_ratio=0.3, weight_decay=0.04, batch_size=7, seed=9)
    n_trainable = int((np.diff(samples.indptr) > 0).sum())
    assert n_trainable % config.batch_size != 0     # the last mini-batch is smaller
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine(backend, layers, config, samples, side)
    for epoch in (1, 2, 3):
        lr = learning_rate(0.2, 0.3, epoch)
        assert engine.train_epoch(epoch, lr) == pytest.approx(ref.train_epoch(epoch, lr), rel=1e-4)
    assert_layers_close(engine.get_layers(), ref.get_layers(), 1e-3, "after 3 epochs")


def test_train_epoch_is_its_mini_batches(backend):
    """train_epoch = sgd_step over epoch_order in slices of batch_size (the last one smaller)."""
    samples, side, layers = make_problem("U-like", (10,), 3, seed=4)
    config = TrainConfig(batch_size=10, seed=1)
    whole = make_engine(backend, layers, config, samples, side)
    steps = make_engine(backend, layers, config, samples, side)
    loss = whole.train_epoch(2, 0.1)
    order = epoch_order(config.seed, 2, np.flatnonzero(np.diff(samples.indptr) > 0))
    total = sum(steps.sgd_step(order[s:s + 10], 2, 0.1) for s in range(0, len(order), 10))
    assert loss == pytest.approx(total, rel=1e-6)
    assert_layers_close(whole.get_layers(), steps.get_layers(), 1e-6)


# ----------------------------------------------------------------------------- corruption
@pytest.mark.parametrize("mask_ratio", [0.25, 0.9])
def test_corruption_masks_identical(backend, mask_ratio):
    """The masked entries of each sample are read off the output-bias gradient: with beta = 0 only
    hidden known entries carry loss (alpha = 0: only visible ones), so the gradient's support is
    the mask.  They must be exactly those of cfn_fast.corruption (hash + swap rule)."""
    samples, _, layers = make_problem("U-like", (8,), 0, seed=11)
    threshold = mask_threshold(mask_ratio)
    trainable = np.flatnonzero(np.diff(samples.indptr) > 0)
    swapped = 0
    for which, alpha, beta in (("hidden", 1.0, 0.0), ("visible", 0.0, 1.0)):
        config = TrainConfig(alpha=alpha, beta=beta, mask_ratio=mask_ratio, seed=3)
        engine = make_engine(backend, layers, config, samples, None)
        for epoch in (1, 6):
            key = epoch_key(config.seed, epoch)
            for row in trainable:
                _, grads = engine.gradients(np.array([row]), epoch)
                cols = samples.indices[samples.indptr[row]:samples.indptr[row + 1]]
                hidden = hidden_entries(samples.indptr, np.array([row]), key, threshold)
                want = cols[hidden] if which == "hidden" else cols[~hidden]
                np.testing.assert_array_equal(np.flatnonzero(grads[-1].bias), np.sort(want),
                                              err_msg=f"{which} entries of row {row}, epoch {epoch}")
                positions = np.arange(samples.indptr[row], samples.indptr[row + 1], dtype=np.uint64)
                raw = (splitmix64(np.uint64(key) + positions) >> np.uint64(40)) < np.uint64(threshold)
                swapped += bool(raw.all())
    if mask_ratio > 0.5:
        assert swapped > 0   # the swap rule was exercised


# ----------------------------------------------------------------------------- determinism
def test_deterministic_for_a_seed(backend):
    samples, side, layers = make_problem("I-like", (12, 9), 4, seed=5)
    config = TrainConfig(batch_size=5, seed=8)
    runs = []
    for _ in range(2):
        engine = make_engine(backend, layers, config, samples, side)
        losses = [engine.train_epoch(epoch, 0.1) for epoch in (1, 2)]
        runs.append((losses, engine.get_layers()))
    assert runs[0][0] == runs[1][0]
    assert_layers_equal(runs[0][1], runs[1][1])


def test_independent_of_thread_count(backend):
    needs_threads(backend)
    rng = np.random.default_rng(0)
    samples = make_csr(64, 600, 0.3, seed=1)       # ~4300 entries per batch: several column groups
    side = rng.normal(size=(64, 3)).astype(np.float32)
    layers = init_layers(600, (40,), 3, seed=2)
    config = TrainConfig(batch_size=24, seed=4)
    results = []
    for threads in (1, 2, 3):
        engine = make_engine(backend, layers, config, samples, side, threads=threads)
        losses = [engine.train_epoch(epoch, 0.1) for epoch in (1, 2)]
        results.append((losses, engine.get_layers()))
    for losses, params in results[1:]:
        assert losses == results[0][0]
        assert_layers_equal(params, results[0][1])


# ----------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize("lr, weight_decay, steps", [(0.07, 0.05, 60), (0.5, 0.9, 45)],
                         ids=["defaults", "strong-decay"])
def test_weight_decay_exact_after_many_steps(backend, lr, weight_decay, steps):
    """Every parameter decays every step, touched or not (45 steps at 1 - lr λ = 0.55 shrink the
    never-seen weights by 2e-12, so a lazily scaled engine has to renormalise on the way)."""
    samples, side, layers = make_problem("I-like", (10,), 2, seed=6)
    config = TrainConfig(weight_decay=weight_decay, batch_size=4, seed=1)
    ref = NumpyEngine(layers, config, samples, side)
    engine = make_engine(backend, layers, config, samples, side)
    rng = np.random.default_rng(3)
    seen_only_by = np.array([2, 3])    # single-rating rows; rows 0, 4.. never in a batch here
    for step in range(steps):
        rows = seen_only_by if step % 3 == 0 else rng.choice(np.arange(5, 21), 4, replace=False)
        ref.sgd_step(rows, 1 + step // 5, lr)
        engine.sgd_step(rows, 1 + step // 5, lr)
    got, want = engine.get_layers(), ref.get_layers()
    assert_layers_close(got, want, 1e-4, f"after {steps} steps")
    # the input nobody rated (last column) only ever decays: exactly the reference's float32 product
    shrink = np.float32(1.0 - lr * weight_decay)
    decayed_in, decayed_out, decayed_bias = layers[0].weight[:, -1], layers[-1].weight[-1], layers[-1].bias[-1:]
    for _ in range(steps):
        decayed_in, decayed_out, decayed_bias = decayed_in * shrink, decayed_out * shrink, decayed_bias * shrink
    np.testing.assert_array_equal(want[0].weight[:, -1], decayed_in)       # the reference itself
    np.testing.assert_allclose(got[0].weight[:, -1], decayed_in, rtol=1e-5, atol=0)
    np.testing.assert_allclose(got[-1].weight[-1], decayed_out, rtol=1e-5, atol=0)
    np.testing.assert_allclose(got[-1].bias[-1:], decayed_bias, rtol=1e-5, atol=0)
    np.testing.assert_allclose(got[-1].side_weight[-1], want[-1].side_weight[-1], rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize("hidden", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("side_dim", [0, 4], ids=["no-side", "side"])
def test_inference_matches_reference(backend, hidden, side_dim):
    samples, side, layers = make_problem("U-like", hidden, side_dim, seed=12)
    config = TrainConfig(batch_size=9, seed=3)
    engine = make_engine(backend, layers, config, samples, side)
    engine.train_epoch(1, 0.2)                     # parameters no longer the initial ones
    ref = NumpyEngine(engine.get_layers(), config, samples, side)
    rng = np.random.default_rng(5)
    other = make_csr(30, samples.shape[1], 0.4, seed=13)     # inputs never trained on
    other_side = rng.normal(size=(30, side_dim)).astype(np.float32) if side_dim else None
    for inputs, inputs_side in ((samples, side), (other, other_side)):
        codes = engine.encode(inputs, inputs_side)
        want = ref.encode(inputs, inputs_side)
        assert codes.shape == want.shape and codes.dtype == np.float32
        np.testing.assert_allclose(codes, want, rtol=0, atol=2e-6)
        rows = rng.integers(0, inputs.shape[0], 200)
        cols = rng.integers(0, inputs.shape[1], 200)
        got = engine.predict_entries(inputs, inputs_side, rows, cols)
        assert got.shape == (200,) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref.predict_entries(inputs, inputs_side, rows, cols), rtol=0, atol=2e-6)
        some = np.array([3, 0, 7])
        np.testing.assert_allclose(engine.decode(codes, inputs_side), ref.decode(want, inputs_side), atol=2e-6)
        np.testing.assert_allclose(engine.decode(codes, inputs_side, some), ref.decode(want, inputs_side, some),
                                   atol=2e-6)


def test_parameters_round_trip(backend):
    samples, side, layers = make_problem("I-like", (12, 9), 4, seed=2)
    config = TrainConfig(batch_size=6, seed=1)
    engine = make_engine(backend, layers, config, samples, side)
    assert_layers_equal(engine.get_layers(), layers)
    engine.train_epoch(1, 0.3)
    snapshot = engine.snapshot()
    trained = engine.get_layers()
    engine.train_epoch(2, 0.3)
    engine.restore(snapshot)
    assert_layers_equal(engine.get_layers(), trained)
    engine.set_layers(layers)
    assert_layers_equal(engine.get_layers(), layers)
    # training after set_layers is training from those parameters
    fresh = make_engine(backend, layers, config, samples, side)
    assert engine.train_epoch(3, 0.1) == fresh.train_epoch(3, 0.1)
    assert_layers_equal(engine.get_layers(), fresh.get_layers())


def test_max_abs_param(backend):
    """The divergence check's max |θ| (engines may compute it in place) equals that of get_layers()."""
    samples, side, layers = make_problem("I-like", (12, 9), 4, seed=2)
    engine = make_engine(backend, layers, TrainConfig(batch_size=5), samples, side)
    engine.train_epoch(1, 0.3)
    want = max(float(np.max(np.abs(a))) for layer in engine.get_layers() for a in layer.arrays())
    assert engine.max_abs_param() == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- the CPU engine's own options
@pytest.fixture
def cpu_backend():
    from cfn_fast.backends import BackendUnavailable, resolve_backend
    try:
        resolve_backend("cpu")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    from cfn_fast.backends import cpu_backend
    return cpu_backend


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
def test_cpu_simd_paths_match_reference(cpu_backend, level):
    from cfn_fast.kernels import cfn_cpu
    used = cfn_cpu.set_simd_level(level)
    try:
        if used != level:
            pytest.skip(f"this CPU has no {level} (best: {used})")
        samples, side, layers = make_problem("I-like", (37, 19), 3, seed=8)   # odd widths: vector tails
        config = TrainConfig(batch_size=7, seed=2)
        ref = NumpyEngine(layers, config, samples, side)
        engine = cpu_backend.CpuEngine(layers, config, samples, side)
        rows = np.arange(0, 21, 2)
        loss, grads = engine.gradients(rows, 1)
        loss_ref, grads_ref = ref.gradients(rows, 1)
        assert loss == pytest.approx(loss_ref, rel=1e-5)
        assert_layers_close(grads, grads_ref, 1e-4)
        for epoch in (1, 2):
            assert engine.train_epoch(epoch, 0.1) == pytest.approx(ref.train_epoch(epoch, 0.1), rel=1e-4)
        assert_layers_close(engine.get_layers(), ref.get_layers(), 1e-4)
        x = np.linspace(-12, 12, 20001, dtype=np.float32)
        np.testing.assert_allclose(cfn_cpu.tanh_array(x), np.tanh(x), rtol=3e-7, atol=0)
    finally:
        cfn_cpu.set_simd_level("best")


def test_cpu_threads_option(cpu_backend):
    samples, side, layers = make_problem("U-like", (8,), 0)
    config = TrainConfig()
    engine = cpu_backend.CpuEngine(layers, config, samples, side, threads=1)
    assert engine.threads == 1
    engine.threads = 2
    assert engine.threads == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            cpu_backend.CpuEngine(layers, config, samples, side, threads=bad)
    before = cpu_backend.get_num_threads()
    try:
        cpu_backend.set_num_threads(3)
        assert cpu_backend.CpuEngine(layers, config, samples, side).threads == 3
    finally:
        cpu_backend.set_num_threads(None)
    assert cpu_backend.get_num_threads() == before


def test_cpu_hash_is_the_reference_hash(cpu_backend):
    from cfn_fast.kernels import cfn_cpu
    x = np.random.default_rng(0).integers(0, 2**63, 1000, dtype=np.int64).astype(np.uint64) * np.uint64(3)
    np.testing.assert_array_equal(cfn_cpu.splitmix64_array(x), splitmix64(x))


def test_cpu_rejects_bad_input(cpu_backend):
    samples, side, layers = make_problem("U-like", (8,), 0)
    config = TrainConfig()
    dup = sp.csr_matrix((np.ones(3, np.float32), np.array([1, 1, 2], np.int32), np.array([0, 2, 3])), shape=(2, 21))
    with pytest.raises(ValueError, match="duplicate"):
        cpu_backend.CpuEngine(layers, config, dup, None)
    bad = samples.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cpu_backend.CpuEngine(layers, config, bad, None)
    with pytest.raises(ValueError, match=r"layers\[0\]\.weight must have shape"):
        cpu_backend.CpuEngine(init_layers(20, (8,)), config, samples, None)
    engine = cpu_backend.CpuEngine(layers, config, samples, None)
    engine._state.wout[3, 2] = np.nan
    assert np.isnan(engine.max_abs_param())
    engine.set_layers(layers)
    with pytest.raises(IndexError):
        engine.sgd_step(np.array([0, 48]), 1, 0.1)
    with pytest.raises(ValueError, match="non-empty"):
        engine.gradients(np.array([], dtype=np.int64), 1)
    with pytest.raises(ValueError, match="columns"):
        engine.encode(sp.csr_matrix((3, 5), dtype=np.float32), None)


def test_engines_expose_their_device_and_phase_timer():
    """Callers read capabilities, not backend names: where an engine runs and how it is profiled."""
    import importlib

    from cfn_fast.backends import Engine, available_backends
    expected = {"numpy_backend.NumpyEngine": "host", "cuda_backend.CudaEngine": "cuda"}
    if "cpu" in available_backends():
        expected["cpu_backend.CpuEngine"] = "host"
    for path, device in expected.items():
        module, cls = path.split(".")
        engine = getattr(importlib.import_module(f"cfn_fast.backends.{module}"), cls)
        assert issubclass(engine, Engine) and engine.device == device and engine.phase_timer, path
    assert Engine.device == "host" and Engine.phase_timer == ""
