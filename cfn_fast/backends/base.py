"""What every training engine (NumPy reference, Cython CPU, CUDA) provides.

An engine owns the network parameters during training and runs the paper's training step
on the samples x inputs CSR of centred unit ratings.  All engines share the mini-batch
order (:func:`epoch_order`), the corruption draws (:mod:`cfn_fast.corruption`) and the
canonical parameter layout (:mod:`cfn_fast.network`), so they can be compared entry for
entry.  The NumPy engine is the specification; the others mirror it op for op.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterable, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp

from ..network import Layer
from ..settings import TrainConfig
from .fixed_shape import column_block_product
from .guard import ModelBusyError
from .public_calls import EngineCalls, EngineSnapshot, NetworkShape, check_training_inputs, wrap_public_methods

__all__ = ["BackendUnavailable", "Engine", "EngineSnapshot", "ModelBusyError", "PhaseTiming", "Ranges", "TrainConfig",
           "check_training_inputs", "epoch_order", "max_abs"]

T = TypeVar("T")

#: one timed phase of a profiled epoch: ``(phase name, start (time.monotonic clock), seconds, mini-batch)``
PhaseTiming = tuple[str, float, float, int]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (and why)."""


class Ranges(Protocol):
    """Named, nested ranges pushed around each phase of a profiled epoch (e.g. NVTX)."""

    def push(self, name: str) -> None: ...

    def pop(self) -> None: ...


def epoch_order(seed: int, epoch: int, trainable: np.ndarray) -> np.ndarray:
    """The samples of one epoch in mini-batch order: a fresh permutation of the trainable rows.

    Every trainable sample is visited once per epoch (the Torch code skipped one; we don't).
    """
    return trainable[np.random.default_rng((seed, epoch)).permutation(len(trainable))]


def max_abs(arrays: Iterable[np.ndarray]) -> float:
    """``max |x|`` over every entry of ``arrays`` (0 when empty), NaN when one is NaN or infinite."""
    largest = 0.0
    for array in arrays:
        if array.size:
            peak = float(np.max(np.abs(array)))
            if not np.isfinite(peak):
                return float("nan")
            largest = max(largest, peak)
    return largest


def _direct(call: Callable[[], T]) -> T:
    return call()


class Engine(ABC):
    """One backend's training and inference engine for a CFN network.

    Capabilities a caller reads instead of testing the backend's name:

    ``device``       where the parameters live and inference runs: ``"host"`` (NumPy, Cython) or
                     ``"cuda"`` (a CUDA GPU; the engine then also has ``stream``).
    ``phase_timer``  how :meth:`profiled_epoch` times the phases of a training step (a sentence for
                     the profile's header); empty when the engine cannot be profiled.
    ``dtypes``       the weight storage types it holds (``config.dtype``, :mod:`cfn_fast.backends.bfloat16`); it
                     refuses the others when built.
    ``trains_dropout`` whether it trains with ``config.dropout > 0`` (dropout of hidden units,
                     :mod:`cfn_fast.corruption`); one that does not refuses it when built.
    ``kernelised``   whether it trains kernelised weights (``config.kernel_dim > 0``,
                     :mod:`cfn_fast.backends.kernelised`); it refuses them when built otherwise.  Such an engine
                     also has ``kernel_gradients(rows, epoch)`` and ``kernel_state()``.
    ``copies_layers`` whether its constructor and ``set_layers`` copy the layers given into storage of its own:
                     the checks before them then hand the caller's float32 arrays over as they are (no copy
                     made only to be copied again); an engine that may keep them gets float32 copies.

    Every public method of every subclass is wrapped when the class is created
    (:mod:`cfn_fast.backends.public_calls`): its arguments are checked before any kernel runs, it
    follows the busy rule (:mod:`cfn_fast.backends.guard`), and it runs through :attr:`run_kernels`.
    """

    name: str = "abstract"
    device: str = "host"
    phase_timer: str = ""
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    trains_dropout: ClassVar[bool] = False
    kernelised: ClassVar[bool] = False
    copies_layers: ClassVar[bool] = False
    #: how a public method's body runs: directly; the ``cpu`` engine runs it where OpenMP works after a fork
    run_kernels: ClassVar[Callable[[Callable[[], Any]], Any]] = staticmethod(_direct)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_public_methods(cls)

    def __init__(self, layers: list[Layer] | NetworkShape, config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None) -> None:
        # ``layers`` as a NetworkShape: an engine whose network is never in one place (kept sharded) is checked
        # by its shape alone
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a cfn_fast.engine.TrainConfig, got {type(config).__name__}")
        if config.dtype not in self.dtypes:   # an engine that ignored it would train another model than asked
            raise ValueError(f"{config.dtype} weight storage is not on {self.name} yet; use backend='numpy'")
        if config.dropout and not self.trains_dropout:   # the same: another model than asked, so refused
            raise ValueError(f"dropout is not on {self.name} yet; use backend='cpu' or 'numpy'")
        if config.kernel_dim and not self.kernelised:   # said before any device work
            raise ValueError(f"kernel_dim is not on {self.name} yet; use backend='cpu' or 'numpy'")
        check_training_inputs(samples, side)
        self.config = config
        self.samples = samples
        self.side = None if side is None else np.ascontiguousarray(side, dtype=np.float32)
        self.trainable = np.flatnonzero(np.diff(samples.indptr) > 0)
        self._calls = EngineCalls(self.name, layers, config, samples, self.side, copies_layers=self.copies_layers)

    def __reduce__(self):
        # compiled state and device buffers do not travel; a clear message instead of Cython's
        raise TypeError(f"a cfn_fast {self.name!r} engine cannot be pickled: ship the fitted model (it pickles "
                        f"without its engine) or get_layers(), the TrainConfig and the data, and call "
                        f"cfn_fast.engine.make_engine in the worker")

    # ---------------------------------------------------------------- training
    @abstractmethod
    def train_epoch(self, epoch: int, lr: float) -> float:
        """Run one epoch of SGD (all mini-batches in :func:`epoch_order`); return the summed loss."""

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None
                       ) -> tuple[float, list[PhaseTiming]]:
        """:meth:`train_epoch` with every phase of every mini-batch timed: ``(loss, timings)``.

        The parameters and the loss are exactly those of :meth:`train_epoch`.  Each timing is
        ``(phase, start, seconds, batch)`` with ``start`` on the ``time.monotonic`` clock and
        ``batch`` the mini-batch's index in the epoch.  ``ranges`` (optional) gets a ``push(name)``
        before and a ``pop()`` after each phase, properly nested (NVTX ranges, see
        :mod:`cfn_fast.profiling`).  Each engine names its own phases (docs/profiling.md).
        """
        raise ValueError(f"profiling is not supported for the {self.name!r} engine")

    @abstractmethod
    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        """Loss and summed (not averaged, no decay) gradients of one mini-batch, canonical layout."""

    @abstractmethod
    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        """One SGD step on the mini-batch ``rows``: θ ← θ − lr·(g/B + λ·θ); returns the loss."""

    @abstractmethod
    def get_layers(self) -> list[Layer]:
        """A copy of the parameters in the canonical layout (float32 NumPy arrays)."""

    @abstractmethod
    def set_layers(self, layers: list[Layer]) -> None:
        """Replace the parameters (e.g. to restore the best epoch)."""

    def snapshot(self) -> object:
        """An opaque copy of the parameters, cheap to take every epoch (GPU engines keep it on device)."""
        return self.get_layers()

    def restore(self, snapshot: object) -> None:
        """Return to a :meth:`snapshot` (divergence recovery, early stopping)."""
        self.set_layers(snapshot)  # type: ignore[arg-type]

    def max_abs_param(self) -> float:
        """``max |θ|`` over every parameter, NaN if any is NaN (the divergence check needs only this;
        engines that keep parameters on a device override it to avoid copying them to the host)."""
        return max_abs(array for layer in self.get_layers() for array in layer.arrays())

    # ---------------------------------------------------------------- inference
    @abstractmethod
    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Network output at ``(rows[k], cols[k])`` when sample ``rows[k]`` is fed its full,
        uncorrupted input row of ``inputs`` (and side row).  Unit, centred scale."""

    @abstractmethod
    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        """Last hidden layer's activations of every row of ``inputs`` (for scoring many outputs)."""

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        """Output layer on hidden codes: all outputs, or only output columns ``cols``.  A row's values do not
        depend on the other rows given with it (:mod:`~cfn_fast.backends.fixed_shape`)."""
        out = self.get_layers()[-1]
        if cols is None:
            cols = np.arange(out.weight.shape[0])
        z = column_block_product(codes, out.weight, cols) + out.bias[cols]
        if side is not None and out.side_weight is not None:
            z += column_block_product(side, out.side_weight, cols)
        return np.tanh(z, dtype=np.float32)


wrap_public_methods(Engine)   # its concrete defaults (snapshot, restore, decode, ...) too
