"""Arrays of other libraries in and out (cfn_fast.interop), public encode / decode, stream= handling."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast import CFN, interop, synthetic_ratings

HAS_CUPY = importlib.util.find_spec("cupy") is not None


class DLPackProducer:
    """A minimal foreign CPU array: DLPack only (what JAX or a C extension may hand over)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class FakeDeviceArray:
    """Something that says it lives on a CUDA device (no GPU needed to check the host-copy path)."""

    __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings(120, 70, 2000, seed=2)


@pytest.fixture(scope="module", params=["user", "item"])
def model(request, ratings):
    return CFN(request.param, (10,), 2, backend="cpu").fit(ratings)


# ----------------------------------------------------------------------------- the converter
def test_host_inputs_pass_through_unchanged():
    array = np.arange(5)
    matrix = sp.random(3, 4, density=0.5, format="csr")
    for value in (array, matrix, [1, 2], (3,), {"a": 1}, "x", 4, None):
        assert interop.to_host(value) is value


def test_dlpack_producer_becomes_a_numpy_view_without_copy():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = interop.to_host(DLPackProducer(array))
    assert isinstance(view, np.ndarray) and np.shares_memory(view, array)
    np.testing.assert_array_equal(view, array)
    assert interop.origin_of(DLPackProducer(array)) == interop.Origin("numpy", "cpu", 0)


def test_device_array_without_cupy_is_a_clear_error():
    assert interop.is_device_array(FakeDeviceArray())
    assert interop.origin_of(FakeDeviceArray()).device == "cuda"
    if HAS_CUPY:
        pytest.skip("CuPy is installed: the error path is not reachable")
    with pytest.raises(TypeError, match="needs CuPy"):
        interop.to_host(FakeDeviceArray())


def test_output_argument_is_checked_before_any_work(model):
    with pytest.raises(ValueError, match="output must be one of"):
        model.predict_indices([0], [0], output="pandas")
    with pytest.raises(ValueError, match="output must be one of"):
        model.encode(output=None)


def test_outputs_numpy_like_and_dlpack():
    result = np.linspace(0, 1, 6).reshape(2, 3)
    assert interop.to_output(result, "numpy") is result
    assert interop.to_output(result, "like", interop.origin_of([1, 2])) is result
    capsule = interop.to_output(result, "dlpack")
    assert type(capsule).__name__ == "PyCapsule"


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed")
def test_cupy_output_without_cupy_names_the_missing_package():
    with pytest.raises(ImportError, match="cupy"):
        interop.to_output(np.zeros(3), "cupy")


# ----------------------------------------------------------------------------- streams
def test_stream_on_a_cpu_model_is_refused(model):
    with pytest.raises(ValueError, match="cuda backend"):
        model.predict_indices([0], [0], stream=0)
    with pytest.raises(ValueError, match="cuda backend"):
        model.encode(stream=0)
    assert model.predict_indices([0], [0], stream=None).shape == (1,)


@pytest.mark.parametrize("bad, error", [(True, TypeError), ("0x1", TypeError), (1.5, TypeError), (-4, ValueError)])
def test_bad_streams_are_named(bad, error):
    with pytest.raises(error, match="stream|pointer"):
        interop.cuda_stream(bad)


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed")
def test_raw_stream_pointer_without_cupy_names_cupy():
    with pytest.raises(ImportError, match="cupy"):
        interop.cuda_stream(0)


class FakeTorchStream:
    cuda_stream = 12345


class ProtocolStream:
    def __cuda_stream__(self):
        return (0, 777)


def test_stream_pointers_are_read_from_each_kind():
    assert interop._stream_pointer(99) == 99
    assert interop._stream_pointer(np.int64(7)) == 7
    assert interop._stream_pointer(FakeTorchStream()) == 12345
    assert interop._stream_pointer(ProtocolStream()) == 777


# ----------------------------------------------------------------------------- encode / decode
def _dense_training_rows(model: CFN) -> np.ndarray:
    train = model.train_
    samples, inputs = (train.user, train.item) if model.kind == "user" else (train.item, train.user)
    dense = np.full(model.inputs_.shape, np.nan)
    dense[samples, inputs] = train.rating
    return dense


def test_encode_decode_of_training_samples_reproduce_predict(backend, ratings):
    model = CFN("item", (9, 7), 2, backend=backend).fit(ratings)
    codes, means = model.encode(return_means=True)
    assert codes.shape == (ratings.n_items, 7) and codes.dtype == np.float32
    predicted = model.decode(codes, model.side_, means=means)
    items, users = np.meshgrid(np.arange(ratings.n_items), np.arange(ratings.n_users), indexing="ij")
    expected = model.predict_indices(users.ravel(), items.ravel()).reshape(items.shape)
    np.testing.assert_allclose(predicted, expected, atol=1e-5, rtol=0)
    # rows given explicitly (dense, NaN = unknown) centre as in training
    again, again_means = model.encode(_dense_training_rows(model), model.side_, return_means=True)
    np.testing.assert_allclose(again, codes, atol=1e-5)
    np.testing.assert_allclose(again_means, means, atol=1e-6)


def test_decode_raw_and_selected_columns(model):
    codes = model.encode()
    side = model.side_
    raw = model.decode(codes, side)
    assert raw.shape == model.inputs_.shape and np.all(np.abs(raw) < 1)
    cols = np.array([4, 0, 4, 9])
    np.testing.assert_allclose(model.decode(codes, side, cols=cols), raw[:, cols], atol=1e-6)


def test_encode_then_decode_is_fold_in(ratings):
    model = CFN("user", (10,), 2, backend="cpu").fit(ratings)
    train = model.train_
    rated = np.array([3, 10, 11, 40])
    values = np.array([5.0, 1.0, 3.0, 4.0])
    features = model.side_[[7, 8]]
    sparse_rows = sp.csr_matrix((values, (np.zeros(4, int), rated)), shape=(2, train.n_items))
    codes, means = model.encode(sparse_rows, features, return_means=True)
    predicted = model.decode(codes, features, means=means)
    np.testing.assert_allclose(predicted[0], model.fold_in(train.item_ids[rated], values, features[0]).ratings,
                               atol=1e-6)
    np.testing.assert_allclose(predicted[1], model.fold_in([], [], features=features[1]).ratings, atol=1e-6)
    dense = np.full(train.n_items, np.nan)
    dense[rated] = values
    np.testing.assert_allclose(model.encode(dense, features[:1]), codes[:1], atol=1e-6)


def test_encode_decode_bad_input_is_named(model):
    n = model.inputs_.shape[1]
    side = None if model.side_ is None else model.side_[:1]
    with pytest.raises(ValueError, match=f"{n} columns"):
        model.encode(np.full((1, n + 1), np.nan), side)
    with pytest.raises(ValueError, match="outside the scale"):
        model.encode(np.full((1, n), 9.0), side)
    with pytest.raises(ValueError, match="infinite"):
        model.encode(np.full((1, n), np.inf), side)
    with pytest.raises(ValueError, match="pass features="):
        model.encode(np.full((1, n), np.nan))
    with pytest.raises(ValueError, match="features= goes with rows="):
        model.encode(None, side)
    with pytest.raises(ValueError, match="codes must have shape"):
        model.decode(np.zeros((2, 3)), None)
    codes = model.encode()[:2]
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.decode(np.full_like(codes, np.nan), model.side_[:2])
    with pytest.raises(ValueError, match="one value per row"):
        model.decode(codes, model.side_[:2], means=[0.0])
    with pytest.raises(IndexError, match="output column"):
        model.decode(codes, model.side_[:2], cols=[n])
    with pytest.raises(TypeError):
        model.encode("not rows", side)


def test_encode_without_side_info_refuses_features(ratings):
    plain = CFN("user", (6,), 1, backend="cpu", use_side_info=False).fit(ratings)
    with pytest.raises(ValueError, match="without user side information"):
        plain.encode(np.full((1, ratings.n_items), np.nan), np.zeros((1, 3)))


def test_dlpack_inputs_reach_the_engine_without_copy(model, monkeypatch):
    codes = model.encode()
    side = model.side_
    seen = {}
    original = type(model.engine_).decode

    def spy(engine, codes_in, side_in, cols=None):
        seen["codes"], seen["side"] = codes_in, side_in
        return original(engine, codes_in, side_in, cols)

    monkeypatch.setattr(type(model.engine_), "decode", spy)
    out = model.decode(DLPackProducer(codes), DLPackProducer(side))
    assert np.shares_memory(seen["codes"], codes) and np.shares_memory(seen["side"], side)
    np.testing.assert_array_equal(out, original(model.engine_, codes, side))


# ----------------------------------------------------------------------------- PyTorch (optional)
def test_torch_cpu_tensors_in_torch_tensors_out_without_copy(model, monkeypatch):
    torch = pytest.importorskip("torch")
    codes = torch.from_numpy(model.encode())
    side = torch.from_numpy(model.side_)
    seen = {}
    original = type(model.engine_).decode

    def spy(engine, codes_in, side_in, cols=None):
        seen["codes"], seen["side"] = codes_in, side_in
        seen["out"] = original(engine, codes_in, side_in, cols)
        return seen["out"]

    monkeypatch.setattr(type(model.engine_), "decode", spy)
    out = model.decode(codes, side, output="like")
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
    # inputs: the engine computed on the tensors' own memory; output: the engine's result, not a copy
    assert seen["codes"].ctypes.data == codes.data_ptr() and seen["side"].ctypes.data == side.data_ptr()
    assert out.data_ptr() == seen["out"].ctypes.data and np.shares_memory(out.numpy(), seen["out"])
    monkeypatch.undo()
    # ids as tensors (also a tensor that requires grad), ratings back as tensors
    users = torch.arange(0, 20, dtype=torch.int64)
    items = torch.arange(10, 30, dtype=torch.int64)
    expected = model.predict_indices(users.numpy(), items.numpy())
    got = model.predict_indices(users, items, output="torch")
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(model.predict_indices(users, items), expected)  # default: NumPy
    train = model.train_
    by_id = model.predict(torch.as_tensor(train.user_ids[:20]), torch.as_tensor(train.item_ids[10:30]),
                          output="like")
    assert isinstance(by_id, torch.Tensor)
    np.testing.assert_array_equal(by_id.numpy(), expected)
    grad_codes = codes.clone().requires_grad_(True)
    assert isinstance(model.decode(grad_codes, side, output="torch"), torch.Tensor)
    capsule = model.decode(codes, side, output="dlpack")
    np.testing.assert_array_equal(torch.from_dlpack(capsule).numpy(), out.numpy())


def test_torch_rows_features_fold_in_and_recommend(model):
    torch = pytest.importorskip("torch")
    rows = _dense_training_rows(model)[:5]
    side = model.side_[:5]
    codes, means = model.encode(torch.from_numpy(rows), torch.from_numpy(side), return_means=True, output="like")
    assert isinstance(codes, torch.Tensor) and isinstance(means, torch.Tensor)
    np.testing.assert_allclose(codes.numpy(), model.encode(rows, side), atol=0)
    train = model.train_
    user = train.user_ids[3]
    ids, scores = model.recommend(torch.tensor(user), n=5)
    expected_ids, expected_scores = model.recommend(user, n=5)
    np.testing.assert_array_equal(ids, expected_ids)
    lists = model.recommend_batch(torch.as_tensor(train.user_ids[:3]), n=5)
    assert len(lists) == 3
    if model.kind == "user":
        other = torch.as_tensor(train.item_ids[[1, 2, 5]])
        fold = model.fold_in(other, torch.tensor([4.0, 2.0, 5.0]), features=torch.from_numpy(model.side_[0]))
        np.testing.assert_array_equal(
            fold.ratings, model.fold_in(train.item_ids[[1, 2, 5]], [4.0, 2.0, 5.0], features=model.side_[0]).ratings)


def test_jax_cpu_arrays(model):
    jnp = pytest.importorskip("jax.numpy")
    codes = model.encode()
    out = model.decode(jnp.asarray(codes), jnp.asarray(model.side_), output="like")
    assert type(out).__module__.startswith("jax")
    np.testing.assert_allclose(np.asarray(out), model.decode(codes, model.side_), atol=0)


def test_empty_rows_without_side_info_fall_back_like_predict(ratings):
    plain = CFN("item", (6,), 1, backend="cpu", use_side_info=False).fit(ratings)
    rows = np.full((2, ratings.n_users), np.nan)
    rows[1, [0, 5]] = [4.0, 2.0]
    codes, means = plain.encode(rows, return_means=True)
    assert np.isnan(means[0]) and np.isfinite(means[1])
    predicted = plain.decode(codes, means=means)
    np.testing.assert_allclose(predicted[0], plain.fold_in([], []).ratings, atol=1e-12)
    np.testing.assert_allclose(predicted[1], plain.fold_in(ratings.user_ids[[0, 5]], [4.0, 2.0]).ratings, atol=1e-6)
    np.testing.assert_allclose(plain.decode(codes, cols=[3, 1], means=means)[0], predicted[0, [3, 1]])


# ----------------------------------------------------------------------------- CUDA (skipped without a GPU)
@pytest.mark.gpu
def test_cuda_arrays_and_streams(ratings):
    from cfn_fast.backends import BackendUnavailable, resolve_backend
    try:
        resolve_backend("cuda")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    import cupy as cp
    model = CFN("item", (16,), 2, backend="cuda").fit(ratings)
    host_codes = model.encode()
    stream = cp.cuda.Stream(non_blocking=True)
    codes = model.encode(output="cupy", stream=stream)
    assert isinstance(codes, cp.ndarray)
    side = cp.asarray(model.side_)
    out = model.decode(codes, side, output="like", stream=stream.ptr)     # raw cudaStream_t pointer
    assert isinstance(out, cp.ndarray)
    stream.synchronize()
    np.testing.assert_allclose(cp.asnumpy(codes), host_codes, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(out), model.decode(host_codes, model.side_), atol=1e-5)
    users, items = cp.arange(20), cp.arange(20, 40)
    on_stream = model.predict_indices(users, items, output="like", stream=stream)
    assert isinstance(on_stream, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(on_stream), model.predict_indices(np.arange(20), np.arange(20, 40)),
                               atol=1e-6)
    cpu = CFN("item", (16,), 2, backend="cpu").fit(ratings)
    np.testing.assert_array_equal(cpu.predict_indices(users, items), cpu.predict_indices(np.arange(20),
                                                                                          np.arange(20, 40)))


def test_fit_takes_side_features_of_any_library(ratings):
    torch = pytest.importorskip("torch")
    features = np.asarray(ratings.item_features, dtype=np.float32)
    reference = CFN("item", (6,), 1, backend="cpu").fit(ratings, item_features=features)
    tensor = CFN("item", (6,), 1, backend="cpu").fit(ratings, item_features=torch.from_numpy(features))
    np.testing.assert_array_equal(tensor.predict_indices(np.arange(50), np.arange(50) % ratings.n_items),
                                  reference.predict_indices(np.arange(50), np.arange(50) % ratings.n_items))
    dlpack = CFN("item", (6,), 1, backend="cpu").fit(ratings, item_features=DLPackProducer(features))
    np.testing.assert_array_equal(dlpack.layers_[0].side_weight, reference.layers_[0].side_weight)


# ----------------------------------------------------------------------------- output="cupy" without a GPU
def _no_gpu_here() -> None:
    from cfn_fast import available_backends
    if not HAS_CUPY:
        pytest.skip("CuPy is not installed (the ImportError test covers that)")
    if "cuda" in available_backends():
        pytest.skip("a CUDA GPU is present")


def test_cupy_output_without_a_gpu_is_a_clear_error_before_any_work(model):
    _no_gpu_here()
    for call in (lambda: model.predict_indices([0], [0], output="cupy"), lambda: model.encode(output="cupy"),
                 lambda: model.decode(np.zeros((1, 10), np.float32), model.side_, output="cupy"),
                 lambda: interop.to_output(np.zeros(3), "cupy")):
        with pytest.raises(ValueError, match=r"^output='cupy' needs a CUDA GPU, and CuPy reaches none"):
            call()


def test_cupy_output_refusal_is_simulated_anywhere_cupy_imports(model, monkeypatch):
    """The same refusal where a GPU is present: CuPy is told it reaches none."""
    if not HAS_CUPY:
        pytest.skip("CuPy is not installed")
    monkeypatch.setattr(interop, "cuda_device_problem", lambda: "CuPy found no CUDA GPU")
    with pytest.raises(ValueError, match=r"CuPy reaches none \(CuPy found no CUDA GPU\); use output='numpy'"):
        model.predict_indices([0], [0], output="cupy")


def test_read_only_inputs_reach_the_kernels_without_copy(model):
    """numpy 2.0's ``from_dlpack`` (and memory-mapped files) give read-only arrays: the cpu kernels read them."""
    codes, side = model.encode(), model.side_
    expected = model.decode(codes, side)
    frozen_codes, frozen_side = codes.copy(), side.copy()
    frozen_codes.flags.writeable = frozen_side.flags.writeable = False
    np.testing.assert_array_equal(model.decode(frozen_codes, frozen_side), expected)
