"""bfloat16 weight storage (``CFN(dtype="bfloat16")``): the rounding rules of cfn_fast.backends.bfloat16 and the
NumPy reference engine that follows them (cfn_fast/backends/bf16_state.py); the estimator, files, pickles,
ONNX and backends that carry the setting."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import cfn_fast.backends as backends
from cfn_fast import CFN, StackedCFN, synthetic_ratings, train_test_split
from cfn_fast.backends import holds_dtype, resolve_backend
from cfn_fast.backends.bf16_state import FOLD_BELOW
from cfn_fast.backends.bfloat16 import ARRAYS, array_seed, round_nearest, round_stochastic, to_float32
from cfn_fast.corruption import epoch_key
from cfn_fast.engine import TrainConfig, init_layers, learning_rate, make_engine, minibatches, training_inputs

F32, F64 = np.float32, np.float64


# ----------------------------------------------------------------------------- the rounding rules
def nearest_reference(values: np.ndarray) -> np.ndarray:
    """Round to nearest even in float64: the two bfloat16 neighbours of |x|, the closer (the even one on a tie)."""
    values = np.asarray(values, dtype=F32)
    bits = values.view(np.uint32)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    low = magnitude & np.uint32(0xFFFF0000)
    high = low + np.uint32(0x10000)
    x = np.abs(values).astype(F64)
    below = x - low.view(F32).astype(F64)
    above = high.view(F32).astype(F64) - x
    even_low = ((low >> np.uint32(16)) & np.uint32(1)) == 0
    chosen = np.where((below < above) | ((below == above) & even_low), low, high)
    return ((chosen >> np.uint32(16)) | ((bits >> np.uint32(16)) & np.uint32(0x8000))).astype(np.uint16)


def test_round_nearest_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(20000).astype(F32) * F32(3.0),
        (rng.standard_normal(2000) * 1e-30).astype(F32),         # tiny and subnormal-adjacent values
        np.array([0.0, -0.0, 1.0, -1.0, 2.0 ** -126, -(2.0 ** 100)], dtype=F32),
    ])
    np.testing.assert_array_equal(round_nearest(values), nearest_reference(values))


@pytest.mark.parametrize("bits, expected", [
    (0x3F808000, 0x3F80),   # halfway between 0x3F80 (even) and 0x3F81: to the even one, down
    (0x3F818000, 0x3F82),   # halfway between 0x3F81 and 0x3F82 (even): up
    (0xBF818000, 0xBF82),   # negative: the magnitude rounds the same way
    (0xBF808000, 0xBF80),
    (0x3F808001, 0x3F81),   # just above halfway
    (0x3F807FFF, 0x3F80),   # just below halfway
    (0x00000000, 0x0000),   # +0 and -0 keep their sign
    (0x80000000, 0x8000),
])
def test_round_nearest_ties_go_to_even(bits, expected):
    value = np.array([bits], dtype=np.uint32).view(F32)
    assert int(round_nearest(value)[0]) == expected == int(nearest_reference(value)[0])


def test_round_stochastic_is_unbiased_between_the_two_neighbours():
    low, high = float(to_float32(np.uint16(0x3F80))), float(to_float32(np.uint16(0x3F81)))
    for fraction in (0.1, 0.5, 0.83):
        x = F32(low + fraction * (high - low))
        values = np.full((400, 250), -x, dtype=F32)               # negative: the magnitude rounds up
        rounded = to_float32(round_stochastic(values, seed=12345))
        assert set(np.unique(rounded)) <= {F32(-low), F32(-high)}
        n = values.size
        share_up = np.mean(rounded == F32(-high))
        p = (float(x) - low) / (high - low)
        assert abs(share_up - p) < 5 * np.sqrt(p * (1 - p) / n), (fraction, share_up, p)
        assert abs(rounded.astype(F64).mean() - float(-x)) < 5 * (high - low) * np.sqrt(p * (1 - p) / n)


def test_round_stochastic_is_deterministic_and_keeps_bfloat16_values():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((50, 33)).astype(F32)
    a, b = round_stochastic(values, 7), round_stochastic(values, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, round_stochastic(values, 8))
    exact = to_float32(round_nearest(values))                      # already bfloat16: kept by every seed
    for seed in (0, 1, 2**32 - 1):
        np.testing.assert_array_equal(round_stochastic(exact, seed), round_nearest(exact))
    one_column = round_stochastic(values[:, 0], 7)                 # a vector is one column per row
    np.testing.assert_array_equal(one_column, round_stochastic(values[:, :1], 7)[:, 0])


# ----------------------------------------------------------------------------- the numpy engine in bfloat16
RATINGS = synthetic_ratings(160, 90, 3000, seed=2)
WITHOUT_USER_0 = RATINGS.subset(RATINGS.user != 0)   # input 0 and output 0 of an I-CFN: never touched


def engine_for(dtype: str = "bfloat16", seed: int = 3, weight_decay: float = 0.05, train=WITHOUT_USER_0):
    inputs = training_inputs(train, "item")
    config = TrainConfig(dtype=dtype, batch_size=16, weight_decay=weight_decay, seed=seed)
    return make_engine("numpy", init_layers(inputs.n_inputs, (8,), inputs.side_dim, seed=0), config,
                       inputs.samples, inputs.side)


def stored(layers) -> dict[str, np.ndarray]:
    return {"input_weight": layers[0].weight.T, "output_weight": layers[-1].weight,
            "output_bias": layers[-1].bias, "output_side_weight": layers[-1].side_weight}


def test_a_step_follows_the_rules_of_cfn_fast_bfloat16():
    engine = engine_for()
    engine.train_epoch(1, 0.05)
    before, dense_before = engine._bf16.copy(), [layer.copy() for layer in engine.layers]
    rows, epoch, lr = minibatches(engine, 2)[1], 2, 0.04
    _, grads = engine.gradients(rows, epoch)
    engine.sgd_step(rows, epoch, lr)
    shrink, step = F32(1.0 - lr * engine.config.weight_decay), F32(lr / len(rows))
    scale = before.scale * F64(shrink)
    move = F32(-F64(step) / scale)
    assert engine._bf16.scale == scale
    for name, g in stored(grads).items():
        want = round_stochastic(to_float32(before.bits[name]) + move * g,
                                array_seed(epoch_key(engine.config.seed, epoch), rows[0], ARRAYS[name]))
        np.testing.assert_array_equal(engine._bf16.bits[name], want, err_msg=name)
    # the dense parameters take the float32 update, bit for bit
    for param, old, g in [(engine.layers[0].bias, dense_before[0].bias, grads[0].bias),
                          (engine.layers[0].side_weight, dense_before[0].side_weight, grads[0].side_weight)]:
        expected = old.copy()
        expected *= shrink
        expected -= step * g
        np.testing.assert_array_equal(param, expected)
    # the next step computes with the stored values times float32(scale)
    np.testing.assert_array_equal(engine.layers[0].weight.T, to_float32(engine._bf16.bits["input_weight"])
                                  * F32(engine._bf16.scale))


def test_training_is_deterministic_and_exports_the_stored_values_times_the_scale():
    a, b, other = engine_for(), engine_for(), engine_for(seed=4)
    for engine in (a, b, other):
        for epoch in (1, 2):
            engine.train_epoch(epoch, learning_rate(0.05, 0.3, epoch))
    for name in a._bf16.bits:
        np.testing.assert_array_equal(a._bf16.bits[name], b._bf16.bits[name])
    assert a._bf16.scale == b._bf16.scale < 1.0
    assert not np.array_equal(a._bf16.bits["input_weight"], other._bf16.bits["input_weight"])
    exported = stored(a.get_layers())
    for name, bits in a._bf16.bits.items():
        np.testing.assert_array_equal(exported[name], (to_float32(bits).astype(F64) * a._bf16.scale).astype(F32))
    assert a.max_abs_param() == max(float(np.max(np.abs(x))) for layer in a.get_layers() for x in layer.arrays())


def test_weight_decay_is_exact_through_the_scale_and_untouched_rows_keep_their_bits():
    engine = engine_for()
    initial = engine._bf16.copy()
    scale = 1.0
    for epoch in (1, 2):
        lr = learning_rate(0.05, 0.3, epoch)
        engine.train_epoch(epoch, lr)
        for _ in minibatches(engine, epoch):
            scale *= F64(F32(1.0 - lr * engine.config.weight_decay))
    assert engine._bf16.scale == scale
    for name in ("input_weight", "output_weight", "output_bias"):      # input 0 / output 0 have no rating
        assert engine._bf16.bits[name][0].tobytes() == initial.bits[name][0].tobytes(), name
        assert engine._bf16.bits[name][1:].tobytes() != initial.bits[name][1:].tobytes(), name
    row0 = engine.get_layers()[0].weight[:, 0]
    np.testing.assert_array_equal(row0, (to_float32(initial.bits["input_weight"][0]).astype(F64) * scale).astype(F32))


def test_the_scale_is_folded_into_the_bits_before_it_gets_tiny():
    engine = engine_for(weight_decay=9.0)                          # lr * weight_decay = 0.9: a factor 10 a step
    folded = 0
    for epoch in (1, 2, 3):
        for rows in minibatches(engine, epoch):
            before = engine._bf16.copy()
            engine.sgd_step(rows, epoch, 0.1)
            scale = before.scale * F64(F32(1.0 - 0.1 * 9.0))
            assert FOLD_BELOW <= engine._bf16.scale <= 1.0
            if scale < FOLD_BELOW:
                folded += 1
                assert engine._bf16.scale == 1.0
                untouched = (to_float32(before.bits["input_weight"][0]).astype(F64) * scale).astype(F32)
                np.testing.assert_array_equal(engine._bf16.bits["input_weight"][0], round_nearest(untouched))
    assert folded >= 1


def test_snapshot_and_restore_keep_the_bits_and_the_scale_exactly():
    engine = engine_for()
    engine.train_epoch(1, 0.05)
    kept = engine._bf16.copy()
    snapshot = engine.snapshot()
    engine.train_epoch(2, 0.04)
    after_two = engine._bf16.copy()
    engine.restore(snapshot)
    assert engine._bf16.scale == kept.scale != 1.0
    for name, bits in kept.bits.items():
        np.testing.assert_array_equal(engine._bf16.bits[name], bits)
    engine.train_epoch(2, 0.04)                                    # the same epoch again: the same bits
    assert engine._bf16.scale == after_two.scale
    for name, bits in after_two.bits.items():
        np.testing.assert_array_equal(engine._bf16.bits[name], bits)


def test_a_profiled_epoch_is_the_same_epoch_with_its_update_timed():
    plain, profiled = engine_for(), engine_for()
    assert plain.train_epoch(1, 0.05) == profiled.profiled_epoch(1, 0.05)[0]
    assert "update" in {phase for phase, *_ in profiled.profiled_epoch(2, 0.05)[1]}
    plain.train_epoch(2, 0.05)
    for name, bits in plain._bf16.bits.items():
        np.testing.assert_array_equal(bits, profiled._bf16.bits[name])


def test_max_abs_param_sees_nan_in_the_stored_arrays():
    engine = engine_for()
    engine._bf16.bits["output_weight"][3, 2] = 0x7FC0            # a bfloat16 NaN
    assert np.isnan(engine.max_abs_param())


def test_set_layers_rounds_to_nearest_with_scale_one():
    engine = engine_for()
    engine.train_epoch(1, 0.05)
    layers = engine.get_layers()
    engine.set_layers(layers)
    assert engine._bf16.scale == 1.0
    np.testing.assert_array_equal(engine._bf16.bits["input_weight"], round_nearest(layers[0].weight.T))
    again = engine.get_layers()                                    # now exactly bfloat16 values: a fixed point
    engine.set_layers(again)
    for a, b in zip(again, engine.get_layers()):
        for x, y in zip(a.arrays(), b.arrays()):
            np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- the estimator
SPLIT = train_test_split(synthetic_ratings(600, 400, 30000, seed=0), 0.1, seed=0)
_FITTED: dict = {}


def fitted(kind: str, dtype: str) -> CFN:
    if (kind, dtype) not in _FITTED:
        _FITTED[kind, dtype] = CFN(kind, (32,), 10, backend="numpy", dtype=dtype, seed=0).fit(SPLIT[0])
    return _FITTED[kind, dtype]


@pytest.mark.parametrize("kind", ["item", "user"])
def test_bfloat16_trains_to_the_rmse_of_float32(kind):
    fp32, bf16 = fitted(kind, "float32").score(SPLIT[1]), fitted(kind, "bfloat16").score(SPLIT[1])
    print(f"{kind}: test RMSE float32 {fp32:.4f}, bfloat16 {bf16:.4f}")
    assert abs(bf16 - fp32) < 0.01


def test_the_model_predicts_from_exactly_its_layers():
    model = fitted("item", "bfloat16")
    assert model.engine_.config.dtype == "bfloat16"
    for name, values in stored(model.layers_).items():
        np.testing.assert_array_equal(to_float32(round_nearest(values)), values, err_msg=name)
    plain = make_engine("numpy", model.layers_, TrainConfig(), model.inputs_, model.side_)
    rows, cols = SPLIT[1].item, SPLIT[1].user
    np.testing.assert_array_equal(plain.predict_entries(model.inputs_, model.side_, rows, cols),
                                  model.engine_.predict_entries(model.inputs_, model.side_, rows, cols))


def test_save_load_pickle_and_partial_fit_keep_dtype_and_predictions(tmp_path):
    model = fitted("user", "bfloat16")
    test = SPLIT[1]
    expected = model.predict_indices(test.user, test.item)
    loaded = CFN.load(model.save(tmp_path / "m.npz"))
    copied = pickle.loads(pickle.dumps(model))
    for other in (loaded, copied, model.to_backend("numpy")):
        assert other.dtype == "bfloat16" and other.engine_.config.dtype == "bfloat16"
        np.testing.assert_array_equal(other.predict_indices(test.user, test.item), expected)
    again = pickle.loads(pickle.dumps(model))
    again.partial_fit(1)
    loaded.partial_fit(1)
    np.testing.assert_array_equal(again.predict_indices(test.user, test.item),
                                  loaded.predict_indices(test.user, test.item))
    assert loaded.epochs_trained_ == 11


def test_clone_and_stacked_cfn_carry_dtype():
    sklearn = pytest.importorskip("sklearn")
    assert sklearn.base.clone(CFN(dtype="bfloat16")).dtype == "bfloat16"
    stacked = StackedCFN("item", (8, 4), 1, backend="numpy", dtype="bfloat16",
                         pretrain={"epochs": 1}).fit(RATINGS)
    assert stacked.pretrained_.dtype == stacked.model_.dtype == "bfloat16"
    assert stacked.model_.engine_.config.dtype == "bfloat16"


def test_onnx_export_of_a_bfloat16_model_matches_predict(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = fitted("user", "bfloat16")
    path = model.to_onnx(tmp_path / "m.onnx")
    train = model.train_
    dense = np.full(model.inputs_.shape, np.nan, dtype=F32)
    dense[train.user, train.item] = train.rating
    users = np.arange(50)
    columns = np.random.default_rng(0).integers(0, train.n_items, size=(50, 6)).astype(np.int64)
    expected = model.predict_indices(np.repeat(users, 6), columns.ravel()).reshape(columns.shape)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out, = session.run(None, {"ratings": dense[users], "columns": columns, "features": model.side_[users]})
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- backends
def test_cuda_refuses_bfloat16_before_any_gpu_work():
    message = r"bfloat16 weight storage is not on cuda yet; use backend=('cpu' or )?'numpy'"
    with pytest.raises(ValueError, match=message):
        CFN("item", (8,), 1, backend="cuda", dtype="bfloat16").fit(RATINGS)
    inputs = training_inputs(RATINGS, "item")
    with pytest.raises(ValueError, match=message):
        make_engine("cuda", init_layers(inputs.n_inputs, (8,), inputs.side_dim), TrainConfig(dtype="bfloat16"),
                    inputs.samples, inputs.side)
    with pytest.raises(ValueError, match=message):
        fitted("item", "bfloat16").to_backend("cuda")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16', got 'half'"):
        resolve_backend("numpy", "half")


def test_auto_picks_an_engine_that_holds_bfloat16_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(backends, "_why_unavailable", lambda name: None)   # every backend usable, a GPU too
    assert resolve_backend("auto") == "cuda"
    assert resolve_backend("auto", "bfloat16") == ("cpu" if holds_dtype("cpu", "bfloat16") else "numpy")
    assert not holds_dtype("cuda", "bfloat16") and holds_dtype("numpy", "bfloat16")


def test_an_engine_that_does_not_hold_bfloat16_refuses_it():
    from cfn_fast.backends.numpy_backend import NumpyEngine

    class Float32Only(NumpyEngine):
        name = "float32-only"
        dtypes = ("float32",)

    inputs = training_inputs(RATINGS, "item")
    with pytest.raises(ValueError, match="bfloat16 weight storage is not on float32-only yet"):
        Float32Only(init_layers(inputs.n_inputs, (8,), inputs.side_dim), TrainConfig(dtype="bfloat16"),
                    inputs.samples, inputs.side)
    assert holds_dtype("cpu", "bfloat16") == ("cpu" in backends.available_backends())
