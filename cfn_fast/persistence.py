"""Saving and loading fitted :class:`~cfn_fast.CFN` models: one versioned ``.npz`` file.

Layout (format version 1), every entry a plain numeric or fixed-width unicode array — no
pickles anywhere, and :func:`load_model` reads with ``np.load(allow_pickle=False)``:

=====================================  ===================================================
``cfn_format``                         ``"cfn_fast-model"`` (marks the file as ours)
``cfn_version``                        int, the format version
``config``                             one JSON string: parameters, resolved parameters,
                                       training backend, epochs, history, library version
``layer{k}_weight|bias|side_weight``   network parameters, canonical layout (float32)
``user_ids``, ``item_ids``             id maps (int or fixed-width unicode)
``train_user|item|rating``             the training ratings (indices, float32 ratings)
``input_data|indices|indptr``          the centred training input CSR fed to the network
``pre_sample_mean|sample_count``,      preprocessing statistics
``pre_scalars``                        ``[low, high, global_mean]`` (float64)
``side``                               side information the network uses (if any)
``user_features``, ``item_features``   the training set's side information (if any)
``user_feature_names`` ...             feature names (if any)
``checksum``                           SHA-256 over every other entry (name, dtype, shape, bytes)
=====================================  ===================================================

Files are written atomically: to a temporary file in the target directory, flushed and
fsynced, then moved over the target with ``os.replace``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .data.ratings import RatingSet
from .network import Layer
from .preprocessing import Preprocessing
from .trainer import EpochRecord

if TYPE_CHECKING:  # pragma: no cover
    from .model import CFN

__all__ = ["save_model", "load_model", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION"]

log = logging.getLogger("cfn_fast")

FORMAT_NAME = "cfn_fast-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, tampered with, of another format version, or not a
    cfn_fast model at all."""


# ----------------------------------------------------------------------------- save
def save_model(model: "CFN", path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (exactly that name) atomically; returns the path."""
    from . import __version__
    model._check_fitted()
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save the model: directory {str(directory)!r} does not exist")
    arrays = _model_arrays(model)
    config = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "library_version": __version__,
        "params": _jsonable(model.get_params()), "resolved": _jsonable(model.resolved_params()),
        "backend_trained": model.backend_, "epochs_trained": int(model.epochs_trained_),
        "best_epoch": getattr(model, "best_epoch_", None), "n_layers": len(model.layers_),
        "has_side": model.side_ is not None, "scale": [float(s) for s in model.train_.scale],
        "history": [_jsonable(r.as_dict()) for r in model.history_],
    }
    arrays["config"] = np.array([json.dumps(config, sort_keys=True)])
    arrays["cfn_format"] = np.array([FORMAT_NAME])
    arrays["cfn_version"] = np.array([FORMAT_VERSION], dtype=np.int64)
    for name, value in arrays.items():
        if value.dtype.kind not in "biufU":
            raise TypeError(f"internal error: model entry {name!r} has dtype {value.dtype}")  # pragma: no cover
    arrays["checksum"] = np.array([_checksum(arrays)])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _model_arrays(model: "CFN") -> dict[str, np.ndarray]:
    train, pre, inputs = model.train_, model.preprocessing_, model.inputs_
    arrays: dict[str, np.ndarray] = {}
    for k, layer in enumerate(model.layers_):
        arrays[f"layer{k}_weight"] = np.asarray(layer.weight, dtype=np.float32)
        arrays[f"layer{k}_bias"] = np.asarray(layer.bias, dtype=np.float32)
        if layer.side_weight is not None:
            arrays[f"layer{k}_side_weight"] = np.asarray(layer.side_weight, dtype=np.float32)
    arrays["user_ids"] = _id_array(train.user_ids)
    arrays["item_ids"] = _id_array(train.item_ids)
    arrays["train_user"] = np.asarray(train.user)
    arrays["train_item"] = np.asarray(train.item)
    arrays["train_rating"] = np.asarray(train.rating)
    arrays["input_data"] = inputs.data
    arrays["input_indices"] = inputs.indices
    arrays["input_indptr"] = inputs.indptr
    arrays["input_shape"] = np.array(inputs.shape, dtype=np.int64)
    arrays["pre_sample_mean"] = pre.sample_mean
    arrays["pre_sample_count"] = pre.sample_count
    arrays["pre_scalars"] = np.array([pre.low, pre.high, pre.global_mean], dtype=np.float64)
    if model.side_ is not None:
        arrays["side"] = model.side_
    for name in ("user_features", "item_features"):
        value = getattr(train, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    for name in ("user_feature_names", "item_feature_names"):
        value = getattr(train, name)
        if value is not None:
            arrays[name] = np.array([str(v) for v in value], dtype=str) if len(value) else np.zeros(0, dtype="<U1")
    return arrays


def _id_array(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind in "iuU":
        return ids
    return ids.astype(str)  # object or bytes ids become fixed-width unicode


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
def load_model(path: str | os.PathLike, backend: str | None = None) -> "CFN":
    """Read a model written by :func:`save_model`; see :meth:`cfn_fast.CFN.load`."""
    from . import __version__
    from .model import CFN

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path} is not a cfn_fast model file (a single .npy array, not an .npz)")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupted: cannot read it as an .npz file "
                             f"({type(exc).__name__}: {exc})") from None
    if "cfn_format" not in arrays or arrays["cfn_format"].dtype.kind != "U" \
            or arrays["cfn_format"].tolist() != [FORMAT_NAME]:
        raise ModelFileError(f"{path} is an .npz file but not a cfn_fast model (no 'cfn_format' entry)")
    version = arrays.get("cfn_version")
    version = int(version[0]) if version is not None and version.dtype.kind in "iu" and version.size == 1 else None
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has cfn_fast model format version {version}; this cfn_fast "
                             f"({__version__}) reads version {FORMAT_VERSION}")
    stored = arrays.get("checksum")
    if stored is None or stored.dtype.kind != "U" or stored.size != 1:
        raise ModelFileError(f"{path} has no checksum entry: not a complete cfn_fast model file")
    if str(stored[0]) != _checksum(arrays):
        raise ModelFileError(f"{path} failed its SHA-256 checksum: the file was modified or corrupted")
    try:
        config = json.loads(str(arrays["config"][0]))
        return _build_model(CFN, arrays, config, backend)
    except ModelFileError:
        raise
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is missing model data ({type(exc).__name__}: {exc})") from None


def _build_model(cls: type, arrays: dict[str, np.ndarray], config: dict, backend: str | None) -> "CFN":
    from .backends import BackendUnavailable, resolve_backend
    params = dict(config["params"])
    if isinstance(params.get("hidden"), list):
        params["hidden"] = tuple(params["hidden"])
    model = cls(**params)
    if backend is None:
        try:
            model.backend_ = resolve_backend(model.backend)
        except BackendUnavailable as exc:
            log.warning("%s; loading on backend 'auto' instead", exc)
            model.backend = "auto"
            model.backend_ = resolve_backend("auto")
    else:
        model.backend = backend
        model.backend_ = resolve_backend(backend)
    low, high, global_mean = (float(v) for v in arrays["pre_scalars"])
    names = {name: tuple(arrays[name].tolist()) if name in arrays else None
             for name in ("user_feature_names", "item_feature_names")}
    model.train_ = RatingSet(arrays["train_user"], arrays["train_item"], arrays["train_rating"],
                             arrays["user_ids"], arrays["item_ids"], (float(config["scale"][0]),
                                                                      float(config["scale"][1])),
                             arrays.get("user_features"), arrays.get("item_features"),
                             names["user_feature_names"], names["item_feature_names"])
    model.kind_ = model.kind if model.kind != "auto" else config["resolved"]["kind"]
    model.preprocessing_ = Preprocessing(model.kind_, low, high, arrays["pre_sample_mean"],
                                         arrays["pre_sample_count"], global_mean)
    model.inputs_ = sp.csr_matrix((arrays["input_data"], arrays["input_indices"], arrays["input_indptr"]),
                                  shape=tuple(int(s) for s in arrays["input_shape"]))
    model.side_ = arrays.get("side")
    model.layers_ = [Layer(arrays[f"layer{k}_weight"], arrays[f"layer{k}_bias"], arrays.get(f"layer{k}_side_weight"))
                     for k in range(int(config["n_layers"]))]
    model.history_ = [EpochRecord(**record) for record in config["history"]]
    model.epochs_trained_ = int(config["epochs_trained"])
    model.best_epoch_ = config.get("best_epoch")
    model._validation = None
    model._clear_caches()
    model.engine_ = model._make_engine([layer.copy() for layer in model.layers_], model.resolved_params())
    return model
