"""A model as plain data: the one conversion behind pickling and the model file.

A fitted :class:`~cfn_fast.CFN` is fully described by its constructor parameters, the canonical
float32 network parameters (``layers_``), the preprocessing statistics, the training ratings and
side information it holds, and its training record (history, epochs, best epoch, backend).  This
module turns a model into that description — named NumPy arrays plus a small dict of settings —
and back:

* :func:`fitted_arrays` / :func:`fitted_config` / :func:`restore_fitted` are used by
  :mod:`cfn_fast.persistence` (the ``.npz`` file format) and by pickling alike, so what travels
  to a worker is exactly what a saved file holds;
* :func:`pickle_state` / :func:`unpickle_state` implement ``CFN.__getstate__`` /
  ``__setstate__`` (``pickle``, ``cloudpickle``, ``copy.deepcopy``, joblib, Ray, Dask,
  ``multiprocessing``).

Never part of the state: the engine (compiled Cython objects, CUDA buffers), caches and locks.
The engine is rebuilt from ``layers_`` on first use, on the backend the model was fitted on when it
is available there, else on the best available one (with a warning): a model pickled on a GPU
machine runs on the CPU of a worker without one.

This module imports no estimator (the model imports it), which keeps the model, persistence and
recommendation modules free of import cycles.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ._concurrency import object_lock
from .data.ratings import RatingSet
from .network import Layer
from .preprocessing import Preprocessing
from .selection import KindChoice
from .trainer import EpochRecord

__all__ = ["STATE_VERSION", "TRANSIENT_ATTRIBUTES", "FITTED_ATTRIBUTES", "register_model_class", "model_class",
           "is_fitted", "fitted_arrays",
           "fitted_config", "restore_fitted", "pickle_state", "unpickle_state", "travel_backend", "PortableModel"]

log = logging.getLogger("cfn_fast")

#: Version of the pickled state layout (independent of the file format version).
STATE_VERSION = 1

#: Rebuilt on use, never pickled: the engine and the inference caches.
TRANSIENT_ATTRIBUTES = ("_engine", "engine_", "_codes", "_input_means", "_seen")

#: Attributes :func:`restore_fitted` sets from the arrays and the config.
FITTED_ATTRIBUTES = ("backend_", "train_", "preprocessing_", "inputs_", "side_", "layers_", "history_",
                     "epochs_trained_", "best_epoch_", "selection_")


def is_fitted(model: Any) -> bool:
    """True when ``model`` holds fitted parameters (``fit``, ``load`` or unpickling happened)."""
    return "layers_" in model.__dict__ and "train_" in model.__dict__


_MODEL_CLASSES: dict[str, type] = {}


def register_model_class(cls: type) -> type:
    """Class decorator: ``cls`` is what :func:`cfn_fast.persistence.load_model` builds from a file
    (the estimator registers itself, so that persistence never imports it)."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def model_class(name: str = "CFN") -> type:
    """The registered estimator class called ``name``."""
    try:
        return _MODEL_CLASSES[name]
    except KeyError:
        raise ValueError(f"no model class {name!r} is registered (import cfn_fast first)") from None


# ----------------------------------------------------------------------------- model -> data
def fitted_arrays(model: Any, *, portable: bool = True) -> dict[str, np.ndarray]:
    """The fitted model's arrays by name (layout of :mod:`cfn_fast.persistence`).

    ``portable=True`` (the file) turns object or bytes ids into fixed-width unicode so that no
    entry needs a pickle; ``portable=False`` (pickling) keeps the ids exactly as they are."""
    train, pre, inputs = model.train_, model.preprocessing_, model.inputs_
    arrays: dict[str, np.ndarray] = {}
    for k, layer in enumerate(model.layers_):
        arrays[f"layer{k}_weight"] = np.asarray(layer.weight, dtype=np.float32)
        arrays[f"layer{k}_bias"] = np.asarray(layer.bias, dtype=np.float32)
        if layer.side_weight is not None:
            arrays[f"layer{k}_side_weight"] = np.asarray(layer.side_weight, dtype=np.float32)
    arrays["user_ids"] = _id_array(train.user_ids) if portable else np.asarray(train.user_ids)
    arrays["item_ids"] = _id_array(train.item_ids) if portable else np.asarray(train.item_ids)
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
    if pre.input_offset is not None:  # centring="bias"
        arrays["pre_input_offset"] = pre.input_offset
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


def fitted_config(model: Any) -> dict[str, Any]:
    """The fitted model's settings beside the arrays: training backend, epochs, history."""
    return {
        "backend_trained": model.backend_, "kind": model.kind_, "epochs_trained": int(model.epochs_trained_),
        "best_epoch": getattr(model, "best_epoch_", None),
        "selection": None if getattr(model, "selection_", None) is None else model.selection_.as_dict(), "n_layers": len(model.layers_),
        "has_side": model.side_ is not None, "scale": [float(s) for s in model.train_.scale],
        "history": [record.as_dict() for record in model.history_],
    }


def _id_array(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind in "iuU":
        return ids
    return ids.astype(str)  # object or bytes ids become fixed-width unicode


# ----------------------------------------------------------------------------- data -> model
def restore_fitted(model: Any, arrays: dict[str, np.ndarray], config: dict[str, Any], backend: str) -> None:
    """Set ``model``'s fitted attributes from :func:`fitted_arrays` / :func:`fitted_config`; the
    engine is built on ``backend`` the first time the model needs it."""
    low, high, global_mean = (float(v) for v in arrays["pre_scalars"])
    names = {name: tuple(arrays[name].tolist()) if name in arrays else None
             for name in ("user_feature_names", "item_feature_names")}
    model.backend_ = backend
    model.train_ = RatingSet(arrays["train_user"], arrays["train_item"], arrays["train_rating"],
                             arrays["user_ids"], arrays["item_ids"],
                             (float(config["scale"][0]), float(config["scale"][1])),
                             arrays.get("user_features"), arrays.get("item_features"),
                             names["user_feature_names"], names["item_feature_names"])
    # the kind trained (kind="auto" resolved at fit); files of format 1 written before kind_ existed
    # hold an explicit kind in their parameters
    model.kind_ = config.get("kind") or (config.get("resolved") or {}).get("kind") or model.kind
    model.preprocessing_ = Preprocessing(model.kind_, low, high, arrays["pre_sample_mean"],
                                         arrays["pre_sample_count"], global_mean, arrays.get("pre_input_offset"))
    selection = config.get("selection")
    model.selection_ = None if selection is None else KindChoice(**selection)
    model.inputs_ = sp.csr_matrix((arrays["input_data"], arrays["input_indices"], arrays["input_indptr"]),
                                  shape=tuple(int(s) for s in arrays["input_shape"]))
    model.side_ = arrays.get("side")
    model.layers_ = [Layer(arrays[f"layer{k}_weight"], arrays[f"layer{k}_bias"], arrays.get(f"layer{k}_side_weight"))
                     for k in range(int(config["n_layers"]))]
    model.history_ = [EpochRecord(**record) for record in config["history"]]
    model.epochs_trained_ = int(config["epochs_trained"])
    model.best_epoch_ = config.get("best_epoch")
    for name in TRANSIENT_ATTRIBUTES:
        model.__dict__.pop(name, None)


def travel_backend(fitted_on: str, requested: str) -> str:
    """Where a travelling model runs: the backend it was fitted on when this machine has it, else
    its ``backend`` parameter resolved here, else ``"auto"`` — with a warning when it changes."""
    from .backends import BackendUnavailable, resolve_backend
    try:
        return resolve_backend(fitted_on)
    except (BackendUnavailable, ValueError) as exc:
        reason = str(exc)
    chosen = "numpy"  # always available
    for candidate in (requested, "auto"):
        try:
            chosen = resolve_backend(candidate)
            break
        except (BackendUnavailable, ValueError):
            continue
    log.warning("%s; this model was fitted on backend %r and now runs on %r", reason, fitted_on, chosen)
    return chosen


# ----------------------------------------------------------------------------- pickling
def pickle_state(model: Any) -> dict[str, Any]:
    """``__getstate__``: constructor parameters and any other plain attributes as they are, the
    fitted part through :func:`fitted_arrays` / :func:`fitted_config`; no engine, cache or lock."""
    skip = set(TRANSIENT_ATTRIBUTES)
    fitted = is_fitted(model)
    if fitted:
        skip.update(FITTED_ATTRIBUTES)
    state: dict[str, Any] = {
        "state_version": STATE_VERSION,
        "attributes": {name: value for name, value in model.__dict__.items() if name not in skip},
    }
    if fitted:
        state["arrays"] = fitted_arrays(model, portable=False)
        state["config"] = fitted_config(model)
    return state


def unpickle_state(model: Any, state: dict[str, Any], backend: str | None = None) -> None:
    """``__setstate__``: the inverse of :func:`pickle_state` (the engine is rebuilt lazily, on
    ``backend`` when given, else as :func:`travel_backend` decides)."""
    if not isinstance(state, dict) or state.get("state_version") != STATE_VERSION:
        found = state.get("state_version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"cannot unpickle a {type(model).__name__}: state version {found!r}, this cfn_fast "
                         f"reads version {STATE_VERSION} (pickles are for moving a model between processes "
                         f"of one installation; use save/load for storage)")
    model.__dict__.update(state["attributes"])
    if "arrays" in state:
        config = state["config"]
        if backend is None:
            backend = travel_backend(config["backend_trained"], model.__dict__.get("backend", "auto"))
        restore_fitted(model, state["arrays"], config, backend)


# ----------------------------------------------------------------------------- the estimator side
class PortableModel:
    """What makes an estimator travel and share across threads (mixed into :class:`~cfn_fast.CFN`):
    pickling through :func:`pickle_state`, ``engine_`` built lazily from ``layers_``, thread-safe
    lazy caches, and :meth:`to_backend`.  The estimator provides ``_make_engine(layers, params)``,
    ``resolved_params()`` and a ``backend`` parameter."""

    @property
    def engine_(self) -> Any:
        """The backend engine holding the network; built from ``layers_`` on first use after
        unpickling, ``load`` or :meth:`to_backend` (once, however many threads ask at once)."""
        engine = self.__dict__.get("_engine")
        if engine is None:
            if not is_fitted(self):
                raise AttributeError(f"engine_: this {type(self).__name__} model is not fitted yet")
            with object_lock(self):
                engine = self.__dict__.get("_engine")
                if engine is None:
                    engine = self._make_engine([layer.copy() for layer in self.layers_], self.resolved_params())
                    self._engine = engine
        return engine

    @engine_.setter
    def engine_(self, engine: Any) -> None:
        self._engine = engine

    def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """``self.<name>``, computed once under the model's lock (the inference caches)."""
        value = self.__dict__.get(name)
        if value is None:
            with object_lock(self):
                value = self.__dict__.get(name)
                if value is None:
                    value = compute()
                    self.__dict__[name] = value
        return value

    def __getstate__(self) -> dict[str, Any]:
        """Plain data only: pickle, cloudpickle, deepcopy, joblib, Ray and Dask ship the parameters,
        preprocessing, training data and settings; the engine is rebuilt on first use."""
        return pickle_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        unpickle_state(self, state)

    def to_backend(self, backend: str) -> Any:
        """A **new** model equal to this one that runs on ``backend`` (``"cpu"``, ``"cuda"``,
        ``"numpy"`` or ``"auto"``); this model is left as it is.  The copy predicts from the same
        canonical parameters (bit for bit what this model predicts when the backend is the same) and
        can go on training with ``partial_fit``.  Raises
        :class:`~cfn_fast.backends.BackendUnavailable` when the backend cannot run here."""
        from .backends import resolve_backend
        resolved = resolve_backend(backend)
        moved = type(self).__new__(type(self))
        unpickle_state(moved, copy.deepcopy(self.__getstate__()), backend=resolved)
        moved.backend = backend
        return moved
