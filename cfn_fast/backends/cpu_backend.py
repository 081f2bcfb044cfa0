"""The CPU engine: sparse masked CFN training in Cython + OpenMP (``kernels/cpu/cfn_cpu.pyx``).

Mirrors :class:`~cfn_fast.backends.numpy_backend.NumpyEngine` op for op, but a mini-batch
costs O(nnz_batch x width) for the input and output layers instead of O(B x n_inputs):

* the masking draws are the same counter-based hash as :mod:`cfn_fast.corruption`,
  computed in the kernel (identical masks);
* the batch's entries are sorted by input column; each distinct column's input-weight row
  (stored transposed, one contiguous row per input) is read once and added into the hidden
  pre-activations of the samples where that entry is *visible*;
* the decoder evaluates the outputs at the batch's known entries only (unknown entries have
  zero loss weight, so they carry no gradient), fused with the loss, the output deltas,
  dh and the update of the touched output rows;
* input-layer gradients touch the rows of the visible columns only (applied, inside
  ``train_epoch``, while the next batch's encoder has those rows loaded anyway);
* weight decay is exact and lazy: the big per-input arrays are kept as ``scale * V``.

See ``kernels/cpu/cfn_cpu.pyx`` for the kernels.

Results are deterministic for a seed and do not depend on the number of threads.
Threads: ``CpuEngine(..., threads=n)``, :func:`set_num_threads` (module default), else
OpenMP's default (``OMP_NUM_THREADS`` or all cores).
"""
from __future__ import annotations

import os
import weakref

import numpy as np
import scipy.sparse as sp

# A mini-batch has a handful of parallel regions.  libgomp's default busy-wait (300k spins)
# between them is disastrous when the cores are shared (10x slower on a loaded 2-core box);
# a short spin then sleep costs little either way.  Only a default: OMP_WAIT_POLICY or
# GOMP_SPINCOUNT set by the user win, and it only takes effect if libgomp is not loaded yet.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

from ..corruption import DROPOUT_SALT, dropout_scale, dropout_threshold, epoch_key, mask_threshold  # noqa: E402
from ..kernels import cfn_cpu as _kernels  # noqa: E402
from ..network import Layer, all_finite  # noqa: E402
from ..settings import DTYPES  # noqa: E402
from .base import Engine, PhaseTiming, Ranges, TrainConfig, epoch_order  # noqa: E402
from .bfloat16 import ROUND_SALT  # noqa: E402
from .openmp_fork import run as run_after_fork  # noqa: E402

__all__ = ["CpuEngine", "set_num_threads", "get_num_threads", "has_openmp", "simd_level"]

_default_threads: int | None = None


def set_num_threads(threads: int | None) -> None:
    """Default thread count of CPU engines created without ``threads=`` (None: OpenMP's default)."""
    global _default_threads
    _default_threads = _check_threads(threads)


def get_num_threads() -> int:
    """The thread count a new CPU engine gets by default."""
    return _default_threads if _default_threads is not None else max(1, _kernels.max_threads())


def has_openmp() -> bool:
    """True when the kernels were built with OpenMP (else they run single-threaded)."""
    return _kernels.has_openmp()


def simd_level() -> str:
    """The SIMD path the kernels use on this CPU: 'avx512', 'avx2' or 'generic'."""
    return _kernels.simd_level()


def _check_threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _range_hook(names: tuple[str, ...], ranges: Ranges):
    """The kernels' phase callback ``hook(phase, begin)`` pushing and popping named ranges."""
    labels = list(names) + ["mini-batch"]

    def hook(phase: int, begin: bool) -> None:
        if begin:
            ranges.push(labels[phase])
        else:
            ranges.pop()
    return hook


class CpuEngine(Engine):
    """Sparse Cython + OpenMP implementation of CFN training (exact to the NumPy reference)."""

    name = "cpu"
    dtypes = DTYPES
    trains_dropout = True
    copies_layers = True       # load() copies them into the kernels' own layout
    phase_timer = "clock_gettime timers inside the Cython training step"
    run_kernels = staticmethod(run_after_fork)   # libgomp's thread team does not survive fork

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, threads: int | None = None) -> None:
        super().__init__(layers, config, samples, side)
        n_samples, n_inputs = samples.shape
        _check_csr(samples, "samples")
        if self.side is not None and not np.all(np.isfinite(self.side)):
            raise ValueError("side information contains NaN or infinite values")
        self.side_dim = 0 if self.side is None else self.side.shape[1]
        self.widths = _check_layers(layers, n_inputs, self.side_dim)
        # the kernels size buffers in C ints: no batch holds more rows than there are
        self._state = self._kernel_state(min(int(config.batch_size), max(n_samples, 1)), config.dtype == "bfloat16")
        self.threads = threads
        self._state.load(layers)
        self._float32_twin: _kernels.SparseCFN | None = None   # bfloat16: inference and gradients in float32
        self._spare_snapshots: list[list[np.ndarray]] = []

    # ---------------------------------------------------------------- threads
    @property
    def threads(self) -> int:
        """Threads the kernels use (settable)."""
        return self._state.nthreads

    @threads.setter
    def threads(self, value: int | None) -> None:
        value = _check_threads(value)
        self._state.nthreads = get_num_threads() if value is None else value

    # ---------------------------------------------------------------- training
    def _rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0:
            raise ValueError(f"a mini-batch needs a non-empty 1-d array of row indices, got shape {rows.shape}")
        if rows.min() < 0 or rows.max() >= self.samples.shape[0]:
            raise IndexError(f"row indices must lie in [0, {self.samples.shape[0]}), "
                             f"got [{rows.min()}, {rows.max()}]")
        return rows

    def _key(self, epoch: int) -> int:
        return epoch_key(self.config.seed, epoch)

    def train_epoch(self, epoch: int, lr: float) -> float:
        self._float32_twin = None
        order = np.ascontiguousarray(epoch_order(self.config.seed, epoch, self.trainable), dtype=np.int64)
        batch = min(int(self.config.batch_size), max(len(order), 1))   # no batch holds more rows than there are
        return float(self._state.train_epoch(order, batch, self._key(epoch), float(lr),
                                             float(self.config.weight_decay)))

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None
                       ) -> tuple[float, list[PhaseTiming]]:
        """The kernels' own phase timers (``SparseCFN.set_profiling``; phases ``cfn_cpu.PHASE_NAMES``)."""
        names = _kernels.PHASE_NAMES
        hook = None if ranges is None else _range_hook(names, ranges)
        self._state.set_profiling(True, hook)
        try:
            loss = self.train_epoch(epoch, lr)
            log = self._state.profile_log()
        finally:
            self._state.set_profiling(False)
        timings = [(names[phase], float(log[batch, phase, 0]), float(log[batch, phase, 1]), batch)
                   for batch in range(log.shape[0]) for phase in range(log.shape[1]) if log[batch, phase, 1] > 0]
        return loss, timings

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        rows = self._rows(rows)
        self._float32_twin = None
        return float(self._state.step(rows, self._key(epoch), float(lr), float(self.config.weight_decay), True))

    #: The stages of one training step that :meth:`run_stage` re-runs, in the step's order.
    STAGES = ("batch_setup", "encode", "output", "input_update", "fold")

    def run_stage(self, stage: str, rows: np.ndarray, epoch: int, lr: float) -> None:
        """Re-run one stage of the training step on the buffers the last ``sgd_step(rows, epoch, lr)``
        left, so that micro-benchmarks time the stages one by one (docs/engine_api.md, "Per-stage hook").
        A measuring tool, not training: the update stages apply their update again."""
        if stage not in self.STAGES:
            raise ValueError(f"stage must be one of {', '.join(self.STAGES)}, got {stage!r}")
        rows = self._rows(rows)
        self._float32_twin = None
        self._state.run_phase(self.STAGES.index(stage), rows, self._key(epoch), float(lr),
                              float(self.config.weight_decay))

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        rows = self._rows(rows)
        st = self._float32_state()      # bfloat16: the gradient at the float32 values of the weights
        grads = {name: np.zeros_like(getattr(st, name)) for name in ("win", "b_in", "s_in_t", "wout", "bout", "sout")}
        for name in ("dense_w", "dense_b", "dense_s"):
            grads[name] = [None] + [np.zeros_like(a) for a in getattr(st, name)[1:]]
        st.set_grads(grads)
        try:
            loss = float(st.step(rows, self._key(epoch), 0.0, float(self.config.weight_decay), False))
        finally:
            st.set_grads(None)
        side = self.side_dim > 0
        out = [Layer(grads["win"].T.copy(), grads["b_in"], grads["s_in_t"].T.copy() if side else None)]
        for lev in range(1, len(self.widths) - 2):
            out.append(Layer(grads["dense_w"][lev], grads["dense_b"][lev], grads["dense_s"][lev] if side else None))
        out.append(Layer(grads["wout"], grads["bout"], grads["sout"] if side else None))
        return loss, out

    # ---------------------------------------------------------------- parameters
    def get_layers(self) -> list[Layer]:
        return [Layer(w, b, s) for w, b, s in self._state.export()]

    def set_layers(self, layers: list[Layer]) -> None:
        _check_layers(layers, self.widths[0], self.side_dim, self.widths)
        self._float32_twin = None
        self._state.load(layers)

    def max_abs_param(self) -> float:
        """``max |θ|`` (NaN if any parameter is NaN), read in place: no export of the big matrices."""
        return float(self._state.max_abs())

    def snapshot(self) -> object:
        """The parameters as the kernels hold them.  The arrays of a snapshot nobody holds any more are
        reused by the next one (the trainer takes one per epoch: no fresh pages to fault in each time)."""
        spare = self._spare_snapshots.pop() if self._spare_snapshots else None
        snap = _Snapshot(self._state.snapshot(spare))
        weakref.finalize(snap, self._spare_snapshots.append, snap.state[1])
        return snap

    def restore(self, snapshot: object) -> None:
        self._float32_twin = None
        if isinstance(snapshot, list):  # canonical layers
            self.set_layers(snapshot)
        else:
            self._state.restore(snapshot.state if isinstance(snapshot, _Snapshot) else snapshot)

    # ---------------------------------------------------------------- inference
    def _inference_inputs(self, inputs: sp.csr_matrix,
                          side: np.ndarray | None) -> tuple[sp.csr_matrix, np.ndarray | None]:
        if not sp.issparse(inputs):
            raise TypeError(f"inputs must be a scipy.sparse matrix, got {type(inputs).__name__}")
        inputs = sp.csr_matrix(inputs, dtype=np.float32)
        if inputs.shape[1] != self.widths[0]:
            raise ValueError(f"inputs must have {self.widths[0]} columns, got {inputs.shape[1]}")
        if side is None:
            # the reference simply leaves the side terms out: the same as a zero side vector
            side = np.zeros((inputs.shape[0], self.side_dim), np.float32) if self.side_dim else None
        else:
            side = np.ascontiguousarray(side, dtype=np.float32)
            if self.side_dim == 0:
                raise ValueError("side information given, but the network has no side weights")
            if side.ndim != 2 or side.shape != (inputs.shape[0], self.side_dim):
                raise ValueError(f"side must have shape ({inputs.shape[0]}, {self.side_dim}), got {side.shape}")
        return inputs, side

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        inputs, side = self._inference_inputs(inputs, side)
        return self._float32_state().encode(inputs.indptr, inputs.indices, inputs.data, side)

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        inputs, side = self._inference_inputs(inputs, side)
        rows = np.ascontiguousarray(rows, dtype=np.int64).ravel()
        cols = np.ascontiguousarray(cols, dtype=np.int64).ravel()
        if len(rows) != len(cols):
            raise ValueError(f"rows and cols differ in length: {len(rows)} and {len(cols)}")
        if len(rows) == 0:
            return np.zeros(0, np.float32)
        if rows.min() < 0 or rows.max() >= inputs.shape[0]:
            raise IndexError(f"rows must lie in [0, {inputs.shape[0]})")
        if cols.min() < 0 or cols.max() >= self.widths[-1]:
            raise IndexError(f"cols must lie in [0, {self.widths[-1]})")
        needed, local = np.unique(rows, return_inverse=True)
        sub = inputs[needed]
        state = self._float32_state()
        codes = state.encode(sub.indptr, sub.indices, sub.data, None if side is None else side[needed])
        return state.predict(codes, np.ascontiguousarray(local, dtype=np.int64), rows, cols, side)

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        """The output layer in the kernels: each value one fixed sequence of operations, whatever the numbers
        of rows and columns asked for (a user's scores do not depend on the batch)."""
        return self._float32_state().decode(codes, side if self.side_dim else None, cols)

    def _float32_state(self) -> _kernels.SparseCFN:
        """The kernels' state in float32: this engine's own, or for bfloat16 storage a float32 copy of its
        exported values (made once per set of parameters; the inference kernels read float32 rows)."""
        if not self._state.bf16:
            return self._state
        if self._float32_twin is None:
            twin = self._kernel_state(1, bf16=False)     # never trains: the smallest buffers
            twin.nthreads = self._state.nthreads
            twin.load_values_of(self._state)             # load(export()), without the canonical layout
            self._float32_twin = twin
        self._float32_twin.nthreads = self._state.nthreads
        return self._float32_twin

    def _kernel_state(self, batch_size: int, bf16: bool) -> _kernels.SparseCFN:
        """The kernels' state over this engine's training data and settings (parameters zero)."""
        config, samples = self.config, self.samples
        return _kernels.SparseCFN(self.widths, self.side_dim, samples.indptr, samples.indices, samples.data, self.side,
                                  float(config.alpha), float(config.beta), mask_threshold(config.mask_ratio),
                                  batch_size, 1, bf16, ROUND_SALT, config.dropout != 0,
                                  dropout_threshold(config.dropout), float(dropout_scale(config.dropout)), DROPOUT_SALT)


class _Snapshot:
    """A snapshot of the kernels' parameters (``state``: the scale and the arrays)."""

    __slots__ = ("state", "__weakref__")

    def __init__(self, state: tuple) -> None:
        self.state = state


# ----------------------------------------------------------------------------- validation
def _check_csr(matrix: sp.csr_matrix, what: str) -> None:
    if matrix.nnz and not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{what} contains NaN or infinite values")
    if not matrix.has_canonical_format:
        copy = matrix.copy()
        copy.sum_duplicates()
        if copy.nnz != matrix.nnz:
            raise ValueError(f"{what} has duplicate (row, column) entries; call sum_duplicates() first")


def _check_layers(layers: list[Layer], n_inputs: int, side_dim: int,
                  widths: list[int] | None = None) -> list[int]:
    if len(layers) < 2:
        raise ValueError(f"a CFN network needs at least 2 layers (one hidden), got {len(layers)}")
    found = [n_inputs]
    for index, layer in enumerate(layers):
        weight = np.asarray(layer.weight)
        fan_out, fan_in = weight.shape if weight.ndim == 2 else (-1, -1)
        if fan_in != found[-1]:
            raise ValueError(f"layer {index} weight has shape {weight.shape}; expected fan_in {found[-1]}")
        if np.shape(layer.bias) != (fan_out,):
            raise ValueError(f"layer {index} bias has shape {np.shape(layer.bias)}; expected ({fan_out},)")
        if side_dim:
            if layer.side_weight is None or np.shape(layer.side_weight) != (fan_out, side_dim):
                raise ValueError(f"layer {index} side_weight must have shape ({fan_out}, {side_dim}), got "
                                 f"{None if layer.side_weight is None else np.shape(layer.side_weight)}")
        elif layer.side_weight is not None and np.size(layer.side_weight):
            raise ValueError(f"layer {index} has side weights but no side information was given")
        for array in layer.arrays():
            if not all_finite(array):
                raise ValueError(f"layer {index} has NaN or infinite parameters")
        found.append(fan_out)
    if found[-1] != n_inputs:
        raise ValueError(f"the output layer has {found[-1]} units; expected {n_inputs} (an autoencoder)")
    if widths is not None and list(widths) != found:
        raise ValueError(f"layer widths {found} differ from the engine's {list(widths)}")
    return found
