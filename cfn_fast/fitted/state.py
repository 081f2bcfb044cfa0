"""A fitted model as plain data: the one conversion behind pickling and the model file.

A fitted :class:`~cfn_fast.CFN` is fully described by its constructor parameters and its
:class:`~cfn_fast.fitted.value.Fitted` value (canonical float32 layers, preprocessing statistics, the
training ratings and side information, the training record).  This module turns the value into named
NumPy arrays plus a small dict of settings and back:

* :func:`fitted_arrays` / :func:`fitted_config` / :func:`fitted_from_arrays` are used by
  :mod:`cfn_fast.fitted.persistence` (the ``.npz`` file format) and by pickling alike, so what travels to
  a worker is exactly what a saved file holds;
* :func:`pickle_state` / :func:`unpickle_state` are the estimator's ``__getstate__`` / ``__setstate__``
  (``pickle``, ``cloudpickle``, ``copy.deepcopy``, joblib, Ray, Dask, ``multiprocessing``).

Never part of the state: the engine (compiled Cython objects, CUDA buffers), caches and locks; the
estimator binds a new :class:`~cfn_fast.fitted.runtime.Runtime` where the state lands, on the backend
:func:`cfn_fast.backends.fallback_backend` chooses.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data.ids import id_entries, ids_of
from ..data.ratings import RatingSet
from ..network import Layer
from ..preprocessing import BiasModel, Preprocessing
from ..settings import BLEND
from ..training.factors import Factors
from ..training.selection import KindChoice
from ..training.trainer import EpochRecord
from .value import Blend, Fitted, Network

__all__ = ["STATE_VERSION", "fitted_arrays", "network_arrays", "fitted_config", "fitted_from_arrays",
           "pickle_state", "unpickle_state", "id_entries", "ids_of", "FACTOR_ENTRIES", "FACTOR_WEIGHT_USES"]

#: Version of the pickled state layout (independent of the file format version).
STATE_VERSION = 1
#: in a saved model folder, the folder of shard parts of a network kept sharded (cfn_fast.fitted.sharded_file)
SHARDED_NETWORK_FOLDER = "network"
#: A blend's factor members (:class:`~cfn_fast.training.factors.Factors`), side by side: the user and item factors
#: of member ``j`` are a block of ``rank_j`` columns of ``blend_user_factors`` / ``blend_item_factors``, in order;
#: ``blend_factor_scalars`` holds one row ``[rank, reg, low, high]`` and ``blend_factor_weights`` one row ``[pairs,
#: user, item]`` per member; all four entries or none (a blend without factor members).
FACTOR_ENTRIES = ("blend_user_factors", "blend_item_factors", "blend_factor_scalars", "blend_factor_weights")
#: The uses of the factor member's weights, in the order of ``blend_factor_weights``.
FACTOR_WEIGHT_USES = ("pairs", "user", "item")


# ----------------------------------------------------------------------------- value -> data
def fitted_arrays(fitted: Fitted, *, portable: bool = True) -> dict[str, np.ndarray]:
    """The fitted value's arrays by name (layout of :mod:`cfn_fast.fitted.persistence`).

    ``portable=True`` (the file) stores string ids without pickles (:func:`id_entries`); ``portable=False``
    (pickling) keeps the ids exactly as they are.  A blend stores the training set once, each member network
    ``k``'s arrays under the prefix ``member{k}_`` and its own arrays as ``blend_*``."""
    train, blend = fitted.train, fitted.blend
    if blend is None:   # the layout of the files of one network, entry for entry and in this order
        network = network_arrays(fitted.network)
        layers = {name: value for name, value in network.items() if name.startswith("layer")}
        arrays = {**layers, **_training_arrays(train, portable),
                  **{name: value for name, value in network.items() if name not in layers}}
    else:
        arrays = _training_arrays(train, portable)
        for k, net in enumerate(fitted.networks):
            arrays.update({f"member{k}_{name}": value for name, value in network_arrays(net).items()})
    for name in ("user_features", "item_features"):
        value = getattr(train, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    for name in ("user_feature_names", "item_feature_names"):
        value = getattr(train, name)
        if value is not None:
            arrays[name] = np.array([str(v) for v in value], dtype=str) if len(value) else np.zeros(0, dtype="<U1")
    if blend is not None:
        bias = blend.bias
        arrays["blend_user_offset"] = np.asarray(bias.user_offset, dtype=np.float64)
        arrays["blend_item_offset"] = np.asarray(bias.item_offset, dtype=np.float64)
        arrays["blend_scalars"] = np.array([bias.low, bias.high, bias.mean, bias.shrinkage], dtype=np.float64)
        arrays["blend_weights"] = np.asarray(blend.weights, dtype=np.float64)
        for side in ("user", "item"):
            arrays[f"blend_fold_in_{side}"] = np.asarray(blend.fold_in_weights[side], dtype=np.float64)
        if blend.factors:
            arrays.update(_factor_arrays(blend.factors, blend.factor_weights))
    return arrays


def _factor_arrays(factors: tuple[Factors, ...], weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries :data:`FACTOR_ENTRIES` of a blend's factor members."""
    return {"blend_user_factors": np.concatenate([f.user_factors for f in factors], axis=1).astype(np.float64),
            "blend_item_factors": np.concatenate([f.item_factors for f in factors], axis=1).astype(np.float64),
            "blend_factor_scalars": np.array([[f.rank, f.reg, f.low, f.high] for f in factors], dtype=np.float64),
            "blend_factor_weights": np.stack([np.asarray(weights[use], dtype=np.float64)
                                              for use in FACTOR_WEIGHT_USES], axis=1)}


def _training_arrays(train: RatingSet, portable: bool) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name in ("user_ids", "item_ids"):
        ids = np.asarray(getattr(train, name))
        arrays.update(id_entries(name, ids) if portable else {name: ids})
    arrays["train_user"] = np.asarray(train.user)
    arrays["train_item"] = np.asarray(train.item)
    arrays["train_rating"] = np.asarray(train.rating)
    return arrays


def network_arrays(net: Network) -> dict[str, np.ndarray]:
    """One network's arrays: its layers, the input CSR, the preprocessing statistics, its side information."""
    pre, inputs = net.preprocessing, net.inputs
    arrays: dict[str, np.ndarray] = {}
    # a network kept sharded stores its layers beside, as a folder of parts (cfn_fast.fitted.sharded_file)
    for k, layer in enumerate([] if net.kept_sharded else net.layers):
        arrays[f"layer{k}_weight"] = np.asarray(layer.weight, dtype=np.float32)
        arrays[f"layer{k}_bias"] = np.asarray(layer.bias, dtype=np.float32)
        if layer.side_weight is not None:
            arrays[f"layer{k}_side_weight"] = np.asarray(layer.side_weight, dtype=np.float32)
    arrays["input_data"] = inputs.data
    arrays["input_indices"] = inputs.indices
    arrays["input_indptr"] = inputs.indptr
    arrays["input_shape"] = np.array(inputs.shape, dtype=np.int64)
    arrays["pre_sample_mean"] = pre.sample_mean
    arrays["pre_sample_count"] = pre.sample_count
    arrays["pre_scalars"] = np.array([pre.low, pre.high, pre.global_mean], dtype=np.float64)
    if pre.input_offset is not None:  # centring="bias"
        arrays["pre_input_offset"] = pre.input_offset
    if net.side is not None:
        arrays["side"] = net.side
    return arrays


def fitted_config(fitted: Fitted, backend: str) -> dict[str, Any]:
    """The fitted value's settings beside the arrays: the backend it ran on, epochs, history; a blend's members
    (kind, layers, side information, constructor settings) and how their weights were chosen."""
    config = {
        "backend_trained": backend, "kind": fitted.kind, "epochs_trained": int(fitted.epochs_trained),
        "best_epoch": fitted.best_epoch,
        "selection": None if fitted.selection is None else fitted.selection.as_dict(),
        "scale": [float(s) for s in fitted.train.scale],
        "history": [record.as_dict() for record in fitted.history],
    }
    if fitted.blend is None:
        config.update(n_layers=len(fitted.network.layers), has_side=fitted.network.side is not None)
        if fitted.network.kept_sharded:
            config["sharded_network"] = SHARDED_NETWORK_FOLDER
    else:
        config["members"] = [{"kind": net.kind, "n_layers": len(net.layers), "has_side": net.side is not None,
                              "params": dict(params)}
                             for net, params in zip(fitted.networks, fitted.blend.member_params)]
        config["blend_report"] = fitted.blend.report
    return config


# ----------------------------------------------------------------------------- data -> value
def fitted_from_arrays(arrays: dict[str, np.ndarray], config: dict[str, Any], kind: str | None = None) -> Fitted:
    """The :class:`Fitted` value of :func:`fitted_arrays` / :func:`fitted_config`.  ``kind``: the
    model's ``kind`` parameter, for files of format 1 written before the trained kind was recorded."""
    names = {name: tuple(arrays[name].tolist()) if name in arrays else None
             for name in ("user_feature_names", "item_feature_names")}
    train = RatingSet(arrays["train_user"], arrays["train_item"], arrays["train_rating"],
                      ids_of(arrays, "user_ids"), ids_of(arrays, "item_ids"),
                      (float(config["scale"][0]), float(config["scale"][1])),
                      arrays.get("user_features"), arrays.get("item_features"),
                      names["user_feature_names"], names["item_feature_names"])
    kind = config.get("kind") or (config.get("resolved") or {}).get("kind") or kind
    selection = config.get("selection")
    if kind == BLEND:
        members = config["members"]
        networks = tuple(_network(arrays, f"member{k}_", member["kind"], int(member["n_layers"]))
                         for k, member in enumerate(members))
        blend = _blend(arrays, tuple(_member_params(member["params"]) for member in members),
                       dict(config["blend_report"]))
    else:
        # a network kept sharded gets its layers from its folder of parts once read (sharded_file)
        n_layers = 0 if config.get("sharded_network") else int(config["n_layers"])
        networks, blend = (_network(arrays, "", kind, n_layers),), None
    return Fitted(train, networks, history=[EpochRecord(**record) for record in config["history"]],
                  epochs_trained=int(config["epochs_trained"]), best_epoch=config.get("best_epoch"),
                  selection=None if selection is None else KindChoice(**selection), blend=blend)


def _network(arrays: dict[str, np.ndarray], prefix: str, kind: str, n_layers: int) -> Network:
    """The network of :func:`network_arrays`, its entries under ``prefix``."""
    low, high, global_mean = (float(v) for v in arrays[prefix + "pre_scalars"])
    preprocessing = Preprocessing(kind, low, high, arrays[prefix + "pre_sample_mean"],
                                  arrays[prefix + "pre_sample_count"], global_mean,
                                  arrays.get(prefix + "pre_input_offset"))
    inputs = sp.csr_matrix((arrays[prefix + "input_data"], arrays[prefix + "input_indices"],
                            arrays[prefix + "input_indptr"]),
                           shape=tuple(int(s) for s in arrays[prefix + "input_shape"]))
    layers = [Layer(arrays[f"{prefix}layer{k}_weight"], arrays[f"{prefix}layer{k}_bias"],
                    arrays.get(f"{prefix}layer{k}_side_weight")) for k in range(n_layers)]
    return Network(kind, preprocessing, inputs, arrays.get(prefix + "side"), layers)


def _member_params(params: dict[str, Any]) -> dict[str, Any]:
    """A member's constructor settings as ``get_params`` gives them (a file's JSON has lists for tuples)."""
    params = dict(params)
    if isinstance(params.get("hidden"), list):
        params["hidden"] = tuple(params["hidden"])
    return params


def _blend(arrays: dict[str, np.ndarray], member_params: tuple[dict[str, Any], ...],
           report: dict[str, Any]) -> Blend:
    low, high, mean, shrinkage = (float(v) for v in arrays["blend_scalars"])
    bias = BiasModel(low, high, mean, np.asarray(arrays["blend_user_offset"], dtype=np.float64),
                     np.asarray(arrays["blend_item_offset"], dtype=np.float64), shrinkage)
    fold_in = {side: np.asarray(arrays[f"blend_fold_in_{side}"], dtype=np.float64) for side in ("user", "item")}
    factors: list[Factors] = []
    factor_weights = {use: np.zeros(0) for use in FACTOR_WEIGHT_USES}
    if "blend_user_factors" in arrays:     # the factor members (FACTOR_ENTRIES)
        start = 0
        for rank, reg, factor_low, factor_high in arrays["blend_factor_scalars"]:
            block = slice(start, start + int(rank))
            factors.append(Factors(np.array(arrays["blend_user_factors"][:, block], dtype=np.float64),
                                   np.array(arrays["blend_item_factors"][:, block], dtype=np.float64),
                                   float(reg), float(factor_low), float(factor_high)))
            start += int(rank)
        weights = np.asarray(arrays["blend_factor_weights"], dtype=np.float64)
        factor_weights = {use: weights[:, k].copy() for k, use in enumerate(FACTOR_WEIGHT_USES)}
    return Blend(bias, np.asarray(arrays["blend_weights"], dtype=np.float64), fold_in, member_params, report,
                 tuple(factors), factor_weights)


# ----------------------------------------------------------------------------- pickling
def pickle_state(attributes: dict[str, Any], fitted: Fitted | None, backend: str | None) -> dict[str, Any]:
    """``__getstate__``: the estimator's plain ``attributes`` (constructor parameters, the validation
    set) as they are, and the fitted value through :func:`fitted_arrays` / :func:`fitted_config`."""
    state: dict[str, Any] = {"state_version": STATE_VERSION, "attributes": dict(attributes)}
    if fitted is not None and any(net.kept_sharded for net in fitted.networks):
        raise TypeError("a model kept sharded does not pickle: its network lives in a folder of shard parts, "
                        "not in the process. Save it (model.save(folder)) and CFN.load(folder) where it is "
                        "needed, or model.gather() it first where it fits")
    if fitted is not None:
        state["arrays"] = fitted_arrays(fitted, portable=False)
        state["config"] = {**fitted_config(fitted, backend or "numpy"), "profile": fitted.profile}
    return state


def unpickle_state(state: Any, owner: str) -> tuple[dict[str, Any], Fitted | None, str | None]:
    """``__setstate__``: ``(attributes, fitted value or None, backend it ran on)`` of
    :func:`pickle_state`'s result; ``owner`` names the class in the error."""
    if not isinstance(state, dict) or state.get("state_version") != STATE_VERSION:
        found = state.get("state_version") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"cannot unpickle a {owner}: state version {found!r}, this cfn_fast "
                         f"reads version {STATE_VERSION} (pickles are for moving a model between processes "
                         f"of one installation; use save/load for storage)")
    attributes = dict(state["attributes"])
    if "arrays" not in state:
        return attributes, None, None
    config = state["config"]
    fitted = fitted_from_arrays(state["arrays"], config, attributes.get("kind"))
    fitted.profile = config.get("profile")
    return attributes, fitted, config["backend_trained"]
