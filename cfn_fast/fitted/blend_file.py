"""A blend's model file (format version 4) is untrusted input too: every entry is checked before anything is built.

A blend (``CFN(kind="blend")``) is stored as the training set once (the entries of every model file:
``train_user|item|rating``, the id maps, features and feature names), then each member network ``k`` under the
prefix ``member{k}_`` (``member{k}_layer0_weight``, ``member{k}_input_data``, ``member{k}_pre_scalars``, ...
exactly the entries of a one-network file), and the blend's own arrays ``blend_*`` (see
:mod:`cfn_fast.fitted.persistence`).  :func:`check_blend_file` checks:

* the settings (``config``): ``kind`` is ``"blend"``; the constructor parameters (``settings.resolve``); the
  training record; ``config.members``, one object per member with its ``kind``, ``n_layers``, ``has_side`` and
  constructor ``params``; ``config.blend_report`` an object;
* the entries: each one needed is there, and no other (no member beyond ``config.members``);
* the training set, as in a one-network file (:func:`cfn_fast.fitted.validation.check_training_set`);
* each member's entries as the file of that one network over the shared training set
  (:func:`cfn_fast.fitted.validation.check_arrays`: preprocessing recomputed, the input CSR, side information,
  the layers chained from the input dimension), and its parameters (kind, centring and hidden widths those of its
  network);
* the bias model: the scale, then the mean rating and the user and item offsets as
  :meth:`cfn_fast.preprocessing.BiasModel.fit` gives them on the training ratings with the file's shrinkage
  (finite, >= 0); the weights: one per member, finite, >= 0, and for a folded-in user (item) zero on the
  members that cannot fold one in (I-CFN for users, U-CFN for items);
* the factor member (:data:`~cfn_fast.fitted.state.FACTOR_ENTRIES`), when there is one: its four entries together
  or none of them; the user and item factors (n_users x rank, n_items x rank, one rank >= 1, finite); ``[reg, low,
  high]`` with reg finite and > 0 and low, high the rating scale; its weights ``[pairs, user, item]`` finite and >= 0
  (it folds in users and items alike).

Anything wrong raises :class:`~cfn_fast.fitted.validation.ModelFileError` with one line naming the file and the
entry; a member's problem names the member (``member 1: ...``) and the entry under its prefix.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .. import settings
from ..data.ratings import RatingSet
from ..preprocessing import BiasModel
from .state import FACTOR_ENTRIES
from .validation import (
    ID_FORMS,
    MAX_LAYERS,
    TRAINING_ENTRIES,
    InvalidEntry,
    ModelFileError,
    check_arrays,
    check_close,
    check_int,
    check_params,
    check_record,
    check_training_set,
    entry_array,
    parse_config,
)

__all__ = ["check_blend_file", "BLEND_ENTRIES", "MEMBER_FIELDS", "MAX_FILE_MEMBERS"]

#: The blend's own entries: the bias model's offsets, ``[low, high, mean, shrinkage]``, the weights.
BLEND_ENTRIES = ("blend_user_offset", "blend_item_offset", "blend_scalars", "blend_weights", "blend_fold_in_user",
                 "blend_fold_in_item")
#: The fields of each object of ``config.members``.
MEMBER_FIELDS = ("kind", "n_layers", "has_side", "params")
#: Most members a file may declare (a blend keeps a handful; the bound keeps a forged list from looping long).
MAX_FILE_MEMBERS = 1000
_MEMBER_ENTRY = re.compile(r"^member(\d+)_(.+)$")
_FILE_ENTRIES = ("cfn_format", "cfn_version", "checksum", "config")


def check_blend_file(arrays: dict[str, np.ndarray], version: int,
                     path: object) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, config)`` of a blend's file whose checksum matched, every entry checked (see the module notes),
    the arrays in the writer's dtypes; :class:`ModelFileError` naming ``path`` and the entry otherwise."""
    try:
        return _check(arrays, version)
    except InvalidEntry as exc:
        raise ModelFileError(f"{path} is not a valid cfn_fast model: {exc}") from None


def _check(arrays: dict[str, np.ndarray], version: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    config = parse_config(arrays)
    if config.get("kind") != settings.BLEND:
        raise InvalidEntry(f"config.kind must be 'blend' in a file of format version {version} (a blend), "
                           f"got {config.get('kind')!r}")
    members = _members(config)
    _entry_names(arrays, len(members))
    out: dict[str, np.ndarray] = {}
    train = check_training_set(arrays, config, out)
    shared = {name: value for name, value in arrays.items() if not _MEMBER_ENTRY.match(name)
              and name not in BLEND_ENTRIES + FACTOR_ENTRIES}
    for k, member in enumerate(members):
        prefix = f"member{k}_"
        view = {**shared, **{name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}}
        member_config = {**{name: member[name] for name in MEMBER_FIELDS}, "scale": config["scale"],
                         "backend_trained": config.get("backend_trained", "numpy"), "epochs_trained": 0,
                         "history": []}
        try:
            checked = check_arrays(view, member_config, version)
            _member_params(member_config, checked)
        except InvalidEntry as exc:
            raise InvalidEntry(f"member {k} (entries {prefix}*): {exc}") from None
        out.update({prefix + name: value for name, value in checked.items() if name not in out})
    _blend_arrays(arrays, train, members, out)
    _factor_arrays(arrays, train, out)
    check_params(config, settings.BLEND)
    check_record(config)
    if config.get("selection") is not None:
        raise InvalidEntry("config.selection must be null in a blend (its members are chosen by the weights)")
    if not isinstance(config.get("blend_report"), dict):
        raise InvalidEntry("config.blend_report must be a JSON object (how the weights were chosen)")
    return out, config


def _members(config: dict[str, Any]) -> list[dict[str, Any]]:
    """``config.members``: one object per member, with the fields :data:`MEMBER_FIELDS`."""
    members = config.get("members")
    if not isinstance(members, list) or len(members) > MAX_FILE_MEMBERS:
        raise InvalidEntry(f"config.members must be a list of at most {MAX_FILE_MEMBERS} member objects")
    for k, member in enumerate(members):
        if not isinstance(member, dict) or set(member) != set(MEMBER_FIELDS):
            raise InvalidEntry(f"config.members[{k}] must be an object with the fields {list(MEMBER_FIELDS)}")
        if member["kind"] not in settings.KINDS:
            raise InvalidEntry(f"config.members[{k}].kind must be 'item' or 'user', got {member['kind']!r}")
        check_int(f"config.members[{k}].n_layers", member["n_layers"], 2, MAX_LAYERS)
        if not isinstance(member["params"], dict):
            raise InvalidEntry(f"config.members[{k}].params must be a JSON object of the member's parameters")
    return members


def _entry_names(arrays: dict[str, np.ndarray], n_members: int) -> None:
    """The blend's entries and the training set's are there, no other entry but those of a declared member (whose
    own entries the check of the member names)."""
    for name in _FILE_ENTRIES + TRAINING_ENTRIES[:3] + BLEND_ENTRIES:
        if name not in arrays:
            raise InvalidEntry(f"entry {name!r} is missing")
    present = [name for name in FACTOR_ENTRIES if name in arrays]
    if present and len(present) < len(FACTOR_ENTRIES):
        missing = next(name for name in FACTOR_ENTRIES if name not in arrays)
        raise InvalidEntry(f"entry {missing!r} is missing (the factor member's entries {', '.join(FACTOR_ENTRIES)} "
                           f"come together or not at all)")
    known = set(_FILE_ENTRIES + TRAINING_ENTRIES + BLEND_ENTRIES + FACTOR_ENTRIES)
    known.update(entry for plain, text in ID_FORMS.values() for entry in plain + text)
    for name in arrays:
        match = _MEMBER_ENTRY.match(name)
        if match and int(match.group(1)) >= n_members:
            raise InvalidEntry(f"entry {name!r} is beyond config.members ({n_members} member(s))")
        if not match and name not in known:
            raise InvalidEntry(f"unknown entry {name!r}")


def _member_params(config: dict[str, Any], checked: dict[str, np.ndarray]) -> None:
    """A member's parameters describe its network: its kind, centring and hidden widths."""
    params = config["params"]
    resolved = check_params(config, config["kind"])
    centring = "bias" if "pre_input_offset" in checked else "sample"
    hidden = tuple(int(checked[f"layer{j}_weight"].shape[0]) for j in range(int(config["n_layers"]) - 1))
    for name, value, holds in (("kind", params.get("kind"), config["kind"]),
                               ("centring", params.get("centring"), centring),
                               ("hidden", resolved["hidden"], hidden)):
        if value != holds:
            raise InvalidEntry(f"config.params: {name} {value!r} does not match the network, which has {holds!r}")


def _floats(arrays: dict[str, np.ndarray], name: str, length: int) -> np.ndarray:
    """A finite floating-point vector of ``length``, as float64 (what the writer stores)."""
    value = entry_array(arrays, name, "f", (length,))
    if not np.all(np.isfinite(value)):
        raise InvalidEntry(f"{name} holds NaN or infinite values")
    return value.astype(np.float64)


def _blend_arrays(arrays: dict[str, np.ndarray], train: RatingSet, members: list[dict[str, Any]],
                  out: dict[str, np.ndarray]) -> None:
    """The bias model (recomputed from the training ratings with the file's shrinkage) and the weights."""
    scalars = _floats(arrays, "blend_scalars", 4)
    low, high, mean, shrinkage = (float(v) for v in scalars)
    if (low, high) != train.scale:
        raise InvalidEntry(f"blend_scalars must start with the rating scale {list(train.scale)} (low, high), "
                           f"got {[low, high]}")
    if shrinkage < 0:
        raise InvalidEntry(f"blend_scalars[3] (the bias model's shrinkage) must be >= 0, got {shrinkage:g}")
    user_offset = _floats(arrays, "blend_user_offset", train.n_users)
    item_offset = _floats(arrays, "blend_item_offset", train.n_items)
    with np.errstate(all="ignore"):   # a shrinkage of 0 leaves a user (item) without ratings at 0 / 0
        expected = BiasModel.fit(train, shrinkage)
    for name, stored, fitted in (("blend_scalars[2] (the mean rating)", mean, expected.mean),
                                 ("blend_user_offset", user_offset, expected.user_offset),
                                 ("blend_item_offset", item_offset, expected.item_offset)):
        if not np.all(np.isfinite(fitted)):
            raise InvalidEntry(f"{name}: the bias model of shrinkage {shrinkage:g} is undefined for users or "
                               f"items without ratings")
        check_close(name, stored, fitted)
    out["blend_scalars"], out["blend_user_offset"], out["blend_item_offset"] = scalars, user_offset, item_offset
    kinds = np.array([member["kind"] for member in members], dtype=object)
    for name, usable in (("blend_weights", None), ("blend_fold_in_user", "user"), ("blend_fold_in_item", "item")):
        weights = _floats(arrays, name, len(members))
        if (weights < 0).any():
            raise InvalidEntry(f"{name} must be >= 0 (a member's departure from the bias model is never reversed), "
                               f"found {float(weights[weights < 0][0]):g}")
        if usable is not None and np.any(weights[kinds != usable] != 0):
            raise InvalidEntry(f"{name} must be 0 for the members that cannot fold in a new {usable} (those of "
                               f"kind {'item' if usable == 'user' else 'user'!r})")
        out[name] = weights


def _factor_arrays(arrays: dict[str, np.ndarray], train: RatingSet, out: dict[str, np.ndarray]) -> None:
    """The factor members, when the file has them (:func:`_entry_names` saw their entries come together)."""
    if FACTOR_ENTRIES[0] not in arrays:
        return
    scalars = entry_array(arrays, "blend_factor_scalars", "f", (None, 4))
    if len(scalars) < 1 or not np.all(np.isfinite(scalars)):
        raise InvalidEntry(f"blend_factor_scalars must hold one finite row [rank, reg, low, high] per factor member, "
                           f"got shape {scalars.shape}")
    for j, (rank, reg, low, high) in enumerate(scalars):
        if not (rank >= 1 and rank == int(rank) and rank <= 1e6):
            raise InvalidEntry(f"blend_factor_scalars[{j}, 0] (the rank of factor member {j}) must be an integer "
                               f">= 1, got {rank:g}")
        if not reg > 0:
            raise InvalidEntry(f"blend_factor_scalars[{j}, 1] (the penalty of factor member {j}) must be > 0, "
                               f"got {reg:g}")
        if (float(low), float(high)) != train.scale:
            raise InvalidEntry(f"blend_factor_scalars[{j}, 2:] must be the rating scale {list(train.scale)} (low, "
                               f"high), got {[float(low), float(high)]}")
    columns = int(scalars[:, 0].sum())
    user = entry_array(arrays, "blend_user_factors", "f", (train.n_users, columns))
    item = entry_array(arrays, "blend_item_factors", "f", (train.n_items, columns))
    for name, value in (("blend_user_factors", user), ("blend_item_factors", item)):
        if not np.all(np.isfinite(value)):
            raise InvalidEntry(f"{name} holds NaN or infinite values")
        out[name] = value.astype(np.float64)
    weights = entry_array(arrays, "blend_factor_weights", "f", (len(scalars), 3))
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise InvalidEntry("blend_factor_weights must be finite and >= 0 (a factor member's departure from the bias "
                           "model is never reversed)")
    out["blend_factor_scalars"], out["blend_factor_weights"] = scalars.astype(np.float64), weights.astype(np.float64)
