"""A network kept sharded while it trains (issue 23): ShardedEngine built on a ShardedLayers never gathers it.

Kept mode against gathered mode (threads of this process, small shapes): the same parts after 3 epochs, the driver
never joining the network, snapshots and restores done by the shards, the largest parameter, a release into a
folder that a second fit resumes from, and a killed Ray actor resumed from its checkpoints.
"""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import cfn_fast.sharding.engine as engine_module
import cfn_fast.sharding.parts as parts_module
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.engine import TrainConfig, init_layers, learning_rate, make_engine, training_inputs
from cfn_fast.sharding.engine import ShardedEngine
from cfn_fast.sharding.parts import MANIFEST, PartLayout, ShardedLayers, part_file_name
from cfn_fast.sharding.ray_group import KillShardOnce

DATA = synthetic_ratings(120, 90, 2400, seed=3)
EPOCHS = 3
SEED = 0


def lr(epoch: int) -> float:
    return learning_rate(0.05, 0.2, epoch)


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for p, q in zip(a, b) for x, y in zip(p.arrays(), q.arrays()))


def problem(kind: str = "item", side: bool = True, hidden=(12,), shards: int = 2):
    inputs = training_inputs(DATA, kind, use_side_info=side)
    layout = PartLayout.even(inputs.n_inputs, hidden, inputs.side_dim, shards)
    return inputs, layout, TrainConfig(seed=5, batch_size=16, mask_ratio=0.3)


def gathered_engine(backend, inputs, layout, config, **options) -> ShardedEngine:
    layers = init_layers(inputs.n_inputs, layout.hidden, inputs.side_dim, seed=SEED)
    return ShardedEngine(layers, config, inputs.samples, inputs.side, shards=layout.shards, backend=backend,
                         transport="threads", **options)


def kept_engine(backend, inputs, layout, config, **options) -> ShardedEngine:
    return ShardedEngine(ShardedLayers.initial(layout, SEED), config, inputs.samples, inputs.side,
                         shards=layout.shards, backend=backend, **{"transport": "threads", **options})


@pytest.fixture
def no_gathering(monkeypatch):
    """While active, anything in the driver that joins the whole network or builds a whole-network engine fails."""
    def refuse(*args, **kwargs):
        raise AssertionError("the driver built the whole network")
    monkeypatch.setattr(engine_module, "join_layers", refuse)
    monkeypatch.setattr(engine_module, "make_engine", refuse)
    monkeypatch.setattr(parts_module, "join_layers", refuse)
    monkeypatch.setattr(ShardedLayers, "gather", refuse)
    return monkeypatch


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("kind, side, hidden, shards", [("item", True, (12,), 2), ("user", False, (12, 7), 3)])
def test_kept_mode_trains_the_gathered_model_without_gathering(backend, kind, side, hidden, shards, no_gathering):
    inputs, layout, config = problem(kind, side, hidden, shards)
    no_gathering.undo()
    gathered = gathered_engine(backend, inputs, layout, config)
    expected_losses = [gathered.train_epoch(epoch, lr(epoch)) for epoch in range(1, EPOCHS + 1)]
    expected_peak = gathered.max_abs_param()
    gathered.release()
    expected = gathered.get_layers()
    no_gathering.setattr(engine_module, "join_layers", lambda *a: pytest.fail("the driver joined the network"))
    no_gathering.setattr(ShardedLayers, "gather", lambda *a: pytest.fail("the driver gathered the network"))
    no_gathering.setattr(engine_module, "make_engine", lambda *a: pytest.fail("a whole-network engine was built"))

    engine = kept_engine(backend, inputs, layout, config)
    losses = [engine.train_epoch(epoch, lr(epoch)) for epoch in range(1, EPOCHS + 1)]
    assert engine.max_abs_param() == pytest.approx(expected_peak, abs=1e-5)
    live = engine.get_layers()
    assert isinstance(live, ShardedLayers) and live.layout == layout
    engine.release()
    stored = engine.get_layers()
    assert isinstance(stored, ShardedLayers) and stored.folder is not None

    no_gathering.undo()
    assert max_difference(stored.gather(), expected) < 1e-5
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)


def test_snapshot_and_restore_are_kept_by_the_shards(no_gathering):
    inputs, layout, config = problem()
    engine = kept_engine("numpy", inputs, layout, config)
    before_training = engine.snapshot()                 # no shard runs yet: the initial layers themselves
    engine.train_epoch(1, lr(1))
    token = engine.snapshot()
    after_one = [engine.get_layers().part(rank) for rank in range(layout.shards)]
    engine.train_epoch(2, lr(2))
    assert max_difference(engine.get_layers().part(0), after_one[0]) > 0
    engine.restore(token)
    for rank in range(layout.shards):
        assert max_difference(engine.get_layers().part(rank), after_one[rank]) == 0.0
    peaks = [max(float(np.max(np.abs(a))) for layer in part for a in layer.arrays()) for part in after_one]
    assert engine.max_abs_param() == max(peaks)

    held = set(engine.group.kept)
    del token
    gc.collect()
    engine.snapshot()                                   # the shards drop what the trainer let go
    assert not held & set(engine.group.kept)

    engine.restore(before_training)
    initial = ShardedLayers.initial(layout, SEED)
    for rank in range(layout.shards):
        assert max_difference(engine.get_layers().part(rank), initial.part(rank)) == 0.0

    live_token = engine.snapshot()
    engine.release()
    with pytest.raises(ValueError, match="stopped since"):
        engine.restore(live_token)


def test_release_writes_a_folder_a_second_fit_resumes_from(tmp_path, no_gathering):
    inputs, layout, config = problem("user", True)
    no_gathering.undo()
    gathered = gathered_engine("numpy", inputs, layout, config)
    for epoch in range(1, EPOCHS + 1):
        gathered.train_epoch(epoch, lr(epoch))
    gathered.release()
    expected = gathered.get_layers()

    store = tmp_path / "store"
    engine = kept_engine("numpy", inputs, layout, config, store_dir=store)
    for epoch in range(1, EPOCHS):
        engine.train_epoch(epoch, lr(epoch))
    engine.release()
    assert sorted(p.name for p in store.iterdir()) == sorted([MANIFEST, *map(part_file_name, range(layout.shards))])
    stored = ShardedLayers.from_folder(store)
    for rank in range(layout.shards):
        assert max_difference(stored.part(rank), engine.get_layers().part(rank)) == 0.0
    engine.train_epoch(EPOCHS, lr(EPOCHS))               # the shards start again from the folder
    engine.release()
    assert max_difference(ShardedLayers.from_folder(store).gather(), expected) < 1e-5

    temporary = kept_engine("numpy", inputs, layout, config)
    temporary.train_epoch(1, lr(1))
    temporary.release()
    folder = temporary.get_layers().folder
    assert folder.name.startswith("cfn-shards-") and (folder / MANIFEST).is_file()
    del temporary
    gc.collect()
    assert not folder.exists()                           # deleted with the last reference to its layers
    assert store.exists()                                # a folder the caller gave is never deleted


def test_kept_mode_refuses_what_it_cannot_hold():
    inputs, layout, config = problem()
    with pytest.raises(ValueError, match="kept in 2 parts"):
        ShardedEngine(ShardedLayers.initial(layout, SEED), config, inputs.samples, inputs.side, shards=3,
                      backend="numpy", transport="threads")
    with pytest.raises(ValueError, match="store_dir"):
        gathered_engine("numpy", inputs, layout, config, store_dir="somewhere")
    engine = kept_engine("numpy", inputs, layout, config)
    with pytest.raises(TypeError, match="ShardedLayers"):
        engine.set_layers(init_layers(inputs.n_inputs, layout.hidden, inputs.side_dim, seed=SEED))
    other = PartLayout.even(inputs.n_inputs, layout.hidden, inputs.side_dim, 3)
    with pytest.raises(ValueError, match="split at"):
        engine.set_layers(ShardedLayers.initial(other, SEED))


def test_kept_inference_is_the_gathered_engines():
    pytest.importorskip("cfn_fast.sharding.inference", reason="PartsEngine (cfn_fast/sharding/inference.py) is "
                                                              "not in this tree yet")
    inputs, layout, config = problem()
    gathered = gathered_engine("numpy", inputs, layout, config)
    engine = kept_engine("numpy", inputs, layout, config)
    for epoch in (1, 2):
        gathered.train_epoch(epoch, lr(epoch))
        engine.train_epoch(epoch, lr(epoch))
    rows, cols = np.array([0, 3, 7, 7]), np.array([1, 5, 0, inputs.n_inputs - 1])
    np.testing.assert_allclose(engine.predict_entries(inputs.samples, inputs.side, rows, cols),
                               gathered.predict_entries(inputs.samples, inputs.side, rows, cols), atol=1e-5)


# ----------------------------------------------------------------------------- on Ray
def test_a_killed_actor_resumes_in_kept_mode(ray_cluster, tmp_path, no_gathering):
    inputs, layout, config = problem("user", True)
    no_gathering.undo()
    plain = make_engine("numpy", init_layers(inputs.n_inputs, layout.hidden, inputs.side_dim, seed=SEED), config,
                        inputs.samples, inputs.side)
    expected_losses = [plain.train_epoch(epoch, lr(epoch)) for epoch in range(1, EPOCHS + 1)]
    expected = plain.get_layers()
    no_gathering.setattr(ShardedLayers, "gather", lambda *a: pytest.fail("the driver gathered the network"))
    no_gathering.setattr(engine_module, "join_layers", lambda *a: pytest.fail("the driver joined the network"))

    engine = kept_engine("numpy", inputs, layout, config, transport="ray",
                         checkpoint_dir=str(tmp_path / "checkpoints"), store_dir=tmp_path / "store",
                         fault=KillShardOnce(str(tmp_path / "killed"), rank=1, epoch=2))
    losses = [engine.train_epoch(1, lr(1))]
    after_one = [engine.get_layers().part(rank) for rank in range(layout.shards)]
    token = engine.snapshot()
    losses += [engine.train_epoch(epoch, lr(epoch)) for epoch in range(2, EPOCHS + 1)]   # rank 1 dies at epoch 2
    assert engine.restarts == 1 and os.path.exists(tmp_path / "killed")
    engine.restore(token)                               # kept as files: the replacement actor finds its copy
    for rank in range(layout.shards):
        assert max_difference(engine.get_layers().part(rank), after_one[rank]) == 0.0
    again = [engine.train_epoch(epoch, lr(epoch)) for epoch in range(2, EPOCHS + 1)]
    engine.release()
    no_gathering.undo()
    assert max_difference(ShardedLayers.from_folder(tmp_path / "store").gather(), expected) < 1e-5
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    np.testing.assert_allclose(again, expected_losses[1:], rtol=1e-5)
