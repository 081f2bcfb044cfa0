"""Sharded training (issue 23): the input dimension split over workers gives the unsharded model.

The split step against the unsharded engine for 1, 2 and 4 shards, both kinds, with and without side
information (threads of this process); ``CFN(shards=N)`` end to end on Ray, a killed shard actor resumed from the
shards' checkpoints, the memory cap, and bad arguments refused before any kernel runs.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast import CFN
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.engine import (
    ShardData,
    TrainConfig,
    init_layers,
    join_layers,
    learning_rate,
    make_engine,
    make_shard_engine,
    shard_bounds,
    shard_data,
    split_layers,
    training_inputs,
)
from cfn_fast.sharding.checkpoint import load_part, save_part
from cfn_fast.sharding.engine import ShardedEngine
from cfn_fast.sharding.plan import shards_needed
from cfn_fast.sharding.ray_group import KillShardOnce

DATA = synthetic_ratings(120, 90, 2400, seed=3)
EPOCHS = 3


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for p, q in zip(a, b) for x, y in zip(p.arrays(), q.arrays()))


def problem(kind: str, side: bool, hidden=(12,)):
    inputs = training_inputs(DATA, kind, use_side_info=side)
    layers = init_layers(inputs.n_inputs, hidden, inputs.side_dim, seed=0)
    return inputs, layers, TrainConfig(seed=5, batch_size=16, mask_ratio=0.3)


def unsharded(backend, inputs, layers, config):
    engine = make_engine(backend, layers, config, inputs.samples, inputs.side)
    losses = [engine.train_epoch(epoch, learning_rate(0.05, 0.2, epoch)) for epoch in range(1, EPOCHS + 1)]
    return engine.get_layers(), losses


@pytest.mark.parametrize("kind", ["item", "user"])
@pytest.mark.parametrize("side", [False, True])
@pytest.mark.parametrize("hidden", [(12,), (12, 7)])
def test_shards_give_the_unsharded_model(backend, kind, side, hidden):
    inputs, layers, config = problem(kind, side, hidden)
    expected, expected_losses = unsharded(backend, inputs, layers, config)
    for shards in (1, 2, 4):
        engine = ShardedEngine(layers, config, inputs.samples, inputs.side, shards=shards, backend=backend,
                               transport="threads")
        losses = [engine.train_epoch(epoch, learning_rate(0.05, 0.2, epoch)) for epoch in range(1, EPOCHS + 1)]
        engine.release()
        assert max_difference(engine.get_layers(), expected) < 1e-5, shards
        np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
        if shards == 1 and backend == "numpy":      # one shard is the unsharded step, op for op
            assert max_difference(engine.get_layers(), expected) == 0.0


def test_split_and_join_are_inverse_and_bounds_cover_the_inputs():
    layers = init_layers(10, (4, 3), 2, seed=1)
    bounds = shard_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert max_difference(join_layers(split_layers(layers, bounds)), layers) == 0.0
    with pytest.raises(ValueError, match="more than the 10 inputs"):
        shard_bounds(10, 11)


def test_each_shard_keys_the_noise_by_global_positions():
    samples = training_inputs(DATA, "user").samples
    parts = shard_data(samples, shard_bounds(samples.shape[1], 3))
    positions = np.sort(np.concatenate([p.positions for p in parts]))
    assert np.array_equal(positions, np.arange(samples.nnz))
    assert sum(p.samples.nnz for p in parts) == samples.nnz


def one_shard(backend="numpy"):
    inputs, layers, config = problem("item", True)
    bounds = shard_bounds(inputs.n_inputs, 2)
    part, data = split_layers(layers, bounds)[0], shard_data(inputs.samples, bounds)[0]
    return part, config, data, inputs.side


@pytest.mark.parametrize("change, message", [
    (lambda p, d: (p, ShardData(d.samples, d.positions[:-1], d.row_starts, d.first)), "data.positions"),
    (lambda p, d: (p, ShardData(d.samples, d.positions + 10**9, d.row_starts, d.first)), "data.positions"),
    (lambda p, d: (p, ShardData(d.samples, d.positions, d.row_starts[::-1].copy(), d.first)), "row_starts"),
    (lambda p, d: (p[:1], d), "at least 2 layers"),
    (lambda p, d: (p, "not data"), "ShardData"),
])
def test_make_shard_engine_refuses_bad_arguments(change, message):
    part, config, data, side = one_shard()
    part, data = change(part, data)
    with pytest.raises((TypeError, ValueError), match=message):
        make_shard_engine("numpy", part, config, data, side)


def test_split_step_calls_are_checked(backend):
    part, config, data, side = one_shard()
    engine = make_shard_engine(backend, part, config, data, side)
    rows = np.arange(5)
    with pytest.raises(ValueError, match="input_partial"):
        engine.output_partial(rows, 1, np.zeros((5, 12), np.float32), 0.05)
    block = engine.input_partial(rows, 1)
    with pytest.raises(ValueError, match="hidden_sum must have shape"):
        engine.output_partial(rows, 1, block[:, :3], 0.05)
    with pytest.raises(ValueError, match="NaN"):
        engine.output_partial(rows, 1, np.full_like(block, np.nan), 0.05)
    with pytest.raises(IndexError):
        engine.input_partial(np.array([10**6]), 1)
    with pytest.raises(ValueError, match="output_partial"):
        engine.finish_step(rows, np.zeros((5, 12), np.float32), 0.05)


def test_checkpoints_are_plain_arrays_checked_on_load(tmp_path):
    part = split_layers(init_layers(10, (4,), 0, seed=1), shard_bounds(10, 2))[0]
    path = save_part(tmp_path, 0, 3, part)
    with np.load(path, allow_pickle=False) as data:      # no pickled object inside
        assert "layer0_weight" in data.files
    assert max_difference(load_part(tmp_path, 0, 3, part), part) == 0.0
    other = split_layers(init_layers(12, (4,), 0, seed=1), shard_bounds(12, 2))[0]
    with pytest.raises(ValueError, match="float32 of shape"):
        load_part(tmp_path, 0, 3, other)


# ----------------------------------------------------------------------------- settings and the memory cap
def test_shards_need_one_network_and_float32():
    with pytest.raises(ValueError, match="shards must be None unless kind"):
        CFN(shards=2).fit(DATA)
    with pytest.raises(ValueError, match="bfloat16"):
        CFN("item", shards=2, dtype="bfloat16").fit(DATA)
    with pytest.raises(ValueError, match="shards must be"):
        CFN("item", shards=0).fit(DATA)


def test_memory_cap_names_the_shards_needed():
    inputs = training_inputs(DATA, "item")
    cap = 40_000
    needed = shards_needed(inputs.n_inputs, (32,), inputs.side_dim, cap)
    assert needed > 1
    with pytest.raises(ValueError, match=f"shards={needed} or more"):
        CFN("item", hidden=(32,), epochs=1, max_worker_bytes=cap).fit(DATA)
    with pytest.raises(ValueError, match=f"shards={needed} or more"):
        CFN("item", hidden=(32,), epochs=1, max_worker_bytes=cap, shards=needed - 1).fit(DATA)


# ----------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_session(ray_cluster):
    return ray_cluster


def test_cfn_shards_on_ray_is_the_unsharded_model(ray_session, tmp_path):
    inputs = training_inputs(DATA, "item")
    cap = 40_000
    needed = shards_needed(inputs.n_inputs, (32,), inputs.side_dim, cap)
    plain = CFN("item", hidden=(32,), epochs=EPOCHS, seed=2, backend="numpy").fit(DATA)
    sharded = CFN("item", hidden=(32,), epochs=EPOCHS, seed=2, backend="numpy", shards=needed).fit(DATA)
    # no cap: the network is gathered when training ends (one over max_worker_bytes stays sharded: test_shard_kept)
    assert max_difference(sharded.layers_, plain.layers_) < 1e-5
    users, items = np.array([0, 5, 9]), np.array([1, 2, 3])
    np.testing.assert_allclose(sharded.predict_indices(users, items), plain.predict_indices(users, items), atol=1e-4)
    path = tmp_path / "sharded.npz"
    sharded.save(path)
    loaded = CFN.load(path)
    assert max_difference(loaded.layers_, sharded.layers_) == 0.0
    assert max_difference(pickle.loads(pickle.dumps(sharded)).layers_, sharded.layers_) == 0.0
    again = sharded.partial_fit(1)                       # goes on sharded, from the gathered network
    assert again.epochs_trained_ == EPOCHS + 1


def test_a_killed_shard_actor_resumes_from_the_checkpoints(ray_session, tmp_path):
    inputs, layers, config = problem("user", True)
    expected, expected_losses = unsharded("numpy", inputs, layers, config)
    engine = ShardedEngine(layers, config, inputs.samples, inputs.side, shards=2, backend="numpy",
                           checkpoint_dir=str(tmp_path / "checkpoints"),
                           fault=KillShardOnce(str(tmp_path / "killed"), rank=1, epoch=2))
    losses = [engine.train_epoch(epoch, learning_rate(0.05, 0.2, epoch)) for epoch in range(1, EPOCHS + 1)]
    assert engine.restarts == 1 and os.path.exists(tmp_path / "killed")
    engine.release()
    assert max_difference(engine.get_layers(), expected) < 1e-5
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        f"shard{rank}-epoch{epoch}.npz" for rank in (0, 1) for epoch in (EPOCHS - 1, EPOCHS)]


def test_shard_data_of_a_coo_matrix_equals_the_csr():
    samples = training_inputs(DATA, "item").samples
    a = shard_data(samples, shard_bounds(samples.shape[1], 2))
    b = shard_data(sp.coo_matrix(samples), shard_bounds(samples.shape[1], 2))
    assert all((x.samples != y.samples).nnz == 0 and np.array_equal(x.positions, y.positions) for x, y in zip(a, b))


def test_cli_fit_with_shards(ray_session, capsys, tmp_path):
    import json

    from cfn_fast.cli import main
    ratings = tmp_path / "ratings.npz"
    np.savez(ratings, user=DATA.user_ids[DATA.user].astype(np.int32), item=DATA.item_ids[DATA.item].astype(np.int32),
             rating=DATA.rating)
    path = tmp_path / "model.npz"
    code = main(["fit", "--ratings", str(ratings), "--kind", "item", "--hidden", "8", "--epochs", "2", "--backend",
                 "numpy", "--shards", "2", "--max-worker-memory", "1M", "--save", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["epochs"] == 2 and CFN.load(path).epochs_trained_ == 2
    code = main(["fit", "--ratings", str(ratings), "--kind", "item", "--hidden", "64", "--epochs", "1", "--backend",
                 "numpy", "--max-worker-memory", "20K"])
    err = capsys.readouterr().err
    assert code != 0 and "or more" in err and "--shards" in err
    code = main(["fit", "--ratings", str(ratings), "--shards", "2"])
    assert code == 2 and "kind" in capsys.readouterr().err


def test_an_address_where_no_cluster_answers_fails_in_seconds():
    import time

    from cfn_fast.sharding.ray_group import actor_resources, start_ray

    class NotStarted:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise AssertionError("Ray must not start for an address that does not answer")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="ray_address 127.0.0.1:1: no Ray cluster answers"):
        start_ray(NotStarted(), "127.0.0.1:1")
    with pytest.raises(ValueError, match="ray_address must be 'auto', HOST:PORT or ray://HOST:PORT"):
        start_ray(NotStarted(), "head-node")
    assert time.monotonic() - start < 10
    assert actor_resources(2.0, 4) == (0.5, 1) and actor_resources(2.0, 1) == (2.0, 2)   # 4 shards on 2 cores
