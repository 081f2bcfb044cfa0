"""A model file is untrusted input: every entry is checked here before anything is built from it.

The SHA-256 in a model file detects accidental damage; it authenticates nothing (anyone who edits a file can
recompute it).  The kernels index their arrays with the file's indices without bounds checks, so one index out of
range or a decreasing ``input_indptr`` would crash the process or corrupt its memory.  :func:`check_model_file`
therefore checks every structure :func:`cfn_fast.fitted.state.fitted_from_arrays` will use:

* each entry's dtype, dimensions and length, and that no entry is missing or unknown;
* the id maps: sorted, unique (lookups are binary searches), integer ids non-negative;
* the training ratings: indices in range, finite ratings on the scale, no duplicate (user, item) pair;
* the scale (finite, low < high) and the preprocessing constants: what
  :meth:`cfn_fast.preprocessing.Preprocessing.fit` gives on the file's training ratings (means, counts, offsets,
  global mean), so reversed or edited constants are refused;
* the input CSR: its shape, ``input_indptr`` (starts at 0, never decreases, ends at the number of entries), its
  indices (in range) and values: the centred training ratings, entry for entry;
* side information and features (rows, finite values), the layers (shapes chained from the input dimension and
  back to it, side weights exactly where the model has side information, finite values);
* the settings (``config``): ``kind``, the constructor parameters (as :func:`cfn_fast.settings.resolve` checks
  them), the training record (epochs, history, best epoch, the ``kind="auto"`` choice).

Anything wrong raises :class:`ModelFileError` with one line naming the file and the entry.  The arrays come back in
the dtypes the writer uses, so the engines see exactly what a freshly trained model gives them.

A blend's file (format version 4) is checked by :mod:`cfn_fast.fitted.blend_file` with the public pieces here: the
training set once (:func:`check_training_set`), then each member as the file of that one network
(:func:`check_arrays`).
"""
from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any, NamedTuple

import numpy as np

from .. import settings
from ..backends import BACKENDS
from ..data.ratings import RatingSet
from ..preprocessing import Preprocessing, sample_axes
from ..training.selection import KindChoice
from ..training.trainer import EpochRecord
from .state import SHARDED_NETWORK_FOLDER, ids_of

__all__ = ["ModelFileError", "InvalidEntry", "check_model_file", "check_arrays", "check_training_set", "check_params",
           "check_record", "check_int", "check_close", "entry_array", "parse_config", "BASE_ENTRIES",
           "OPTIONAL_ENTRIES", "TRAINING_ENTRIES", "ID_FORMS"]

#: Entries of every model file (besides ``layer{k}_weight`` / ``layer{k}_bias``).
BASE_ENTRIES = ("cfn_format", "cfn_version", "checksum", "config", "train_user",
                "train_item", "train_rating", "input_data", "input_indices", "input_indptr", "input_shape",
                "pre_sample_mean", "pre_sample_count", "pre_scalars")
#: Entries a model file may hold (besides ``layer{k}_side_weight``).
OPTIONAL_ENTRIES = ("pre_input_offset", "side", "user_features", "item_features", "user_feature_names",
                    "item_feature_names")
#: The training set's entries (besides the id maps, :data:`ID_FORMS`): what a blend's members share.
TRAINING_ENTRIES = ("train_user", "train_item", "train_rating", "user_features", "item_features",
                    "user_feature_names", "item_feature_names")
#: The id maps: ``name`` (integers, or fixed-width text), or from format 3 ``name_utf8`` + ``name_offsets``
#: (:func:`cfn_fast.fitted.state.id_entries`), exactly one of the two forms.
ID_FORMS = {name: ((name,), (f"{name}_utf8", f"{name}_offsets")) for name in ("user_ids", "item_ids")}
_LAYER_ENTRY = re.compile(r"^layer(\d+)_(weight|bias|side_weight)$")
#: Most layers a file may declare (a CFN has a handful; the bound keeps a forged count from looping for ever).
MAX_LAYERS = 1000
#: Format version of the model file inside the saved folder of a network kept sharded (cfn_fast.fitted.sharded_file).
SHARDED_VERSION = 5
#: Largest epoch number accepted in the training record.
MAX_EPOCH = 10**9
#: How far the file's preprocessing constants and centred inputs may lie from a recomputation (unit scale).
_TOLERANCE = 1e-4


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, tampered with, inconsistent, of another format version, or not a
    cfn_fast model at all."""


class InvalidEntry(Exception):
    """One entry of the file is wrong: ``str(exc)`` names it and says how."""


def check_model_file(arrays: dict[str, np.ndarray], version: int,
                     path: object) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, config)`` of a file of one network whose checksum matched, every entry checked (see the module
    notes), the arrays in the writer's dtypes; :class:`ModelFileError` naming ``path`` and the entry otherwise.
    A blend's file (format version 4) is checked by :func:`cfn_fast.fitted.blend_file.check_blend_file`."""
    try:
        config = parse_config(arrays)
        return check_arrays(arrays, config, version), config
    except InvalidEntry as exc:
        raise ModelFileError(f"{path} is not a valid cfn_fast model: {exc}") from None


def check_arrays(arrays: dict[str, np.ndarray], config: dict[str, Any], version: int) -> dict[str, np.ndarray]:
    """The entries of one network's file (settings ``config``), checked, in the writer's dtypes; a blend checks
    each member's entries so, beside the training set they share."""
    kind = _kind(config)
    n_layers = check_int("config.n_layers", config.get("n_layers"), 2, MAX_LAYERS)
    sharded = config.get("sharded_network")     # layers kept sharded are in the folder of parts beside the file
    if sharded not in (None, SHARDED_NETWORK_FOLDER) or (sharded and version != SHARDED_VERSION):
        raise InvalidEntry(f"config.sharded_network must be {SHARDED_NETWORK_FOLDER!r} in a file of format "
                           f"version {SHARDED_VERSION}, got {sharded!r} in version {version}")
    _entry_names(arrays, 0 if sharded else n_layers)
    out: dict[str, np.ndarray] = {}
    train = _training_set(arrays, config, out)
    entries = _entries_in_csr_order(train, kind)
    pre = _preprocessing(arrays, version, train, kind, out)
    _inputs(arrays, train, pre, entries, out)
    n_samples, n_inputs = (int(n) for n in out["input_shape"])
    side_dim = _side(arrays, config, n_samples, out)
    _features(arrays, train, out)
    if not sharded:
        _layers(arrays, n_layers, n_inputs, side_dim, out)
    check_params(config, kind)
    check_record(config)
    _selection(config, kind, "bias" if "pre_input_offset" in out else "sample")
    return out


def check_training_set(arrays: dict[str, np.ndarray], config: dict[str, Any], out: dict[str, np.ndarray]) -> RatingSet:
    """The training set's entries (ids, ratings with no repeated pair, scale, side information and feature
    names), checked into ``out``; the training set."""
    train = _training_set(arrays, config, out)
    _entries_in_csr_order(train, "user")
    _features(arrays, train, out)
    return train


# ----------------------------------------------------------------------------- entries, arrays
def _entry_names(arrays: dict[str, np.ndarray], n_layers: int) -> None:
    """Every entry the file needs is there, and no other."""
    for name in BASE_ENTRIES + tuple(f"layer{k}_{part}" for k in range(n_layers) for part in ("weight", "bias")):
        if name not in arrays:
            raise InvalidEntry(f"entry {name!r} is missing")
    for name, (plain, text) in ID_FORMS.items():
        present = [form for form in (plain, text) if any(entry in arrays for entry in form)]
        if len(present) != 1 or not all(entry in arrays for entry in present[0]):
            raise InvalidEntry(f"{name} must be stored as the entry {plain[0]!r} or as the pair {text[0]!r} and "
                               f"{text[1]!r}, exactly one of the two")
    id_entries = {entry for plain, text in ID_FORMS.values() for entry in plain + text}
    for name in arrays:
        match = _LAYER_ENTRY.match(name)
        if match and int(match.group(1)) >= n_layers:
            raise InvalidEntry(f"entry {name!r} is beyond config.n_layers ({n_layers})")
        if not match and name not in BASE_ENTRIES + OPTIONAL_ENTRIES and name not in id_entries:
            raise InvalidEntry(f"unknown entry {name!r}")


_KIND_NAMES = {"f": "floating-point", "iu": "integer", "iuU": "integer or string", "U": "string"}


def entry_array(arrays: dict[str, np.ndarray], name: str, kinds: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Entry ``name``: its dtype kind one of ``kinds``, its shape ``shape`` (``None``: any length)."""
    value = arrays.get(name)
    if value is None:
        raise InvalidEntry(f"entry {name!r} is missing")
    if value.dtype.kind not in kinds:
        raise InvalidEntry(f"{name} must hold {_KIND_NAMES[kinds]} values, got dtype {value.dtype}")
    if value.ndim != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise InvalidEntry(f"{name} must have shape {expected}, got {value.shape}")
    return value


def _finite(name: str, value: np.ndarray) -> None:
    if not np.all(np.isfinite(value)):
        raise InvalidEntry(f"{name} holds NaN or infinite values")


def _indices(name: str, value: np.ndarray, n: int) -> np.ndarray:
    """An integer index array with every entry in ``[0, n)``, as int64."""
    if value.size and (value.min() < 0 or value.max() >= n):
        bad = value[(value < 0) | (value >= n)]
        raise InvalidEntry(f"{name} must lie in [0, {n}), found {bad[:3].tolist()}")
    return value.astype(np.int64)


def _floats(arrays: dict[str, np.ndarray], name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A finite floating-point entry of ``shape``, as float32 (what the writer stores)."""
    value = entry_array(arrays, name, "f", shape)
    _finite(name, value)
    return value.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- settings
def parse_config(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    raw = arrays.get("config")
    if raw is None or raw.dtype.kind != "U" or raw.shape != (1,):
        raise InvalidEntry("entry 'config' must be one JSON string")
    try:
        config = json.loads(str(raw[0]))
    except (ValueError, RecursionError) as exc:
        raise InvalidEntry(f"config is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise InvalidEntry(f"config must be a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("params"), dict):
        raise InvalidEntry("config.params must be a JSON object of the model's parameters")
    for name in ("resolved", "selection"):
        if config.get(name) is not None and not isinstance(config[name], dict):
            raise InvalidEntry(f"config.{name} must be a JSON object or null")
    return config


def _kind(config: dict[str, Any]) -> str:
    """The kind trained: recorded since format 1's later releases; else the resolved or given parameter."""
    kind = config.get("kind") or (config.get("resolved") or {}).get("kind") or config["params"].get("kind")
    if not isinstance(kind, str) or kind not in settings.KINDS:
        raise InvalidEntry(f"config.kind must be 'item' or 'user', got {kind!r}")
    return kind


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if not settings.is_int(value) or not low <= value <= high:
        raise InvalidEntry(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _number(name: str, value: Any, *, finite: bool = True, none: bool = False) -> None:
    if value is None and none:
        return
    if not settings.is_real(value) or (finite and not settings.is_finite(value)):
        raise InvalidEntry(f"{name} must be a {'finite ' if finite else ''}number{' or null' if none else ''}, "
                           f"got {value!r}")


def check_params(config: dict[str, Any], kind: str, name: str = "config.params") -> dict[str, Any]:
    """The constructor parameters ``name`` (``config["params"]``) of a ``kind`` model (a network's, or
    ``"blend"``): known names, values the estimator accepts (``settings.resolve``); resolved."""
    params = config["params"]
    unknown = sorted(set(params) - set(settings.SETTING_NAMES))
    if unknown:
        raise InvalidEntry(f"{name} has unknown parameter(s) {unknown}")
    if (params.get("kind") == settings.BLEND) != (kind == settings.BLEND):
        raise InvalidEntry(f"{name}: kind {params.get('kind')!r} does not fit the {kind!r} model the file holds")
    try:
        resolved = settings.resolve(params, None if kind == settings.BLEND else kind)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidEntry(f"{name}: {exc}") from None
    backend = params.get("backend", "auto")
    if backend not in ("auto", *BACKENDS):
        raise InvalidEntry(f"{name}: backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if config.get("backend_trained", "numpy") not in BACKENDS:
        raise InvalidEntry(f"config.backend_trained must be one of {BACKENDS}, got {config['backend_trained']!r}")
    return resolved


def check_record(config: dict[str, Any]) -> None:
    """The training record: epochs trained, one well-formed EpochRecord per epoch, the best epoch."""
    trained = check_int("config.epochs_trained", config.get("epochs_trained"), 0, MAX_EPOCH)
    history = config.get("history")
    if not isinstance(history, list):
        raise InvalidEntry("config.history must be a list of epoch records")
    previous = 0
    for k, record in enumerate(history):
        epoch = _epoch_record(f"config.history[{k}]", record)
        if not previous < epoch <= trained:
            raise InvalidEntry(f"config.history[{k}].epoch must lie in ({previous}, {trained}] (epochs increase up to "
                               f"config.epochs_trained), got {epoch}")
        previous = epoch
    if config.get("best_epoch") is not None:
        check_int("config.best_epoch", config["best_epoch"], 1, max(trained, 1))


_RECORD_FIELDS = {f.name for f in fields(EpochRecord)}


def _epoch_record(name: str, record: Any) -> int:
    if not isinstance(record, dict) or not {"epoch", "lr", "train_loss", "seconds"} <= set(record) <= _RECORD_FIELDS:
        raise InvalidEntry(f"{name} must be an object with the fields {sorted(_RECORD_FIELDS)}")
    _number(f"{name}.lr", record["lr"])
    _number(f"{name}.train_loss", record["train_loss"], finite=False)
    _number(f"{name}.seconds", record["seconds"], finite=False)
    _number(f"{name}.validation_rmse", record.get("validation_rmse"), finite=False, none=True)
    if not isinstance(record.get("extra", {}), dict):
        raise InvalidEntry(f"{name}.extra must be an object")
    return check_int(f"{name}.epoch", record["epoch"], 1, MAX_EPOCH)


def _selection(config: dict[str, Any], kind: str, centring: str) -> None:
    """What ``kind="auto"`` chose, when recorded: the kind and centring the file's network has."""
    selection = config.get("selection")
    if selection is None:
        return
    names = {f.name for f in fields(KindChoice)}
    if not {"kind", "centring", "how"} <= set(selection) <= names:
        raise InvalidEntry(f"config.selection must be an object with the fields {sorted(names)}")
    if selection["kind"] != kind or selection["centring"] != centring:
        raise InvalidEntry(f"config.selection chose {selection['kind']!r} / {selection['centring']!r}, but the file "
                       f"holds a {kind!r} network with the {centring!r} centring")
    if not isinstance(selection["how"], str):
        raise InvalidEntry("config.selection.how must be a string")
    scores = selection.get("validation_rmse", {})
    if not isinstance(scores, dict):
        raise InvalidEntry("config.selection.validation_rmse must be an object")
    for key, value in scores.items():
        _number(f"config.selection.validation_rmse[{key!r}]", value, finite=False)
    _number("config.selection.seconds", selection.get("seconds", 0.0))


# ----------------------------------------------------------------------------- training set
def _scale(config: dict[str, Any]) -> tuple[float, float]:
    scale = config.get("scale")
    if not (isinstance(scale, list) and len(scale) == 2 and all(settings.is_real(s) and settings.is_finite(s)
                                                                  for s in scale)):
        raise InvalidEntry(f"config.scale must be [low, high], two finite numbers, got {scale!r}")
    low, high = float(scale[0]), float(scale[1])
    if not low < high:
        raise InvalidEntry(f"config.scale must have low < high, got {scale!r}")
    return low, high


def _ids(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """An id map: sorted and unique (ids are found by binary search), integers non-negative."""
    if f"{name}_utf8" in arrays:
        try:
            ids = ids_of(arrays, name)
        except ValueError as exc:
            raise InvalidEntry(str(exc)) from None
    else:
        ids = entry_array(arrays, name, "iuU", (None,))
    if ids.size == 0:
        raise InvalidEntry(f"{name} is empty")
    if ids.dtype.kind in "iu" and ids.min() < 0:
        raise InvalidEntry(f"{name} must be non-negative, found {int(ids.min())}")
    wrong = np.flatnonzero(~(ids[1:] > ids[:-1]))
    if wrong.size:
        at = int(wrong[0])
        problem = "a duplicate id" if ids[at] == ids[at + 1] else "ids out of order"
        raise InvalidEntry(f"{name} must be sorted and unique, found {problem} at position {at + 1} "
                       f"({ids[at].item()!r} then {ids[at + 1].item()!r})")
    return ids


def _training_set(arrays: dict[str, np.ndarray], config: dict[str, Any], out: dict[str, np.ndarray]) -> RatingSet:
    low, high = _scale(config)
    out["user_ids"], out["item_ids"] = _ids(arrays, "user_ids"), _ids(arrays, "item_ids")
    rating = _floats(arrays, "train_rating", (None,))
    if rating.size == 0:
        raise InvalidEntry("train_rating is empty: a model is trained on at least one rating")
    outside = (rating < low) | (rating > high)
    if outside.any():
        raise InvalidEntry(f"train_rating has values outside the scale [{low:g}, {high:g}], e.g. "
                       f"{float(rating[outside][0]):g}")
    user = _indices("train_user", entry_array(arrays, "train_user", "iu", (len(rating),)), len(out["user_ids"]))
    item = _indices("train_item", entry_array(arrays, "train_item", "iu", (len(rating),)), len(out["item_ids"]))
    out["train_user"], out["train_item"], out["train_rating"] = user.astype(np.int32), item.astype(np.int32), rating
    return RatingSet(out["train_user"], out["train_item"], rating, out["user_ids"], out["item_ids"], (low, high))


class _Entries(NamedTuple):
    """The training ratings in the input CSR's order (by sample, then input): ``order`` permutes the ratings,
    ``key`` is ``sample * n_inputs + input`` in that order."""

    samples: np.ndarray
    inputs: np.ndarray
    order: np.ndarray
    key: np.ndarray


def _entries_in_csr_order(train: RatingSet, kind: str) -> _Entries:
    """One sort of the ratings, which also finds a repeated (user, item) pair."""
    samples, inputs, _, n_inputs = sample_axes(kind, train)
    key = samples.astype(np.int64) * n_inputs + inputs
    order = np.argsort(key, kind="stable")
    key = key[order]
    repeated = np.flatnonzero(key[1:] == key[:-1])
    if repeated.size:
        at = order[repeated[0]]
        raise InvalidEntry(f"train_user / train_item repeat the (user, item) index pair "
                       f"({int(train.user[at])}, {int(train.item[at])})")
    return _Entries(samples[order], inputs[order], order, key)


# ----------------------------------------------------------------------------- preprocessing, inputs
def _preprocessing(arrays: dict[str, np.ndarray], version: int, train: RatingSet, kind: str,
                   out: dict[str, np.ndarray]) -> Preprocessing:
    """The file's constants, which must be those :meth:`Preprocessing.fit` gives on the training ratings."""
    _, _, n_samples, n_inputs = sample_axes(kind, train)
    scalars = entry_array(arrays, "pre_scalars", "f", (3,)).astype(np.float64)
    _finite("pre_scalars", scalars)
    if (scalars[0], scalars[1]) != train.scale:
        raise InvalidEntry(f"pre_scalars must start with the rating scale {list(train.scale)} (low, high), "
                       f"got {scalars[:2].tolist()}")
    offset = "pre_input_offset" in arrays
    if offset and version < 2:
        raise InvalidEntry("pre_input_offset (the 'bias' centring) needs format version 2, the file says 1")
    expected = Preprocessing.fit(kind, train, "bias" if offset else "sample")
    out["pre_scalars"] = scalars
    out["pre_sample_mean"] = _floats(arrays, "pre_sample_mean", (n_samples,))
    counts = entry_array(arrays, "pre_sample_count", "iu", (n_samples,))
    if not np.array_equal(counts, expected.sample_count):
        raise InvalidEntry("pre_sample_count does not match the training ratings' count per sample")
    out["pre_sample_count"] = counts.astype(np.int64)
    check_close("pre_scalars[2] (the global mean)", scalars[2], expected.global_mean)
    check_close("pre_sample_mean", out["pre_sample_mean"], expected.sample_mean)
    if offset:
        out["pre_input_offset"] = _floats(arrays, "pre_input_offset", (n_inputs,))
        check_close("pre_input_offset", out["pre_input_offset"], expected.input_offset)
    return Preprocessing(kind, train.scale[0], train.scale[1], out["pre_sample_mean"], out["pre_sample_count"],
                         float(scalars[2]), out.get("pre_input_offset"))


def check_close(name: str, stored: Any, expected: Any) -> None:
    difference = np.abs(np.asarray(stored, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    if difference.size and difference.max() > _TOLERANCE:
        raise InvalidEntry(f"{name} does not match the training ratings (differs by up to {difference.max():.3g})")


def _inputs(arrays: dict[str, np.ndarray], train: RatingSet, pre: Preprocessing, entries: _Entries,
            out: dict[str, np.ndarray]) -> None:
    """The samples x inputs CSR: at the training ratings' positions, their values centred by ``pre``."""
    _, _, n_samples, n_inputs = sample_axes(pre.kind, train)
    shape = entry_array(arrays, "input_shape", "iu", (2,))
    if tuple(shape.tolist()) != (n_samples, n_inputs):
        raise InvalidEntry(f"input_shape must be {[n_samples, n_inputs]} (samples x inputs), got {shape.tolist()}")
    nnz = train.nnz
    indptr = entry_array(arrays, "input_indptr", "iu", (n_samples + 1,)).astype(np.int64)
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise InvalidEntry(f"input_indptr must start at 0 and end at {nnz} (the number of ratings), "
                       f"got {int(indptr[0])} .. {int(indptr[-1])}")
    counts = np.diff(indptr)
    if (counts < 0).any():
        raise InvalidEntry(f"input_indptr must never decrease, drops at position {int(np.argmax(counts < 0)) + 1}")
    if not np.array_equal(counts, pre.sample_count):
        raise InvalidEntry("input_indptr does not match the training ratings' count per sample")
    indices = _indices("input_indices", entry_array(arrays, "input_indices", "iu", (nnz,)), n_inputs)
    if not np.array_equal(np.repeat(np.arange(n_samples, dtype=np.int64), counts) * n_inputs + indices, entries.key):
        raise InvalidEntry("input_indices do not match the training ratings' positions")
    data = _floats(arrays, "input_data", (nnz,))
    expected = pre.centre(pre.to_unit(train.rating[entries.order]), pre.sample_mean[entries.samples], entries.inputs)
    check_close("input_data", data, expected)
    out["input_shape"] = np.array((n_samples, n_inputs), dtype=np.int64)
    out["input_indptr"], out["input_indices"], out["input_data"] = indptr, indices, data


# ----------------------------------------------------------------------------- side information, layers
def _side(arrays: dict[str, np.ndarray], config: dict[str, Any], n_samples: int, out: dict[str, np.ndarray]) -> int:
    """The samples' side information (``config.has_side`` says whether there is some); its width."""
    has_side = config.get("has_side")
    if not isinstance(has_side, bool) or has_side != ("side" in arrays):
        raise InvalidEntry(f"config.has_side ({has_side!r}) must be true exactly when the entry 'side' is present")
    if not has_side:
        return 0
    out["side"] = _floats(arrays, "side", (n_samples, None))
    if out["side"].shape[1] == 0:
        raise InvalidEntry("side has no columns (a model with side information has at least one feature)")
    return int(out["side"].shape[1])


def _features(arrays: dict[str, np.ndarray], train: RatingSet, out: dict[str, np.ndarray]) -> None:
    """The training set's side information and feature names (kept for fold-in and the command line)."""
    for side, n in (("user", train.n_users), ("item", train.n_items)):
        width = None
        if f"{side}_features" in arrays:
            out[f"{side}_features"] = _floats(arrays, f"{side}_features", (n, None))
            width = out[f"{side}_features"].shape[1]
        if f"{side}_feature_names" in arrays:
            out[f"{side}_feature_names"] = entry_array(arrays, f"{side}_feature_names", "U", (width,))


def _layers(arrays: dict[str, np.ndarray], n_layers: int, n_inputs: int, side_dim: int,
            out: dict[str, np.ndarray]) -> None:
    """Weights chained from the input dimension back to it, side weights exactly with side information."""
    fan_in = n_inputs
    for k in range(n_layers):
        last = k == n_layers - 1
        weight = _floats(arrays, f"layer{k}_weight", (n_inputs if last else None, fan_in))
        fan_out = int(weight.shape[0])
        if fan_out < 1:
            raise InvalidEntry(f"layer{k}_weight has no units (shape {weight.shape})")
        out[f"layer{k}_weight"] = weight
        out[f"layer{k}_bias"] = _floats(arrays, f"layer{k}_bias", (fan_out,))
        name = f"layer{k}_side_weight"
        if side_dim:
            if name not in arrays:
                raise InvalidEntry(f"entry {name!r} is missing (the model has {side_dim} side features)")
            out[name] = _floats(arrays, name, (fan_out, side_dim))
        elif name in arrays:
            raise InvalidEntry(f"entry {name!r} is present but the model has no side information")
        fan_in = fan_out
