"""bfloat16 weight storage in the cpu engine: its kernels round with the bits of cfn_fast.backends.bfloat16, train
as the NumPy reference does (to the bfloat16 ulp: float32 sums run in another order, which moves a stochastic
rounding now and then), do not depend on the thread count, and serve inference and gradients in float32."""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast import CFN, synthetic_ratings, train_test_split
from cfn_fast.backends import available_backends
from cfn_fast.backends.bfloat16 import round_nearest, round_stochastic, to_float32
from cfn_fast.engine import TrainConfig, init_layers, learning_rate, make_engine, minibatches, training_inputs

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="the cpu kernels are not built")

RATINGS = synthetic_ratings(200, 120, 5000, seed=5)


def kernels():
    from cfn_fast.kernels import cfn_cpu
    return cfn_cpu


def test_the_kernels_round_with_the_bits_of_the_rules():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((37, 45)) * np.exp(rng.uniform(-20, 5, (37, 45)))).astype(np.float32)
    values[0, :3] = [0.0, -0.0, np.float32(1e-40)]
    for seed in (0, 1, 0xDEADBEEF):
        np.testing.assert_array_equal(kernels().round_stochastic_bf16(values, seed), round_stochastic(values, seed))
    np.testing.assert_array_equal(kernels().round_nearest_bf16(values), round_nearest(values))
    np.testing.assert_array_equal(kernels().widen_bf16(round_nearest(values)), to_float32(round_nearest(values)))


def engines(kind: str, side: bool, threads: int = 2):
    inputs = training_inputs(RATINGS, kind, use_side_info=side)
    assert (inputs.side_dim > 0) == side
    config = TrainConfig(dtype="bfloat16", batch_size=16, weight_decay=0.05, seed=1)
    layers = init_layers(inputs.n_inputs, (24,), inputs.side_dim, seed=0)
    numpy = make_engine("numpy", layers, config, inputs.samples, inputs.side)
    cpu = make_engine("cpu", layers, config, inputs.samples, inputs.side, threads=threads)
    return numpy, cpu


def bf16_values(engine) -> list[np.ndarray]:
    return [array for layer in engine.get_layers() for array in layer.arrays()]


@pytest.mark.parametrize("kind", ["item", "user"])
@pytest.mark.parametrize("side", [False, True])
def test_the_cpu_engine_trains_as_the_numpy_reference_to_the_bfloat16_ulp(kind, side):
    numpy, cpu = engines(kind, side)
    for epoch in (1, 2, 3):
        lr = learning_rate(0.05, 0.3, epoch)
        assert cpu.train_epoch(epoch, lr) == pytest.approx(numpy.train_epoch(epoch, lr), rel=2e-3)
    differing = total = 0
    for want, got in zip(bf16_values(numpy), bf16_values(cpu)):
        ulp = np.maximum(np.abs(want), 1e-30) * 2.0 ** -7      # one bfloat16 ulp, at most, of the value
        assert np.all(np.abs(got - want) <= 2 * ulp + 1e-6)
        differing += int(np.count_nonzero(got != want))
        total += want.size
    print(f"{kind} side={side}: {differing} of {total} values differ from the reference")
    assert differing <= 0.1 * total        # most values carry the very same bits


def test_results_do_not_depend_on_the_thread_count():
    one, two = engines("item", True, threads=1)[1], engines("item", True, threads=2)[1]
    for engine in (one, two):
        for epoch in (1, 2):
            engine.train_epoch(epoch, 0.05)
    for a, b in zip(bf16_values(one), bf16_values(two)):
        np.testing.assert_array_equal(a, b)


def test_a_step_rounds_the_touched_rows_and_leaves_the_others_bit_for_bit():
    numpy, cpu = engines("item", False)
    cpu.train_epoch(1, 0.05)
    before = cpu._state.wout.copy()
    rows = minibatches(cpu, 2)[0]
    cpu.sgd_step(rows, 2, 0.05)
    touched = np.unique(cpu.samples[rows].indices)
    untouched = np.setdiff1d(np.arange(cpu.samples.shape[1]), touched)
    np.testing.assert_array_equal(cpu._state.wout[untouched], before[untouched])   # only the scale moved
    assert np.count_nonzero(cpu._state.wout[touched] != before[touched]) > 0


def test_snapshot_restore_and_max_abs_see_the_stored_bits():
    cpu = engines("user", True)[1]
    cpu.train_epoch(1, 0.05)
    snapshot, kept = cpu.snapshot(), bf16_values(cpu)
    cpu.train_epoch(2, 0.05)
    cpu.restore(snapshot)
    for a, b in zip(kept, bf16_values(cpu)):
        np.testing.assert_array_equal(a, b)
    assert cpu.max_abs_param() == max(float(np.max(np.abs(x))) for x in kept)
    cpu._state.wout[1, 1] = 0x7FC0                                  # a bfloat16 NaN
    assert np.isnan(cpu.max_abs_param())


@pytest.mark.parametrize("side", [False, True])
def test_the_float32_twin_holds_the_values_load_of_export_gives(side):
    """The float32 state inference runs on (SparseCFN.load_values_of, no canonical layout in between) holds, bit
    for bit, what loading the exported layers gives: bfloat16 widened, the lazy scale applied and rounded once."""
    inputs = training_inputs(RATINGS, "user", use_side_info=side)
    config = TrainConfig(dtype="bfloat16", batch_size=16, weight_decay=0.05, seed=1)
    cpu = make_engine("cpu", init_layers(inputs.n_inputs, (24, 12), inputs.side_dim, seed=0), config, inputs.samples,
                      inputs.side)
    cpu.train_epoch(1, 0.05)
    assert cpu._state.scale != 1.0
    direct, through_layers = cpu._kernel_state(1, bf16=False), cpu._kernel_state(1, bf16=False)
    direct.load_values_of(cpu._state)
    through_layers.load(cpu.get_layers())

    def arrays(state):
        return [getattr(state, name) for name in ("win", "b_in", "s_in_t", "wout", "bout", "sout")] + \
            state.dense_w[1:] + state.dense_b[1:] + state.dense_s[1:]
    for a, b in zip(arrays(direct), arrays(through_layers), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert direct.scale == 1.0
    with pytest.raises(ValueError, match="same network"):
        cpu._kernel_state(1, bf16=True).load_values_of(cpu._state)


def test_inference_and_gradients_are_those_of_the_float32_values():
    numpy, cpu = engines("item", True)
    cpu.train_epoch(1, 0.05)
    plain = make_engine("cpu", cpu.get_layers(), TrainConfig(batch_size=16, weight_decay=0.05, seed=1),
                        cpu.samples, cpu.side)
    rows = np.arange(cpu.samples.shape[0])
    cols = np.asarray(cpu.samples.indices[:len(rows)] if cpu.samples.nnz >= len(rows) else rows % cpu.samples.shape[1])
    np.testing.assert_array_equal(cpu.predict_entries(cpu.samples, cpu.side, rows, cols),
                                  plain.predict_entries(cpu.samples, cpu.side, rows, cols))
    np.testing.assert_array_equal(cpu.encode(cpu.samples, cpu.side), plain.encode(cpu.samples, cpu.side))
    batch = minibatches(cpu, 2)[0]
    loss_b, grads_b = cpu.gradients(batch, 2)
    loss_f, grads_f = plain.gradients(batch, 2)
    assert loss_b == loss_f
    for gb, gf in zip(grads_b, grads_f):
        for x, y in zip(gb.arrays(), gf.arrays()):
            np.testing.assert_array_equal(x, y)
    cpu.train_epoch(2, 0.05)                  # training moves on: inference follows the new values
    assert not np.array_equal(cpu.encode(cpu.samples, cpu.side), plain.encode(cpu.samples, cpu.side))


@pytest.mark.parametrize("kind", ["item", "user"])
def test_a_bfloat16_cpu_model_matches_the_numpy_one(kind, tmp_path):
    train, test = train_test_split(synthetic_ratings(400, 250, 16000, seed=3), 0.1, seed=0)
    cpu = CFN(kind, (32,), 6, backend="cpu", dtype="bfloat16", seed=0).fit(train)
    numpy = CFN(kind, (32,), 6, backend="numpy", dtype="bfloat16", seed=0).fit(train)
    assert cpu.score(test) == pytest.approx(numpy.score(test), abs=2e-3)
    path = cpu.save(tmp_path / "model.npz")
    loaded = CFN.load(path)
    assert loaded.get_params()["dtype"] == "bfloat16"
    np.testing.assert_array_equal(loaded.predict(test.user_ids[test.user], test.item_ids[test.item]),
                                  cpu.predict(test.user_ids[test.user], test.item_ids[test.item]))
