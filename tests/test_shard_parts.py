"""A network kept sharded (cfn_fast.sharding.parts): parts from the seed alone, the folder of parts, its checks."""
import hashlib
import json

import numpy as np
import pytest

from cfn_fast.backends.shard_base import split_layers
from cfn_fast.network import init_layers
from cfn_fast.sharding.parts import (
    MANIFEST,
    NotGathered,
    PartLayout,
    PartStoreError,
    ShardedLayers,
    init_part,
    part_file_name,
)

SHAPES = [(37, (5,), 0, 3), (50, (7, 4, 7), 3, 4), (10, (3,), 2, 1), (101, (8, 6), 0, 7)]


def _equal(left, right):
    return len(left) == len(right) and all(
        x.shape == y.shape and np.array_equal(x, y)
        for a, b in zip(left, right) for x, y in zip(a.arrays(), b.arrays()))


@pytest.mark.parametrize("n_inputs,hidden,side_dim,shards", SHAPES)
def test_init_part_is_the_slice_of_the_whole_initialisation(n_inputs, hidden, side_dim, shards):
    layout = PartLayout.even(n_inputs, hidden, side_dim, shards)
    whole = split_layers(init_layers(n_inputs, hidden, side_dim, seed=11), layout.bounds)
    for rank in range(shards):
        assert _equal(init_part(layout, rank, 11), whole[rank])


@pytest.mark.parametrize("n_inputs,hidden,side_dim,shards", SHAPES)
def test_folder_round_trip_and_gather(tmp_path, n_inputs, hidden, side_dim, shards):
    layers = ShardedLayers.initial(PartLayout.even(n_inputs, hidden, side_dim, shards), 3)
    layers.save(tmp_path)
    back = ShardedLayers.from_folder(tmp_path)
    assert back.layout == layers.layout and len(back) == len(hidden) + 1 and back.hidden == hidden
    assert _equal(back.gather(), init_layers(n_inputs, hidden, side_dim, seed=3))
    assert layers.layout.nbytes() == 4 * sum(a.size for layer in back.gather() for a in layer.arrays())


def test_whole_network_access_is_refused_with_a_clear_error():
    layers = ShardedLayers.initial(PartLayout.even(20, (4,), 0, 2), 0)
    for touch in (lambda: layers[0], lambda: list(layers), lambda: layers[-1].weight):
        with pytest.raises(NotGathered, match="kept sharded.*gather"):
            touch()


def _stored(tmp_path):
    ShardedLayers.initial(PartLayout.even(30, (4,), 2, 3), 0).save(tmp_path)
    return json.loads((tmp_path / MANIFEST).read_text())


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(format="other"), "not the manifest"),
    (lambda m: m.update(version=9), "format version"),
    (lambda m: m.update(n_inputs=-3), "n_inputs"),
    (lambda m: m.update(hidden=[]), "hidden"),
    (lambda m: m.update(bounds=[[0, 10], [12, 20], [20, 30]]), "consecutive"),
    (lambda m: m.update(bounds=[[0, 10], [10, 20], [20, 29]]), "n_inputs"),
    (lambda m: m["files"][1].update(name="../../etc/passwd"), "file entry 1"),
    (lambda m: m["files"][0].update(bytes=5), "bytes its manifest says"),
])
def test_bad_manifest_is_refused(tmp_path, edit, match):
    manifest = _stored(tmp_path)
    edit(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PartStoreError, match=match):
        ShardedLayers.from_folder(tmp_path)


def test_damaged_part_is_refused_when_loaded(tmp_path):
    _stored(tmp_path)
    path = tmp_path / part_file_name(1)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    layers = ShardedLayers.from_folder(tmp_path)
    layers.part(0)
    with pytest.raises(PartStoreError, match="SHA-256"):
        layers.part(1)


def test_part_of_another_shape_is_refused(tmp_path):
    manifest = _stored(tmp_path)
    manifest["hidden"] = [5]            # the files hold hidden (4,): their headers say so before any array is read
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PartStoreError, match="float32 of shape"):
        ShardedLayers.from_folder(tmp_path).part(0)


def test_each_file_is_hashed_once_per_sharded_layers(tmp_path, monkeypatch):
    _stored(tmp_path)
    hashed = []
    sha256 = hashlib.sha256

    def counting(*args):
        hashed.append(1)
        return sha256(*args)

    monkeypatch.setattr(hashlib, "sha256", counting)
    layers = ShardedLayers.from_folder(tmp_path)
    for _ in range(3):                            # inference loads every part on every call
        for rank in range(layers.shards):
            layers.part(rank)
    assert len(hashed) == layers.shards
    ShardedLayers.from_folder(tmp_path).part(0)   # another reader checks again
    assert len(hashed) == layers.shards + 1


def test_a_part_replaced_after_its_check_is_still_refused_when_its_size_changed(tmp_path):
    _stored(tmp_path)
    layers = ShardedLayers.from_folder(tmp_path)
    layers.part(1)
    path = tmp_path / part_file_name(1)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(PartStoreError, match="bytes its manifest says"):
        layers.part(1)
