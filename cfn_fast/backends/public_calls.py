"""What every public method of every engine does before and around the backend's own code.

:class:`~cfn_fast.backends.base.Engine` wraps each public method of each backend (and of any subclass)
once, when the class is created (:func:`wrap_public_methods`), so a backend writes only its maths:

1. the arguments are checked and normalised by the :class:`EngineCalls` method of the same name
   (:mod:`cfn_fast.backends.validation`): rows become an int64 array in range, matrices a sound
   float32 CSR, ``restore`` gets back the backend's own snapshot;
2. the call runs under the engine's busy rule (:mod:`cfn_fast.backends.guard`): training calls are
   exclusive, reading calls shared, a second thread is refused with ``ModelBusyError``;
3. it runs through the engine's ``run_kernels`` (the ``cpu`` engine moves it to a thread where OpenMP
   works when the process was forked after running its kernels: :mod:`cfn_fast.backends.openmp_fork`).

An engine's methods may call each other: the inner calls are checked again (cheap: a few array
reductions) and pass the busy rule as the same thread.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..data.side_info import as_feature_matrix
from ..network import check_layers
from ..settings import TrainConfig
from .guard import BusyGuard
from .validation import checked_epoch, checked_lr, codes_matrix, index_array, matrix_shape, side_matrix, sparse_matrix

__all__ = ["EngineCalls", "EngineSnapshot", "NetworkShape", "MUTATING", "READING", "wrap_public_methods",
           "check_training_inputs"]

#: calls that change the parameters or use the engine's scratch buffers: exclusive
MUTATING = ("train_epoch", "profiled_epoch", "sgd_step", "gradients", "kernel_gradients", "set_layers", "restore")
#: calls that only read the parameters: shared with each other
READING = ("get_layers", "snapshot", "max_abs_param", "predict_entries", "encode", "decode", "kernel_state")

_PUBLIC_MARK = "__cfn_engine_public__"


@dataclass(frozen=True)
class NetworkShape:
    """What an engine's arguments are checked against."""

    n_samples: int
    n_inputs: int
    hidden: tuple[int, ...]
    side_dim: int


class EngineSnapshot:
    """What ``Engine.snapshot()`` returns: the backend's copy of the parameters, and the engine it belongs to."""

    __slots__ = ("owner", "payload", "backend")

    def __init__(self, owner: object, payload: object, backend: str) -> None:
        self.owner, self.payload, self.backend = owner, payload, backend

    def __repr__(self) -> str:
        return f"<snapshot of a cfn_fast {self.backend!r} engine>"


def check_training_inputs(samples: Any, side: Any) -> None:
    """What an engine is built on: a sound float32 CSR (:func:`sparse_matrix`) and side rows for its samples."""
    if not isinstance(samples, sp.csr_matrix) or samples.dtype != np.float32:
        raise TypeError("samples must be a float32 scipy.sparse CSR matrix")
    sparse_matrix(samples, "samples")
    if side is not None:
        as_feature_matrix(side, samples.shape[0], "side information")


def _checked_shape(shape: NetworkShape, samples: sp.csr_matrix, side_dim: int) -> NetworkShape:
    """``shape`` when it is a network over ``samples``' inputs and samples with ``side_dim`` side features."""
    given = (shape.n_samples, shape.n_inputs, shape.side_dim)
    if given != (samples.shape[0], samples.shape[1], side_dim):
        raise ValueError(f"the network is over {shape.n_samples} samples x {shape.n_inputs} inputs with "
                         f"{shape.side_dim} side features, but samples are {samples.shape[0]} x {samples.shape[1]} "
                         f"with {side_dim} side features")
    if not shape.hidden or any(type(width) is not int or width < 1 for width in shape.hidden):
        raise ValueError(f"hidden widths must be positive integers, got {shape.hidden!r}")
    return shape


class EngineCalls:
    """One engine's argument checks (one method per public engine method), busy guard and identity."""

    def __init__(self, backend: str, layers: Any, config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, *, copies_layers: bool = False) -> None:
        """``layers``: the network's layers, or only its :class:`NetworkShape` (an engine whose network is not in
        one place, e.g. kept sharded), checked against ``samples`` and ``side`` likewise.  ``copies_layers``: the
        engine copies the layers ``set_layers`` gets (``Engine.copies_layers``): float32 ones are not copied first."""
        side_dim = 0 if side is None else int(side.shape[1])
        if isinstance(layers, NetworkShape):
            self.shape = _checked_shape(layers, samples, side_dim)
        else:
            checked = check_layers(layers, samples.shape[1], side_dim, copy=False)
            self.shape = NetworkShape(int(samples.shape[0]), int(samples.shape[1]),
                                      tuple(int(layer.weight.shape[0]) for layer in checked[:-1]), side_dim)
        self.weight_decay = float(config.weight_decay)
        self.copies_layers = bool(copies_layers)
        self.backend = backend
        self.guard = BusyGuard(f"this {backend} engine")
        self.token = object()          # whose snapshots restore accepts

    # ------------------------------------------------------------ training
    def train_epoch(self, epoch: Any, lr: Any) -> tuple[tuple, dict]:
        return (checked_epoch(epoch), checked_lr(lr, self.weight_decay)), {}

    def profiled_epoch(self, epoch: Any, lr: Any, ranges: Any = None) -> tuple[tuple, dict]:
        if ranges is not None and not (callable(getattr(ranges, "push", None)) and callable(getattr(ranges, "pop",
                                                                                                    None))):
            raise TypeError(f"ranges must have push(name) and pop() methods (e.g. NVTX ranges) or be None, got "
                            f"{type(ranges).__name__}")
        return (checked_epoch(epoch), checked_lr(lr, self.weight_decay), ranges), {}

    def sgd_step(self, rows: Any, epoch: Any, lr: Any) -> tuple[tuple, dict]:
        return (self._mini_batch(rows), checked_epoch(epoch), checked_lr(lr, self.weight_decay)), {}

    def gradients(self, rows: Any, epoch: Any) -> tuple[tuple, dict]:
        return (self._mini_batch(rows), checked_epoch(epoch)), {}

    kernel_gradients = gradients

    def _mini_batch(self, rows: Any) -> np.ndarray:
        return index_array(rows, self.shape.n_samples, "rows", allow_empty=False)

    # ------------------------------------------------------------ parameters
    def set_layers(self, layers: Any) -> tuple[tuple, dict]:
        shape = self.shape
        layout = getattr(layers, "layout", None)
        if layout is not None:   # a network kept sharded (sharding.parts.ShardedLayers): its shape, never its arrays
            given = (int(layout.n_inputs), tuple(layout.hidden), int(layout.side_dim))
            if given != (shape.n_inputs, shape.hidden, shape.side_dim):
                raise ValueError(f"layers kept sharded over {given[0]} inputs, hidden {given[1]}, {given[2]} side "
                                 f"features; this engine's network has {shape.n_inputs} inputs, hidden "
                                 f"{shape.hidden}, {shape.side_dim} side features")
            return (layers,), {}
        return (check_layers(layers, shape.n_inputs, shape.side_dim, shape.hidden,
                             copy=None if self.copies_layers else True),), {}

    def restore(self, snapshot: Any) -> tuple[tuple, dict]:
        if isinstance(snapshot, EngineSnapshot):
            if snapshot.owner is not self.token:
                raise ValueError(f"restore takes a snapshot() of this engine; this one was taken from another "
                                 f"{snapshot.backend} engine (copy parameters with set_layers(other.get_layers()))")
            return (snapshot.payload,), {}
        if self.guard.inside():  # the engine's own code (a subclass's restore calling its base's)
            return (snapshot,), {}
        raise TypeError(f"restore takes a snapshot() of this engine, got {type(snapshot).__name__}")

    def wrap_snapshot(self, payload: object) -> EngineSnapshot:
        return payload if isinstance(payload, EngineSnapshot) else EngineSnapshot(self.token, payload, self.backend)

    def get_layers(self) -> tuple[tuple, dict]:
        return (), {}

    snapshot = max_abs_param = kernel_state = get_layers

    # ------------------------------------------------------------ inference
    def predict_entries(self, inputs: Any, side: Any, rows: Any, cols: Any) -> tuple[tuple, dict]:
        shape = self.shape
        if not sp.issparse(inputs):
            raise TypeError(f"inputs must be a SciPy sparse matrix, got {type(inputs).__name__}")
        rows = index_array(rows, matrix_shape(inputs, "inputs")[0], "rows")
        cols = index_array(cols, shape.n_inputs, "cols")
        if len(rows) != len(cols):
            raise ValueError(f"rows and cols differ in length: {len(rows)} and {len(cols)}")
        # only the rows asked for are read: check their entries, not the whole (training) matrix
        inputs = sparse_matrix(inputs, "inputs", shape.n_inputs, rows=np.unique(rows))
        return (inputs, side_matrix(side, inputs.shape[0], shape.side_dim), rows, cols), {}

    def encode(self, inputs: Any, side: Any, **options: Any) -> tuple[tuple, dict]:
        inputs = sparse_matrix(inputs, "inputs", self.shape.n_inputs)
        return (inputs, side_matrix(side, inputs.shape[0], self.shape.side_dim)), options

    def decode(self, codes: Any, side: Any, cols: Any = None, **options: Any) -> tuple[tuple, dict]:
        shape = self.shape
        codes = codes_matrix(codes, shape.hidden[-1])
        cols = None if cols is None else index_array(cols, shape.n_inputs, "cols")
        return (codes, side_matrix(side, codes.shape[0], shape.side_dim), cols), options


# ----------------------------------------------------------------------------- the wrapping
def wrap_public_methods(cls: type) -> None:
    """Give every public method ``cls`` defines or inherits unwrapped its checks, guard and kernel runner."""
    for name in (*MUTATING, *READING):
        method = getattr(cls, name, None)
        if method is None or getattr(method, "__isabstractmethod__", False) or getattr(method, _PUBLIC_MARK, False):
            continue
        setattr(cls, name, _public(name, method))


def _public(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    check = getattr(EngineCalls, name)
    mutating = name in MUTATING
    call_name = f"{name}()"

    @functools.wraps(method)
    def public(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls: EngineCalls = self._calls
        args, kwargs = check(calls, *args, **kwargs)

        def body() -> Any:
            with (calls.guard.mutating if mutating else calls.guard.reading)(call_name):
                return method(self, *args, **kwargs)
        result = self.run_kernels(body)
        return calls.wrap_snapshot(result) if name == "snapshot" else result

    setattr(public, _PUBLIC_MARK, True)
    return public
