"""The public engine API: drive CFN training from your own loop (version :data:`ENGINE_API_VERSION`).

:class:`~cfn_fast.CFN` is a thin loop around an *engine*: the object that holds the network on one
backend (``numpy`` reference, ``cpu`` Cython + OpenMP, ``cuda``) and runs the paper's training step.
Engines that schedule training themselves (a parameter server, population-based training, a custom
learning-rate schedule, federated averaging) use the engine directly::

    from cfn_fast.engine import make_engine, training_inputs, minibatches, TrainConfig, init_layers, learning_rate

    inputs = training_inputs(train, "item")
    engine = make_engine("cpu", init_layers(inputs.n_inputs, (600,), inputs.side_dim, seed=0),
                         TrainConfig(seed=0), inputs.samples, inputs.side)
    for epoch in range(1, 21):
        lr = learning_rate(0.04, 0.1, epoch)
        for rows in minibatches(engine, epoch):
            engine.sgd_step(rows, epoch, lr)
    layers = engine.get_layers()

The contract — names, argument meanings, what is guaranteed — is documented in ``docs/engine_api.md``
and versioned by :data:`ENGINE_API_VERSION` (``major.minor``: a minor version only adds, a major
version may change or remove).  Everything in ``__all__`` is covered; other attributes of engines are
private.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .backends import (
    BACKENDS,
    BackendUnavailable,
    TrainConfig,
    available_backends,
    engine_class,
    resolve_backend,
    shard_engine_class,
)
from .backends.base import Engine, EngineSnapshot, ModelBusyError, epoch_order
from .backends.shard_base import ShardData, ShardEngine, join_layers, shard_bounds, shard_data, split_layers
from .backends.validation import checked_epoch, sparse_matrix
from .data.ratings import RatingSet
from .data.side_info import as_feature_matrix
from .network import Layer, check_layers, init_layers, layer_sizes
from .preprocessing import Preprocessing
from .training.trainer import learning_rate

__all__ = ["ENGINE_API_VERSION", "Engine", "TrainConfig", "Layer", "TrainingInputs", "make_engine",
           "training_inputs", "minibatches", "epoch_order", "init_layers", "layer_sizes", "learning_rate",
           "BACKENDS", "available_backends", "BackendUnavailable", "ModelBusyError", "EngineSnapshot",
           "ShardData", "ShardEngine", "make_shard_engine", "shard_bounds", "shard_data", "split_layers", "join_layers"]

#: Version of the contract in ``docs/engine_api.md`` (``"major.minor"``).
ENGINE_API_VERSION = "1.5"


@dataclass(frozen=True)
class TrainingInputs:
    """What an engine trains on, built exactly as :meth:`cfn_fast.CFN.fit` builds it.

    ``samples``: samples x inputs float32 CSR of centred unit ratings (users x items for
    ``kind="user"``, items x users for ``kind="item"``); ``side``: float32 side information of the
    samples (or ``None``); ``preprocessing``: the scaling and centring, to turn network outputs back
    into ratings (:meth:`~cfn_fast.preprocessing.Preprocessing.to_rating`)."""

    samples: sp.csr_matrix
    side: np.ndarray | None
    preprocessing: Preprocessing

    @property
    def n_inputs(self) -> int:
        return int(self.samples.shape[1])

    @property
    def side_dim(self) -> int:
        return 0 if self.side is None else int(self.side.shape[1])


def training_inputs(train: RatingSet, kind: str = "item", *, use_side_info: bool = True,
                    features: Any = None, centring: str = "sample") -> TrainingInputs:
    """The samples CSR, side information and preprocessing :meth:`CFN.fit <cfn_fast.CFN.fit>` would
    train on: ``kind`` ``"user"`` (U-CFN) or ``"item"`` (I-CFN); ``features`` overrides the sample
    side's features stored in ``train`` (user features for U-CFN, item features for I-CFN);
    ``centring`` as ``CFN(centring=...)`` (``"sample"``, the paper's, or ``"bias"``)."""
    if not isinstance(train, RatingSet):
        raise TypeError(f"train must be a RatingSet, got {type(train).__name__}")
    if kind not in ("user", "item"):
        raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
    preprocessing = Preprocessing.fit(kind, train, centring)
    samples = preprocessing.centred_matrix(train)
    _check_no_duplicate_entries(samples)
    side = None
    if use_side_info:
        stored = train.user_features if kind == "user" else train.item_features
        side = _side_matrix(stored if features is None else features, samples.shape[0])
    return TrainingInputs(samples, side, preprocessing)


def make_engine(backend: str, layers: Sequence[Layer], config: TrainConfig, samples: Any,
                side: Any = None, **options: Any) -> Engine:
    """A training engine on ``backend`` (``"numpy"``, ``"cpu"``, ``"cuda"`` or ``"auto"``).

    ``layers``: the network in the canonical layout (:class:`~cfn_fast.network.Layer` per Linear
    layer, from :func:`init_layers` or a model's ``layers_``), copied into the engine.  ``config``:
    the step's hyper-parameters and seed.  ``samples``: the samples x inputs matrix of centred unit
    ratings (any SciPy sparse matrix, checked on its raw arrays: structure, index ranges, finite
    values, no entry stored twice; converted to float32 CSR with sorted indices, a stored zero is a
    known rating).  ``side``: one row of side features per sample, or ``None``.  ``options`` go to
    the backend's engine (``threads=`` for ``cpu``).  Raises :class:`BackendUnavailable` when the
    backend cannot run here, ``TypeError`` / ``ValueError`` naming any inconsistent argument."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {BACKENDS} or 'auto', got {backend!r}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a cfn_fast.engine.TrainConfig, got {type(config).__name__}")
    name = resolve_backend(backend, config.dtype, config.dropout, config.kernel_dim)
    if not sp.issparse(samples):
        raise TypeError(f"samples must be a SciPy sparse matrix (samples x inputs), got {type(samples).__name__}")
    # checked on its raw arrays before SciPy copies and sorts it (its C++ code trusts the structure)
    samples = sp.csr_matrix(sparse_matrix(samples, "samples"), dtype=np.float32, copy=True)
    samples.sort_indices()
    side = None if side is None else _side_matrix(side, samples.shape[0])
    # engine_class(name) as before API 1.5 unless kernelised: a one-argument replacement (a test's) still works
    cls = engine_class(name, config.kernel_dim) if config.kernel_dim else engine_class(name)
    # an engine that copies the layers into its own storage gets the caller's float32 arrays as they are
    layers = check_layers(layers, samples.shape[1], 0 if side is None else side.shape[1],
                          copy=None if getattr(cls, "copies_layers", False) else True)
    return cls(layers, config, samples, side, **options)


def make_shard_engine(backend: str, part: Sequence[Layer], config: TrainConfig, data: ShardData, side: Any = None,
                      **options: Any) -> ShardEngine:
    """The engine of one shard of a network whose inputs are split over workers (API 1.5; the split step is
    described in ``docs/engine_api.md`` and :mod:`cfn_fast.backends.shard_base`).

    ``part``: this shard's part of the network (:func:`split_layers`); ``data``: its :class:`ShardData`
    (:func:`shard_data`); ``side``: the side information of every sample, or ``None``.  Checked before any kernel
    runs, like :func:`make_engine`."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a cfn_fast.engine.TrainConfig, got {type(config).__name__}")
    if not isinstance(data, ShardData):
        raise TypeError(f"data must be a cfn_fast.engine.ShardData (from shard_data), got {type(data).__name__}")
    name = resolve_backend(backend, config.dtype)
    samples = sparse_matrix(data.samples, "data.samples")
    n_samples, width = samples.shape
    starts = np.asarray(data.row_starts)
    if starts.shape != (n_samples + 1,) or starts.dtype.kind not in "iu" or starts[0] != 0 \
            or np.any(np.diff(starts) < 0):
        raise ValueError(f"data.row_starts must be the training CSR's row pointer: {n_samples + 1} non-decreasing "
                         f"integers from 0")
    if np.any(np.diff(samples.indptr) > np.diff(starts)):
        raise ValueError("data.samples has a sample with more entries than data.row_starts gives its whole row")
    positions = np.asarray(data.positions)
    if positions.shape != (samples.nnz,) or positions.dtype.kind not in "iu" or \
            (positions.size and (positions.min() < 0 or positions.max() >= starts[-1])):
        raise ValueError(f"data.positions must hold one position in [0, {int(starts[-1])}) per entry "
                         f"({samples.nnz} entries)")
    side = None if side is None else _side_matrix(side, n_samples)
    part = check_layers(part, width, 0 if side is None else side.shape[1], what="part")
    data = ShardData(sp.csr_matrix(samples, dtype=np.float32), positions.astype(np.int64), starts.astype(np.int64),
                     int(data.first))
    return shard_engine_class(name)(part, config, data, side, **options)


def minibatches(engine: Engine, epoch: int) -> list[np.ndarray]:
    """The mini-batches (arrays of sample rows) of ``epoch`` in the order ``engine.train_epoch``
    takes them: a fresh permutation of the samples with ratings, cut every ``config.batch_size``."""
    order = epoch_order(engine.config.seed, checked_epoch(epoch), engine.trainable)
    size = int(engine.config.batch_size)
    return [order[start:start + size] for start in range(0, len(order), size)]


def _side_matrix(features: Any, n_rows: int) -> np.ndarray | None:
    return None if features is None else as_feature_matrix(features, n_rows, "side information")


def _check_no_duplicate_entries(samples: sp.csr_matrix) -> None:
    """The training CSR has sorted column indices per row: a repeat is a duplicate (user, item)."""
    if samples.nnz < 2:
        return
    same = samples.indices[1:] == samples.indices[:-1]
    row_start = np.zeros(samples.nnz, dtype=bool)
    row_start[samples.indptr[:-1][np.diff(samples.indptr) > 0]] = True
    if np.any(same & ~row_start[1:]):
        raise ValueError("train has duplicate (user, item) pairs; build it with RatingSet.from_arrays("
                         "..., duplicates='last' or 'mean')")
