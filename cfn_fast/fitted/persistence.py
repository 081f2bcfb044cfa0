"""Saving and loading fitted :class:`~cfn_fast.CFN` models: one versioned ``.npz`` file.

Layout of a file of one network (format version 3; version 2 has no ``*_ids_utf8``, version 1 also no
``pre_input_offset``; a file is written with the lowest version that holds it, so that older releases read it),
every entry a plain numeric or fixed-width unicode array — no pickles anywhere, and :func:`read_model` reads with
``np.load(allow_pickle=False)``:

=====================================  ===================================================
``cfn_format``                         ``"cfn_fast-model"`` (marks the file as ours)
``cfn_version``                        int, the format version
``config``                             one JSON string: parameters, resolved parameters,
                                       training backend, epochs, history, library version
``layer{k}_weight|bias|side_weight``   network parameters, canonical layout (float32)
``user_ids``, ``item_ids``             id maps: integers (int64 / uint64, exact), or strings as
                                       fixed-width unicode when that is exact and compact,
                                       else (version 3) ``user_ids_utf8`` / ``item_ids_utf8``
                                       (UTF-8 bytes) with ``..._offsets`` (int64)
``train_user|item|rating``             the training ratings (indices, float32 ratings)
``input_data|indices|indptr``          the centred training input CSR fed to the network
``pre_sample_mean|sample_count``,      preprocessing statistics
``pre_scalars``                        ``[low, high, global_mean]`` (float64)
``pre_input_offset``                   per-input offsets of ``centring="bias"`` (version 2 and later)
``side``                               side information the network uses (if any)
``user_features``, ``item_features``   the training set's side information (if any)
``user_feature_names`` ...             feature names (if any)
``checksum``                           SHA-256 over every other entry (name, dtype, shape, bytes)
=====================================  ===================================================

A blend (``CFN(kind="blend")``, the default) is format version 4: the entries above that do not belong to one
network (``cfn_format``, ``cfn_version``, ``config``, the id maps, ``train_*``, features, feature names,
``checksum``), then for each member network ``k`` (``config.members[k]``: its ``kind``, ``n_layers``,
``has_side`` and constructor ``params``) the entries of one network under the prefix ``member{k}_``, and the
blend's own (a blend of the bias model alone has no member):

=====================================  ===================================================
``member{k}_layer{j}_weight`` ...      member ``k``'s layers, ``..._input_data|indices|indptr|
                                       shape``, ``..._pre_*`` and ``..._side``, as above
``blend_user_offset``                  the bias model's user offsets (n_users, float64)
``blend_item_offset``                  the bias model's item offsets (n_items, float64)
``blend_scalars``                      ``[low, high, mean, shrinkage]`` of the bias model (float64)
``blend_weights``                      one weight >= 0 per member (float64)
``blend_fold_in_user|item``            the weights for a folded-in user (item), per member
``blend_user_factors``                 the factor member's user factors (n_users x rank, float64)
``blend_item_factors``                 its item factors (n_items x rank, float64)
``blend_factor_scalars``               ``[reg, low, high]``: its penalty and the rating scale (float64)
``blend_factor_weights``               its weights ``[pairs, user, item]`` (float64, >= 0)
=====================================  ===================================================

The four ``blend_*factor*`` entries hold the matrix-factorisation member
(:class:`~cfn_fast.training.factors.Factors`) and come together or not at all: a blend whose factor member earned
no weight has none of them.

``config`` then has ``"kind": "blend"``, ``members`` and ``blend_report`` (how the weights were chosen) in place
of ``n_layers`` and ``has_side``.  Such a file is checked by :mod:`cfn_fast.fitted.blend_file`.

What the checksum does: it detects damage (a truncated download, a flipped bit, an edit by hand that
forgot to re-hash).  What it does not do: authenticate the file; anyone can edit a file and recompute it.
So a file is untrusted input: :func:`read_model` checks every entry (:mod:`cfn_fast.fitted.validation`)
before anything is built from it, and refuses an inconsistent file with :class:`ModelFileError`; loading
never executes code from the file nor lets its content crash the process.  Load files you trust all the
same: a well-formed file can still hold a network that predicts whatever its author wanted.

Files are written atomically through :func:`cfn_fast.fileio.atomic_write`: to a temporary file in
the target directory, flushed and fsynced, then moved over the target with ``os.replace``.  A new
file's mode follows the umask, an overwritten file keeps its mode, and temporary files are removed
on errors, interrupts, SIGTERM and (left by a killed process) at the next save to the same target.

A network kept sharded (too large for one process, :mod:`cfn_fast.sharding.parts`) is saved as a folder: a
model file of format version 5 (the entries above but the layers) beside a folder of the network's parts, see
:mod:`cfn_fast.fitted.sharded_file`; :func:`read_model` takes that folder.

This file is *the* storage format.  Pickling a model (``pickle``, ``joblib``, Ray, Dask) is for
moving it between processes of one installation; both go through :mod:`cfn_fast.fitted.state`, so a
file and a pickle hold the same data, but only this format is versioned, checksummed and free of
pickles — never store a model as a pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write, check_input_file
from ..version import __version__
from .blend_file import check_blend_file
from .sharded_file import is_model_folder, read_folder, save_folder
from .state import fitted_arrays, fitted_config, fitted_from_arrays
from .validation import SHARDED_VERSION, ModelFileError, check_model_file
from .value import Fitted

__all__ = ["save_model", "read_model", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION", "BLEND_VERSION",
           "READABLE_VERSIONS"]

FORMAT_NAME = "cfn_fast-model"
#: The newest format version this release writes.
FORMAT_VERSION = SHARDED_VERSION
#: The version of a blend's files (``CFN(kind="blend")``); a file of one network says 1, 2 or 3.
BLEND_VERSION = 4
#: Versions this release reads.
READABLE_VERSIONS = (1, 2, 3, 4, SHARDED_VERSION)


# ----------------------------------------------------------------------------- save
def save_model(path: str | os.PathLike, fitted: Fitted, backend: str, params: dict[str, Any],
               resolved: dict[str, Any]) -> Path:
    """Write the fitted value (with the estimator's ``params`` and ``resolved`` settings) to ``path``
    (exactly that name) atomically; returns the path."""
    path = Path(path)
    kept = fitted.blend is None and fitted.network.kept_sharded
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save the model: directory {str(directory)!r} does not exist")
    arrays = fitted_arrays(fitted, portable=True)
    # a file an older release can read correctly says version 1; one with input offsets it would
    # misread says 2, one with string ids as UTF-8 bytes says 3, a blend says 4: such a release refuses them
    version = BLEND_VERSION if fitted.blend is not None else SHARDED_VERSION if kept \
        else 3 if any(name.endswith("_ids_utf8") for name in arrays) else 2 if "pre_input_offset" in arrays else 1
    config = {
        "format": FORMAT_NAME, "version": version, "library_version": __version__,
        "params": _jsonable(params), "resolved": _jsonable(resolved),
        **_jsonable(fitted_config(fitted, backend)),
    }
    arrays["config"] = np.array([json.dumps(config, sort_keys=True)])
    arrays["cfn_format"] = np.array([FORMAT_NAME])
    arrays["cfn_version"] = np.array([version], dtype=np.int64)
    for name, value in arrays.items():
        if value.dtype.kind not in "biufU":
            raise TypeError(f"internal error: model entry {name!r} has dtype {value.dtype}")  # pragma: no cover
    arrays["checksum"] = np.array([_checksum(arrays)])

    def write(target: Path) -> Path:
        with atomic_write(target) as fh:
            np.savez(fh, **arrays)
        return target

    # a network kept sharded saves as a folder: the model file beside the network's parts
    return save_folder(path, fitted.network.layers, write) if kept else write(path)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{value.dtype.str}\0{value.shape}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ----------------------------------------------------------------------------- load
def read_model(path: str | os.PathLike) -> tuple[dict[str, Any], Fitted, dict[str, Any]]:
    """``(constructor parameters, fitted value, config)`` of a file (or, for a network kept sharded, the folder)
    written by :func:`save_model`; :class:`ModelFileError` for anything that is not a readable, intact model."""
    if is_model_folder(Path(path)):
        return read_folder(path, lambda file: _read_file(file, in_folder=True))
    return _read_file(path)


def _read_file(path: str | os.PathLike, in_folder: bool = False) -> tuple[dict[str, Any], Fitted, dict[str, Any]]:
    path = check_input_file(path, "model file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path} is not a cfn_fast model file (a single .npy array, not an .npz)")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, MemoryError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupted: cannot read it as an .npz file "
                             f"({type(exc).__name__}: {exc})") from None
    if "cfn_format" not in arrays or arrays["cfn_format"].dtype.kind != "U" \
            or arrays["cfn_format"].tolist() != [FORMAT_NAME]:
        raise ModelFileError(f"{path} is an .npz file but not a cfn_fast model (no 'cfn_format' entry)")
    version = arrays.get("cfn_version")
    version = int(version[0]) if version is not None and version.dtype.kind in "iu" and version.shape == (1,) else None
    if version not in READABLE_VERSIONS:
        raise ModelFileError(f"{path} has cfn_fast model format version {version}; this cfn_fast "
                             f"({__version__}) reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    if version == SHARDED_VERSION and not in_folder:
        raise ModelFileError(f"{path} is the model file of a network kept sharded: load the folder that holds it "
                             f"({str(path.parent)!r}), where its network's parts are")
    stored = arrays.get("checksum")
    if stored is None or stored.dtype.kind != "U" or stored.size != 1:
        raise ModelFileError(f"{path} has no checksum entry: not a complete cfn_fast model file")
    if str(stored[0]) != _checksum(arrays):
        raise ModelFileError(f"{path} failed its SHA-256 checksum: the file was modified or corrupted")
    check = check_blend_file if version == BLEND_VERSION else check_model_file
    checked, config = check(arrays, version, path)
    params = dict(config["params"])
    if isinstance(params.get("hidden"), list):
        params["hidden"] = tuple(params["hidden"])
    try:
        return params, fitted_from_arrays(checked, config, params.get("kind")), config
    except ModelFileError:
        raise
    except ValueError as exc:   # e.g. string ids that are not UTF-8 (fitted.state.ids_of)
        raise ModelFileError(f"{path} holds invalid model data: {exc}") from None
