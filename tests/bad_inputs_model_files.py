"""Bad-input rows for model files (untrusted input); tests/test_bad_input.py runs them and renders the table.

Each file is a tiny saved U-CFN (30 users x 20 items), or a small blend (the default kind: 300 users x 150 items,
two networks and the factor member), edited and re-hashed (tests/model_files.py), so that the checksum passes and
only ``CFN.load``'s content checks refuse it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bad_input_case import Case  # tests/bad_input_case.py
from model_files import TINY, tampered, with_config  # tests/model_files.py

from cfn_fast import CFN, synthetic_ratings
from cfn_fast.backends.shard_base import split_layers
from cfn_fast.fitted.persistence import ModelFileError
from cfn_fast.sharding.parts import MANIFEST, NotGathered, PartLayout, PartStoreError, ShardedLayers

_BLEND: list[CFN] = []


def _blend() -> CFN:
    """A blend of two networks (an I-CFN, then a U-CFN) and a factor member, fitted once."""
    if not _BLEND:
        data = synthetic_ratings(300, 150, 20_000, seed=3, side_info=False)
        _BLEND.append(CFN(hidden=(32,), epochs=10, backend="cpu").fit(data))
    return _BLEND[0]


def _edited(name: str, edit: Callable[[dict[str, np.ndarray]], Any], blend: bool = False) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        model = _blend() if blend else CFN("user", (4,), 1, backend="numpy", seed=0).fit(TINY)
        return CFN.load(tampered(model.save(tmp / "saved.npz"), tmp / name, edit))
    return run


def _set(entry: str, at: int, value: Any) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[entry][at] = value
    return edit


def _reversed_scale(arrays: dict[str, np.ndarray]) -> None:
    arrays["pre_scalars"][:2] = [5.0, 1.0]


def _bad_member_layer(arrays: dict[str, np.ndarray]) -> None:
    arrays["member1_layer1_weight"] = arrays["member1_layer1_weight"][:-1].copy()


def _row(what: str, name: str, edit: Callable, detail: str, blend: bool = False) -> Case:
    shown = f"{name} is not a valid cfn_fast model: {detail}"
    return Case(what, f'CFN.load("{name}")', _edited(name, edit, blend), ModelFileError,
                "re:.*" + re.escape(shown), shown=shown, needs_tmp=True)


def _kept(tmp: Path) -> Path:
    """A tiny U-CFN kept sharded over 2 shards, saved as a folder: its layers replaced by their parts, as a fit with
    shards=2 and max_worker_bytes below the network's size leaves them (without starting Ray)."""
    model = CFN("user", (4,), 1, backend="numpy", seed=0).fit(TINY)
    net = model.fitted_.network
    layout = PartLayout.even(net.n_inputs, net.hidden, net.side_dim, 2)
    parts = split_layers(net.layers, layout.bounds)
    net.layers = ShardedLayers(layout, lambda rank: [layer.copy() for layer in parts[rank]])
    return model.save(tmp / "kept")


def _damaged_part(tmp: Path) -> object:
    part = _kept(tmp) / "network" / "shard-00001.npz"
    data = bytearray(part.read_bytes())
    data[-40] ^= 0xFF
    part.write_bytes(bytes(data))
    return CFN.load(tmp / "kept").predict_indices([0], [15])


def _other_parts(tmp: Path) -> object:
    manifest = _kept(tmp) / "network" / MANIFEST
    manifest.write_text(manifest.read_text().replace('"hidden": [\n  4\n ]', '"hidden": [\n  5\n ]'))
    return CFN.load(tmp / "kept")


def _kept_row(what: str, example: str, run: Callable[[Path], object], error: type, shown: str) -> Case:
    pattern = "re:" + re.escape(shown).replace(re.escape("<tmp>"), ".*")
    return Case(what, example, run, error, pattern, shown=shown.replace("<tmp>", ""), needs_tmp=True)


KEPT_CASES: list[Case] = [
    _kept_row("saved model kept sharded: a damaged shard part", 'CFN.load("kept").predict(...)', _damaged_part,
              PartStoreError, "<tmp>kept/network/shard-00001.npz does not match its SHA-256 in the manifest (damaged "
                              "or edited)"),
    _kept_row("saved model kept sharded: its model file loaded alone", 'CFN.load("kept/model.npz")',
              lambda tmp: CFN.load(_kept(tmp) / "model.npz"), ModelFileError,
              "<tmp>kept/model.npz is the model file of a network kept sharded: load the folder that holds it "
              "('<tmp>kept'), where its network's parts are"),
    _kept_row("saved model kept sharded: parts of another network", 'CFN.load("kept")', _other_parts,
              ModelFileError, "<tmp>kept: the network's parts (20 inputs, hidden (5,), 12 side features) do not match "
                              "its model file (20 inputs, hidden [4], 12 side features)"),
    _kept_row("encode on a model kept sharded", 'CFN.load("kept").encode()', lambda tmp: CFN.load(_kept(tmp)).encode(),
              NotGathered, "encode hands out codes of the whole network, but this model is kept sharded: its "
                           "network (20 inputs, hidden (4,), 1,888 bytes) is split over 2 shards because it exceeds "
                           "max_worker_bytes. Gather it first where it fits: model.gather() makes it an ordinary "
                           "model"),
    _kept_row("saving a model kept sharded over a file", 'CFN.load("kept").save("notes.txt")',
              lambda tmp: CFN.load(_kept(tmp)).save(_written(tmp / "notes.txt")), FileExistsError,
              "'<tmp>notes.txt' is a file; a model kept sharded saves as a folder: give a folder name"),
]


def _written(path: Path) -> Path:
    path.write_text("mine")
    return path


CASES: list[Case] = [
    _row("model file with an index out of range (re-hashed)", "index.npz", _set("input_indices", 3, 10**6),
         "input_indices must lie in [0, 20), found [1000000]"),
    _row("model file with a decreasing input_indptr (re-hashed)", "indptr.npz", _set("input_indptr", 2, 10**5),
         "input_indptr must never decrease, drops at position 3"),
    _row("unknown kind in a model file", "kind.npz",
         lambda arrays: with_config(arrays, lambda config: config.update(kind="both")),
         "config.kind must be 'item' or 'user', got 'both'"),
    _row("duplicate ids in a model file", "ids.npz", _set("user_ids", 1, 0),
         "user_ids must be sorted and unique, found a duplicate id at position 1 (0 then 0)"),
    _row("reversed scale in a model file", "scale.npz", _reversed_scale,
         "pre_scalars must start with the rating scale [1.0, 5.0] (low, high), got [5.0, 1.0]"),
    _row("model file whose layers do not match its data (re-hashed)", "layers.npz",
         lambda arrays: arrays.update(layer1_weight=arrays["layer1_weight"][:-1].copy()),
         "layer1_weight must have shape (20, 4), got (19, 4)"),
    _row("blend file with a negative weight (re-hashed)", "weight.npz", _set("blend_weights", 1, -0.25),
         "blend_weights must be >= 0 (a member's departure from the bias model is never reversed), found -0.25",
         blend=True),
    _row("blend file with a NaN bias offset (re-hashed)", "offset.npz", _set("blend_user_offset", 3, np.nan),
         "blend_user_offset holds NaN or infinite values", blend=True),
    _row("blend file whose member's layers do not match its data (re-hashed)", "member.npz", _bad_member_layer,
         "member 1 (entries member1_*): layer1_weight must have shape (150, 32), got (149, 32)", blend=True),
    _row("blend file with a factor penalty of 0 (re-hashed)", "penalty.npz", _set("blend_factor_scalars", (0, 1), 0.0),
         "blend_factor_scalars[0, 1] (the penalty of factor member 0) must be > 0, got 0", blend=True),
    _row("blend file with half of its factor member (re-hashed)", "factors.npz",
         lambda arrays: {name: value for name, value in arrays.items() if name != "blend_factor_weights"},
         "entry 'blend_factor_weights' is missing (the factor member's entries blend_user_factors, blend_item_factors, "
         "blend_factor_scalars, blend_factor_weights come together or not at all)", blend=True),
]
