"""The split step on the CPU kernels (CpuShardEngine) against its specification (NumpyShardEngine) call by
call, and sharded epochs against the unsharded CPU engine.  Small shapes: a few seconds in all."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast.backends import available_backends, shard_engine_class
from cfn_fast.backends.base import epoch_order
from cfn_fast.backends.numpy_shard import NumpyShardEngine
from cfn_fast.backends.shard_base import join_layers, shard_bounds, shard_data, split_layers
from cfn_fast.corruption import splitmix64
from cfn_fast.engine import make_engine
from cfn_fast.network import Layer, init_layers
from cfn_fast.settings import TrainConfig

if "cpu" not in available_backends():
    pytest.skip("the compiled cpu kernels do not import", allow_module_level=True)

from cfn_fast.backends.cpu_shard import CpuShardEngine  # noqa: E402
from cfn_fast.kernels import cfn_shard  # noqa: E402

N_SAMPLES, N_INPUTS = 40, 30
CONFIG = TrainConfig(seed=3, batch_size=7, mask_ratio=0.4)
LR = 0.05
SHAPES = [pytest.param((8,), 0, id="one-hidden"), pytest.param((8, 5), 3, id="two-hidden-side")]


def _samples(seed: int = 1) -> sp.csr_matrix:
    """Random ratings; rows 0..4 have entries in the first half of the inputs only (a batch of them gives the
    second shard nothing), rows 5..9 one entry each (the swap rule fires), row 10 none (not trainable)."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((N_SAMPLES, N_INPUTS)) < 0.25, rng.uniform(-1, 1, (N_SAMPLES, N_INPUTS)), 0.0)
    dense[0:5, N_INPUTS // 2:] = 0.0
    dense[5:11] = 0.0
    dense[np.arange(5, 10), rng.integers(0, N_INPUTS, 5)] = 0.5
    return sp.csr_matrix(dense.astype(np.float32))


def _side(side_dim: int) -> np.ndarray | None:
    return np.random.default_rng(7).normal(size=(N_SAMPLES, side_dim)).astype(np.float32) if side_dim else None


def _shards(cls, layers, samples, side, shards: int, **options) -> list:
    bounds = shard_bounds(N_INPUTS, shards)
    return [cls(part, CONFIG, data, side, **options)
            for part, data in zip(split_layers(layers, bounds), shard_data(samples, bounds))]


def _train(engines: list, epochs: range) -> float:
    """The epochs as the worker loop runs them: sum of the blocks, sum of the gradients, in shard order."""
    loss, config = 0.0, engines[0].config
    for epoch in epochs:
        order = epoch_order(config.seed, epoch, engines[0].trainable)
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            hidden_sum = sum(engine.input_partial(rows, epoch) for engine in engines)
            parts = [engine.output_partial(rows, epoch, hidden_sum, LR) for engine in engines]
            code_grad = sum(part[1] for part in parts)
            loss += sum(part[0] for part in parts)
            for engine in engines:
                engine.finish_step(rows, code_grad, LR)
    return loss


def _max_difference(a: list[Layer], b: list[Layer]) -> float:
    return max(float(np.max(np.abs(x - y))) for la, lb in zip(a, b) for x, y in zip(la.arrays(), lb.arrays()))


def test_the_registry_names_it():
    assert shard_engine_class("cpu") is CpuShardEngine


def test_the_kernel_hash_is_the_reference_hash():
    x = np.array([0, 1, 2**63 + 5, 2**64 - 1, 123456789], np.uint64)
    np.testing.assert_array_equal(cfn_shard.splitmix64_array(x), splitmix64(x))


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
def test_the_kernel_tanh_is_within_a_few_ulp(level):
    x = np.concatenate([np.linspace(-12, 12, 20001), np.geomspace(1e-30, 1, 300), -np.geomspace(1e-30, 1, 300),
                        [0.0, -0.0, 0.6249999, 0.625, 8.999, 9.0, 50.0, -50.0]]).astype(np.float32)
    used = cfn_shard.set_simd_level(level)
    try:
        got = cfn_shard.tanh_array(x)
    finally:
        cfn_shard.set_simd_level("best")
    if used != level:
        pytest.skip(f"this CPU has no {level} path")
    np.testing.assert_allclose(got, np.tanh(x.astype(np.float64)), rtol=3e-7, atol=0)
    assert np.all(np.signbit(got) == np.signbit(x))
    special = cfn_shard.tanh_array(np.array([np.inf, -np.inf, np.nan], np.float32))
    assert special[0] == 1.0 and special[1] == -1.0 and np.isnan(special[2])


@pytest.mark.parametrize("hidden, side_dim", SHAPES)
def test_one_step_matches_the_specification(hidden, side_dim):
    samples, side = _samples(), _side(side_dim)
    layers = init_layers(N_INPUTS, hidden, side_dim, seed=0)
    cpu = _shards(CpuShardEngine, layers, samples, side, 2)
    ref = _shards(NumpyShardEngine, layers, samples, side, 2)
    epoch = 2
    for rows in (np.arange(5), np.array([3, 12, 7, 30, 5, 21, 39]), np.array([6, 8])):
        blocks = [(c.input_partial(rows, epoch), r.input_partial(rows, epoch)) for c, r in zip(cpu, ref)]
        for got, want in blocks:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        if rows.max() < 5:          # rows 0..4 have nothing in the second shard: an empty batch there
            assert not np.any(blocks[1][0])
        hidden_sum = sum(want for _, want in blocks)          # both sides go on from the same sum
        outputs = [(c.output_partial(rows, epoch, hidden_sum, LR), r.output_partial(rows, epoch, hidden_sum, LR))
                   for c, r in zip(cpu, ref)]
        for (loss, grad), (want_loss, want_grad) in outputs:
            assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
        code_grad = sum(want[1] for _, want in outputs)
        for c, r in zip(cpu, ref):
            c.finish_step(rows, code_grad, LR)
            r.finish_step(rows, code_grad, LR)
            assert _max_difference(c.get_layers(), r.get_layers()) < 1e-6


@pytest.mark.parametrize("shards", [1, 2, 4])
@pytest.mark.parametrize("hidden, side_dim", SHAPES)
def test_sharded_epochs_match_the_unsharded_cpu_engine(hidden, side_dim, shards):
    samples, side = _samples(), _side(side_dim)
    layers = init_layers(N_INPUTS, hidden, side_dim, seed=0)
    unsharded = make_engine("cpu", layers, CONFIG, samples, side)
    want_loss = sum(unsharded.train_epoch(epoch, LR) for epoch in range(1, 4))
    engines = _shards(CpuShardEngine, layers, samples, side, shards)
    loss = _train(engines, range(1, 4))
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert _max_difference(join_layers([e.get_layers() for e in engines]), unsharded.get_layers()) < 1e-5


def test_the_swap_rule_counts_each_sample_over_all_shards():
    """Mostly hidden: many samples have every entry hidden (then all visible), and many more have every entry
    *of one shard* hidden but not all (no swap there): the sharded epochs still give the unsharded ones."""
    config = TrainConfig(seed=5, batch_size=7, mask_ratio=0.8)
    samples = _samples(3)
    layers = init_layers(N_INPUTS, (8,), 0, seed=1)
    unsharded = make_engine("cpu", layers, config, samples, None)
    want_loss = sum(unsharded.train_epoch(epoch, LR) for epoch in (1, 2))
    bounds = shard_bounds(N_INPUTS, 3)
    engines = [CpuShardEngine(part, config, data, None)
               for part, data in zip(split_layers(layers, bounds), shard_data(samples, bounds))]
    loss = _train(engines, range(1, 3))
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert _max_difference(join_layers([e.get_layers() for e in engines]), unsharded.get_layers()) < 1e-5


def test_the_deferred_input_update_changes_no_bit():
    """The first-layer update waits for the next batch's encoder; reading the layers applies it at once.  Both
    orders give the same bits."""
    samples, side = _samples(), _side(3)
    layers = init_layers(N_INPUTS, (8, 5), 3, seed=0)
    deferred = _shards(CpuShardEngine, layers, samples, side, 2)
    _train(deferred, range(1, 3))
    eager = _shards(CpuShardEngine, layers, samples, side, 2)
    for epoch in (1, 2):
        order = epoch_order(CONFIG.seed, epoch, eager[0].trainable)
        for start in range(0, len(order), CONFIG.batch_size):
            rows = order[start:start + CONFIG.batch_size]
            hidden_sum = sum(engine.input_partial(rows, epoch) for engine in eager)
            parts = [engine.output_partial(rows, epoch, hidden_sum, LR) for engine in eager]
            for engine in eager:
                engine.finish_step(rows, sum(part[1] for part in parts), LR)
                engine.get_layers()
    assert _max_difference(join_layers([e.get_layers() for e in deferred]),
                           join_layers([e.get_layers() for e in eager])) == 0


def test_the_lazy_decay_folds_its_scale_back():
    """lr λ = 0.5: the scales of the per-input arrays pass 1e-10 within 34 steps and are folded into them."""
    config = TrainConfig(seed=3, batch_size=7, mask_ratio=0.4, weight_decay=10.0)
    samples = _samples()
    layers = init_layers(N_INPUTS, (8,), 0, seed=0)
    bounds = shard_bounds(N_INPUTS, 2)
    engines = {cls: [cls(part, config, data, None) for part, data in
                     zip(split_layers(layers, bounds), shard_data(samples, bounds))]
               for cls in (CpuShardEngine, NumpyShardEngine)}
    losses = {cls: _train(group, range(1, 9)) for cls, group in engines.items()}
    assert losses[CpuShardEngine] == pytest.approx(losses[NumpyShardEngine], rel=1e-5)
    assert _max_difference(join_layers([e.get_layers() for e in engines[CpuShardEngine]]),
                           join_layers([e.get_layers() for e in engines[NumpyShardEngine]])) < 1e-6


def test_results_do_not_depend_on_the_thread_count_nor_on_shards_running_as_threads():
    samples, side = _samples(), _side(3)
    layers = init_layers(N_INPUTS, (8, 5), 3, seed=0)
    one = _shards(CpuShardEngine, layers, samples, side, 2, threads=1)
    _train(one, range(1, 3))
    many = _shards(CpuShardEngine, layers, samples, side, 2, threads=3)
    assert many[0].threads == 3
    epoch_losses = []
    with ThreadPoolExecutor(2) as pool:      # each shard's calls on its own thread, as the in-process workers do
        for epoch in (1, 2):
            order = epoch_order(CONFIG.seed, epoch, many[0].trainable)
            for start in range(0, len(order), CONFIG.batch_size):
                rows = order[start:start + CONFIG.batch_size]
                hidden_sum = sum(pool.map(lambda e: e.input_partial(rows, epoch), many))
                parts = list(pool.map(lambda e: e.output_partial(rows, epoch, hidden_sum, LR), many))
                code_grad = sum(part[1] for part in parts)
                epoch_losses.append(sum(part[0] for part in parts))
                list(pool.map(lambda e: e.finish_step(rows, code_grad, LR), many))
    for a, b in zip(one, many):
        for la, lb in zip(a.get_layers(), b.get_layers()):
            for x, y in zip(la.arrays(), lb.arrays()):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("level", ["generic", "avx2"])
def test_every_simd_path_gives_the_same_step(level):
    samples, side = _samples(), _side(3)
    layers = init_layers(N_INPUTS, (8, 5), 3, seed=0)
    best = _shards(CpuShardEngine, layers, samples, side, 2)
    _train(best, range(1, 3))
    used = cfn_shard.set_simd_level(level)
    try:
        other = _shards(CpuShardEngine, layers, samples, side, 2)
        _train(other, range(1, 3))
    finally:
        cfn_shard.set_simd_level("best")
    if used != level:
        pytest.skip(f"this CPU has no {level} path")
    assert _max_difference(join_layers([e.get_layers() for e in best]),
                           join_layers([e.get_layers() for e in other])) < 1e-6


def test_set_layers_round_trips_and_a_checkpoint_restarts_the_same_run():
    samples, side = _samples(), _side(0)
    layers = init_layers(N_INPUTS, (8,), 0, seed=0)
    engines = _shards(CpuShardEngine, layers, samples, side, 2)
    _train(engines, range(1, 2))
    saved = [e.get_layers() for e in engines]
    _train(engines, range(2, 3))
    for engine, part in zip(engines, saved):
        engine.set_layers(part)
        assert _max_difference(engine.get_layers(), part) == 0
    restarted = _shards(CpuShardEngine, join_layers(saved), samples, side, 2)
    _train(engines, range(2, 3))
    _train(restarted, range(2, 3))
    assert _max_difference(join_layers([e.get_layers() for e in engines]),
                           join_layers([e.get_layers() for e in restarted])) == 0


def test_bad_arguments_get_clear_errors():
    samples = _samples()
    layers = init_layers(N_INPUTS, (8,), 0, seed=0)
    engine = _shards(CpuShardEngine, layers, samples, None, 2)[1]
    rows = np.array([1, 2, 3])
    with pytest.raises(IndexError, match="rows must lie in"):
        engine.input_partial(np.array([1, N_SAMPLES]), 1)
    with pytest.raises(IndexError, match="rows must lie in"):
        engine.input_partial(np.array([-1, 2]), 1)
    with pytest.raises(ValueError, match="non-empty"):
        engine.input_partial(np.zeros(0, np.int64), 1)
    with pytest.raises(ValueError, match="epoch"):
        engine.input_partial(rows, 0)
    with pytest.raises(ValueError, match="call input_partial on the same rows first"):
        engine.output_partial(rows, 1, np.zeros((3, 8), np.float32), LR)
    block = engine.input_partial(rows, 1)
    with pytest.raises(ValueError, match="call input_partial and output_partial"):
        engine.finish_step(rows, np.zeros((3, 8), np.float32), LR)      # before output_partial
    with pytest.raises(ValueError, match=r"hidden_sum must have shape \(3, 8\)"):
        engine.output_partial(rows, 1, block[:, :4], LR)
    with pytest.raises(ValueError, match="hidden_sum has NaN"):
        engine.output_partial(rows, 1, np.full((3, 8), np.nan, np.float32), LR)
    with pytest.raises(ValueError, match="call input_partial on the same rows first"):
        engine.output_partial(rows[:2], 1, block[:2], LR)
    with pytest.raises(ValueError, match="lr"):
        engine.output_partial(rows, 1, block, -1.0)
    _, grad = engine.output_partial(rows, 1, block, LR)
    with pytest.raises(ValueError, match=r"code_grad_sum must have shape \(3, 8\)"):
        engine.finish_step(rows, grad.T, LR)
    engine.finish_step(rows, grad, LR)
    with pytest.raises(ValueError, match="call input_partial and output_partial"):
        engine.finish_step(rows, grad, LR)                                 # the step is over
    for threads in (0, True, 1.5):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            engine.threads = threads
    part = engine.get_layers()
    part[0] = Layer(part[0].weight[:, :-1], part[0].bias)
    with pytest.raises(ValueError, match=r"parts\[0\].weight must have shape"):
        engine.set_layers(part)
    data = shard_data(samples, [(0, N_INPUTS)])[0]
    indices = data.samples.indices.copy()
    indices[0] = N_INPUTS                                   # past the shard's inputs: refused, never indexed
    with pytest.raises(ValueError, match="column indices"):
        cfn_shard.ShardState(N_INPUTS, 8, 8, 0, data.samples.indptr, indices, data.samples.data, data.positions,
                             data.row_starts, None, 1.0, 0.5, 0, 1)
    whole = [(0, N_INPUTS)]
    with pytest.raises(ValueError, match="float32"):
        CpuShardEngine(split_layers(layers, whole)[0], TrainConfig(dtype="bfloat16"), shard_data(samples, whole)[0],
                       None)
