"""Inference on a network kept sharded (cfn_fast.sharding.inference.PartsEngine) against the NumPy reference."""
import weakref

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast.engine import TrainConfig, make_engine
from cfn_fast.sharding.inference import PartsEngine
from cfn_fast.sharding.parts import NotGathered, PartLayout, ShardedLayers

#: (n_inputs, hidden, side_dim, shards): one and two hidden layers, with and without side information, 1..7 shards
SHAPES = [(37, (5,), 0, 1), (37, (5,), 0, 3), (50, (7, 4), 3, 4), (41, (6, 3), 0, 2), (29, (4,), 2, 7),
          (23, (6,), 3, 1)]
N_SAMPLES = 19
CONFIG = TrainConfig(batch_size=8)


def _data(n_inputs, side_dim, seed=0):
    rng = np.random.default_rng(seed)
    samples = sp.random(N_SAMPLES, n_inputs, density=0.25, format="csr", dtype=np.float32,
                        random_state=seed, data_rvs=lambda k: rng.uniform(-1, 1, k))
    keep = np.ones(N_SAMPLES, dtype=np.float32)
    keep[[2, 11]] = 0                         # samples without any rating
    samples = sp.csr_matrix(sp.diags(keep) @ samples, dtype=np.float32)
    samples.eliminate_zeros()
    side = rng.uniform(-1, 1, (N_SAMPLES, side_dim)).astype(np.float32) if side_dim else None
    return samples, side


def _engines(n_inputs, hidden, side_dim, shards, seed=5):
    layers = ShardedLayers.initial(PartLayout.even(n_inputs, hidden, side_dim, shards), seed)
    samples, side = _data(n_inputs, side_dim)
    return (PartsEngine(layers, CONFIG, samples, side), make_engine("numpy", layers.gather(), CONFIG, samples, side),
            samples, side)


@pytest.mark.parametrize("n_inputs,hidden,side_dim,shards", SHAPES)
def test_encode_decode_predict_match_the_reference(n_inputs, hidden, side_dim, shards):
    sharded, reference, samples, side = _engines(n_inputs, hidden, side_dim, shards)
    codes = sharded.encode(samples, side)
    assert codes.dtype == np.float32
    np.testing.assert_allclose(codes, reference.encode(samples, side), atol=1e-5)
    decoded = sharded.decode(codes, side)
    assert decoded.dtype == np.float32 and decoded.shape == (N_SAMPLES, n_inputs)
    np.testing.assert_allclose(decoded, reference.decode(codes, side), atol=1e-5)
    rng = np.random.default_rng(1)
    for cols in (rng.permutation(n_inputs)[:9], np.array([n_inputs - 1, 0, n_inputs - 1, 3]),
                 np.array([], dtype=np.int64)):
        got = sharded.decode(codes, side, cols)
        assert got.dtype == np.float32 and got.shape == (N_SAMPLES, len(cols))
        np.testing.assert_allclose(got, reference.decode(codes, side, cols), atol=1e-5)
    rows = rng.integers(0, N_SAMPLES, 60)                # any order, repeats, rows without ratings
    cols = rng.integers(0, n_inputs, 60)
    got = sharded.predict_entries(samples, side, rows, cols)
    assert got.dtype == np.float32 and got.shape == (60,)
    np.testing.assert_allclose(got, reference.predict_entries(samples, side, rows, cols), atol=1e-5)
    empty = np.array([], dtype=np.int64)
    assert sharded.predict_entries(samples, side, empty, empty).shape == (0,)
    assert sharded.encode(samples[:0], None if side is None else side[:0]).shape == (0, hidden[-1])


def test_one_part_at_a_time_and_never_gathered(monkeypatch):
    layout = PartLayout.even(40, (6, 4), 2, 4)
    initial = ShardedLayers.initial(layout, 3)
    alive: list[weakref.ref] = []

    def load(rank):
        assert all(ref() is None for ref in alive), "a part was loaded while another one was still held"
        part = initial.part(rank)
        alive.extend(weakref.ref(array) for layer in part for array in layer.arrays())
        return part

    layers = ShardedLayers(layout, load)
    monkeypatch.setattr(ShardedLayers, "gather", lambda self: pytest.fail("gathered"))
    samples, side = _data(40, 2)
    engine = PartsEngine(layers, CONFIG, samples, side)
    codes = engine.encode(samples, side)
    engine.decode(codes, side)
    engine.decode(codes, side, np.arange(0, 40, 3))
    engine.predict_entries(samples, side, np.arange(N_SAMPLES), np.arange(N_SAMPLES))
    engine.max_abs_param()
    assert engine.get_layers() is layers


def test_folder_parts_predict_as_the_initial_ones(tmp_path):
    layout = PartLayout.even(33, (5, 3), 2, 3)
    initial = ShardedLayers.initial(layout, 8)
    initial.save(tmp_path)
    samples, side = _data(33, 2)
    stored = PartsEngine(ShardedLayers.from_folder(tmp_path), CONFIG, samples, side)
    fresh = PartsEngine(initial, CONFIG, samples, side)
    rows, cols = np.repeat(np.arange(N_SAMPLES), 33), np.tile(np.arange(33), N_SAMPLES)
    first = stored.predict_entries(samples, side, rows, cols)
    np.testing.assert_array_equal(first, fresh.predict_entries(samples, side, rows, cols))
    np.testing.assert_array_equal(stored.predict_entries(samples, side, rows, cols), first)   # parts read again
    assert stored.max_abs_param() == fresh.max_abs_param() > 0


def test_max_abs_param_is_nan_when_a_part_holds_nan():
    layout = PartLayout.even(20, (4,), 0, 3)
    initial = ShardedLayers.initial(layout, 0)

    def load(rank):
        part = initial.part(rank)
        if rank == 1:
            part[-1].bias[0] = np.nan
        return part

    samples, _ = _data(20, 0)
    assert np.isnan(PartsEngine(ShardedLayers(layout, load), CONFIG, samples, None).max_abs_param())
    reference = make_engine("numpy", initial.gather(), CONFIG, samples)
    assert PartsEngine(initial, CONFIG, samples, None).max_abs_param() == reference.max_abs_param()


def test_training_is_refused_with_a_pointer_to_sharded_training():
    engine, reference, _, _ = _engines(20, (4,), 0, 2)
    # the arguments are checked first, as on every engine; well-formed ones reach the refusal
    for call in (lambda: engine.train_epoch(1, 0.01), lambda: engine.sgd_step(np.array([0, 1]), 1, 0.01),
                 lambda: engine.gradients(np.array([0]), 1), lambda: engine.set_layers(reference.get_layers()),
                 lambda: engine.profiled_epoch(1, 0.01)):
        with pytest.raises(ValueError, match=r"CFN\(shards=N\)"):
            call()
    with pytest.raises(NotGathered):
        engine.get_layers()[0]


def test_arguments_are_checked_before_any_part_is_loaded():
    layout = PartLayout.even(20, (4,), 2, 2)
    initial = ShardedLayers.initial(layout, 0)
    loaded = []
    layers = ShardedLayers(layout, lambda rank: loaded.append(rank) or initial.part(rank))
    samples, side = _data(20, 2)
    engine = PartsEngine(layers, CONFIG, samples, side)
    bad_calls = [
        (lambda: engine.predict_entries(samples, side, [0, N_SAMPLES], [0, 1]), "rows"),
        (lambda: engine.predict_entries(samples, side, [0, 1], [0, 20]), "cols"),
        (lambda: engine.predict_entries(samples, side, [0, 1], [0]), "differ in length"),
        (lambda: engine.predict_entries(samples, None, [0], [0]), "side"),
        (lambda: engine.encode(samples[:, :19], side), "inputs"),
        (lambda: engine.decode(np.zeros((3, 5), np.float32), side[:3]), "codes"),
        (lambda: engine.decode(np.zeros((3, 4), np.float32), side[:3], [25]), "cols"),
        (lambda: engine.decode(np.zeros((3, 4), np.float32), side[:2]), "side"),
    ]
    for call, match in bad_calls:
        with pytest.raises((ValueError, IndexError, TypeError), match=match):
            call()
    assert loaded == []


def test_built_only_on_a_sharded_network_that_fits_the_samples():
    samples, side = _data(20, 2)
    with pytest.raises(TypeError, match="ShardedLayers"):
        PartsEngine(ShardedLayers.initial(PartLayout.even(20, (4,), 2, 2), 0).gather(), CONFIG, samples, side)
    with pytest.raises(ValueError, match="21 inputs"):
        PartsEngine(ShardedLayers.initial(PartLayout.even(21, (4,), 2, 2), 0), CONFIG, samples, side)
    with pytest.raises(ValueError, match="side features"):
        PartsEngine(ShardedLayers.initial(PartLayout.even(20, (4,), 2, 2), 0), CONFIG, samples, None)
