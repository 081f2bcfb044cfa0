"""The CUDA engine: CFN training and inference on one GPU, hand-written kernels loaded by CuPy.

Same maths as the NumPy reference (:mod:`cfn_fast.backends.numpy_backend`), op for op, but sparse:
a mini-batch costs O(known entries x hidden width), never O(batch x n_inputs).

* The kernels are CUDA C in ``kernels/cuda/*.cu`` (package data of ``cfn_fast.kernels.cuda``), compiled
  once through ONE :class:`cupy.RawModule` on the first GPU use (never at ``import cfn_fast``) and
  cached by CuPy on disk (:mod:`cfn_fast.backends.cuda_module`).  The engine is assembled from its
  parts: the training step's launches (:mod:`~cfn_fast.backends.cuda_launch`), inference
  (:mod:`~cfn_fast.backends.cuda_infer`) and the host-side planning (:mod:`~cfn_fast.backends.cuda_plan`).
  cuBLAS (``cupy.matmul``) does the dense hidden-to-hidden layers.
* Corruption uses the reference's counter-based hash (splitmix64 of the epoch key + the entry's
  global CSR position) with the all-hidden swap rule; the epoch's sample order is
  :func:`~cfn_fast.backends.base.epoch_order`, computed on the host once per epoch and uploaded.
* Nothing goes back to the host per mini-batch: batching, corruption, loss partial sums and the
  SGD update stay on the device; the loss is read back once per epoch.  Every step is the same
  fixed launch sequence of six kernels (``kernels/cuda/cfn_train.cu``), so runs of steps are
  captured into CUDA graphs and replayed (networks with one hidden layer; deeper ones launch eagerly).
* Deterministic: with the default ``scatter="segment"`` no float atomics are used; every sum has a
  fixed order, so a seed gives the same bits on every run (``scatter="atomic"`` does not).
* Exact weight decay at sparse cost: the input weight (stored transposed, n_inputs x H) and the
  output weight, bias and side weight (n_inputs rows) live as ``W = s * V``.  A step multiplies
  ``s`` by ``1 - lr*lambda`` (a host float, planned per epoch, no sync) and moves only the touched
  rows of ``V`` by ``-(lr/B) g / s_new``; ``V`` is folded (``V *= s; s = 1``) before ``s`` gets small.
  Small dense parameters take the plain update ``p <- (1 - lr*lambda) p - (lr/B) g``.
* :meth:`CudaEngine.snapshot` is an on-device copy taken lazily (on the next write), so the trainer's
  "keep the last good epoch" costs one device-to-device copy per epoch and one copy of memory.
"""
from __future__ import annotations

import math
import os
import time
import warnings
import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..corruption import mask_threshold
from ..network import Layer
from .base import Engine, PhaseTiming, Ranges, TrainConfig, epoch_order
from .cuda_infer import INFER_ROWS, Inference
from .cuda_launch import SEGMENT_TABLE_LIMIT, DeviceParams, StepLaunches

# the kernel module (sources, NVRTC options, compilation) and the host-side planning (NumPy only)
# live apart; re-exported here, where callers have found them
from .cuda_module import COMPILE_OPTIONS, KERNEL_NAMES, compiled_kernels, kernel_source, load_cupy
from .cuda_plan import (
    FOLD_BELOW,
    MAX_THREADS,
    NCOEF,
    SMEM_LIMIT,
    SPARSE_KERNELS,
    StepPlan,
    batch_sizes,
    device_limits,
    launch_plan,
    max_batch_nnz,
    memory_plan,
    multiprocessors,
    pad4,
    plan_steps,
    resident_blocks,
)

__all__ = ["CudaEngine", "kernel_source", "compiled_kernels", "KERNEL_NAMES", "COMPILE_OPTIONS", "batch_sizes",
           "max_batch_nnz", "plan_steps", "StepPlan", "NCOEF", "FOLD_BELOW", "memory_plan", "resident_blocks",
           "launch_plan", "SPARSE_KERNELS", "INFER_ROWS", "SEGMENT_TABLE_LIMIT"]


# ============================================================================ options
def _env(name: str, default: str | None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


# ============================================================================ device parameters
class _Snapshot:
    """An on-device copy of the parameters, taken lazily (copy on the next write).

    ``snapshot()`` returns at once; the copy is made only when the engine is about to change
    its parameters and the handle is still alive, so the usual "keep the last good epoch"
    pattern holds one copy on the device, not two.
    """

    __slots__ = ("generation", "arrays", "scale", "__weakref__")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.arrays: list | None = None
        self.scale: float | None = None


# ============================================================================ the engine
class CudaEngine(StepLaunches, Inference, Engine):
    """CFN training and inference on one CUDA GPU (CuPy + hand-written kernels).

    Options (keyword arguments, else environment variables, else defaults):

    ``scatter``   ``"segment"`` (default: deterministic per-column sums, no float atomics) or
                  ``"atomic"`` (per-entry float atomics); env ``CFN_CUDA_SCATTER``.
    ``graphs``    capture runs of steps into CUDA graphs (default on; env ``CFN_CUDA_GRAPHS=0`` off).
    ``min_per_warp``, ``blocks_per_sm``, ``block_threads``: launch tuning of the sparse kernels
                  (default ``blocks_per_sm``: what each compiled kernel's registers and shared
                  memory allow, so every sparse kernel runs in one wave; see :func:`launch_plan`).
    """

    name = "cuda"
    device = "cuda"
    phase_timer = "CUDA events per kernel launch (CUDA graphs off)"

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, *, scatter: str | None = None, graphs: bool | None = None,
                 min_per_warp: int | None = None, blocks_per_sm: int | None = None,
                 block_threads: int | None = None) -> None:
        super().__init__(layers, config, samples, side)
        _check_samples(samples, self.side)
        cp = load_cupy()
        self._cp = cp
        self._check_layers(layers)
        n_samples, n_inputs = samples.shape
        self._n_inputs = n_inputs
        self._L = len(layers)
        self._widths = [n_inputs] + [layer.weight.shape[0] for layer in layers[:-1]]   # h_0 .. h_{L-1}
        self._hp = [0] + [pad4(w) for w in self._widths[1:]]                             # padded widths
        self._sdim = 0 if self.side is None else int(self.side.shape[1])
        # side weights kept as given when the engine trains without side information
        self._unused_side = None if self.side is not None else [
            None if layer.side_weight is None else layer.side_weight.copy() for layer in layers]
        self._threshold = mask_threshold(config.mask_ratio)
        self._scale = 1.0
        self._generation = 0
        self._pending: list[weakref.ref] = []
        self._graphs: dict[int, Any] = {}
        self._warm = False
        self._order_cache: tuple[int, np.ndarray] | None = None

        # ---- options
        scatter = scatter or _env("CFN_CUDA_SCATTER", "segment")
        if scatter not in ("segment", "atomic"):
            raise ValueError(f"scatter must be 'segment' or 'atomic', got {scatter!r}")
        if graphs is None:
            graphs = _env("CFN_CUDA_GRAPHS", "1") not in ("0", "false", "no", "off")
        self._use_graphs = bool(graphs) and self._L == 2
        self._min_per_warp = int(min_per_warp or _env("CFN_CUDA_MIN_PER_WARP", "16"))
        threads = int(block_threads or _env("CFN_CUDA_BLOCK_THREADS", str(MAX_THREADS)))
        if threads % 32 or not 32 <= threads <= MAX_THREADS:
            raise ValueError(f"block_threads must be a multiple of 32 in [32, {MAX_THREADS}], got {threads}")
        self._threads = threads
        # blocks per SM: fixed when asked for, else what the compiled kernels' occupancy allows
        self._per_sm = int(blocks_per_sm or _env("CFN_CUDA_BLOCKS_PER_SM", "0"))
        self._n_sm = multiprocessors(cp)
        self._limits = device_limits(cp)
        self._blocks = max(1, (self._per_sm or 4) * self._n_sm)
        for hp in self._hp[1:]:
            if hp * 4 > SMEM_LIMIT:
                raise ValueError(f"hidden width {hp} is too wide for the CUDA engine (at most {SMEM_LIMIT // 4})")

        self._kernels = compiled_kernels(cp)
        self._stream = cp.cuda.Stream(non_blocking=True)
        counts = np.diff(samples.indptr).astype(np.int64)
        self._counts = counts
        with self._stream:
            i32 = np.int32
            self.d_indptr = cp.asarray(samples.indptr.astype(np.int64))
            self.d_indices = cp.asarray(samples.indices.astype(np.int32))
            self.d_data = cp.asarray(samples.data.astype(np.float32))
            self.d_side = cp.asarray(self.side) if self.side is not None else cp.zeros(1, dtype=np.float32)
            self._dummy_f = cp.zeros(4, dtype=np.float32)
            self._dummy_i = cp.zeros(4, dtype=i32)
            n_order = max(len(self.trainable), 1)
            self.d_order = cp.zeros(n_order, dtype=i32)
            self.d_estart = cp.zeros(n_order + 1, dtype=np.int64)
            self.d_pswap = cp.zeros(n_order, dtype=i32)
            self.d_ebase = cp.zeros(1, dtype=np.int64)
            self._alloc_entry_tables(int(counts[self.trainable].sum()) if len(self.trainable) else 0)
            n_steps = max(len(batch_sizes(len(self.trainable), config.batch_size)), 1)
            self.d_coef = cp.zeros(n_steps * NCOEF, dtype=np.float32)
            self.d_key = cp.zeros(1, dtype=np.uint64)
            self.d_ctl = cp.zeros(2, dtype=i32)
            self.d_bh = cp.zeros(4, dtype=i32)
            self.d_loss = cp.zeros(1, dtype=np.float64)
            self.d_ntouched = cp.zeros(1, dtype=i32)
            if scatter == "segment":
                self.d_stamp = cp.zeros(n_inputs, dtype=i32)
                self.d_touched = cp.zeros(n_inputs, dtype=i32)
            self._scatter = scatter
            self._params = self._upload_params(layers)
            self._cap = 0
            self._ent_cap = 0
            self._ensure_capacity(config.batch_size, max_batch_nnz(counts, config.batch_size))

    # ------------------------------------------------------------------ set-up helpers
    def _check_layers(self, layers: list[Layer]) -> None:
        n_inputs = self.samples.shape[1]
        if len(layers) < 2:
            raise ValueError("the CUDA engine needs at least one hidden layer (two Linear layers)")
        if layers[0].weight.shape[1] != n_inputs or layers[-1].weight.shape[0] != n_inputs:
            raise ValueError(f"the network's input/output width must be the number of inputs ({n_inputs}), "
                             f"got {layers[0].weight.shape[1]} and {layers[-1].weight.shape[0]}")
        for index, layer in enumerate(layers):
            fan_out, fan_in = layer.weight.shape
            if index > 0 and fan_in != layers[index - 1].weight.shape[0]:
                raise ValueError(f"layer {index} expects {fan_in} inputs but layer {index - 1} has "
                                 f"{layers[index - 1].weight.shape[0]} outputs")
            if layer.bias.shape != (fan_out,):
                raise ValueError(f"layer {index} bias must have shape ({fan_out},), got {layer.bias.shape}")
            if self.side is not None:
                if layer.side_weight is None or layer.side_weight.shape != (fan_out, self.side.shape[1]):
                    raise ValueError(f"layer {index} needs a side weight of shape ({fan_out}, {self.side.shape[1]}) "
                                     "to use the side information")

    def _upload_params(self, layers: list[Layer]) -> DeviceParams:
        cp, L, hp, S = self._cp, self._L, self._hp, self._sdim
        w, b, s = [], [], []
        for index in range(L):
            if index == 0:
                w.append(cp.zeros((self._n_inputs, hp[1]), dtype=np.float32))
            elif index == L - 1:
                w.append(cp.zeros((self._n_inputs, hp[L - 1]), dtype=np.float32))
            else:
                w.append(cp.zeros((hp[index + 1], hp[index]), dtype=np.float32))
            fan_out = layers[index].weight.shape[0]
            b.append(cp.zeros(fan_out, dtype=np.float32))
            s.append(cp.zeros((fan_out, S), dtype=np.float32) if S else cp.zeros(1, dtype=np.float32))
        params = DeviceParams(w, b, s)
        self._write_params(params, layers)
        return params

    def _write_params(self, params: DeviceParams, layers: list[Layer]) -> None:
        """Canonical layers -> device layout, in place (the captured graphs keep their pointers)."""
        cp, L = self._cp, self._L
        for index, layer in enumerate(layers):
            weight = np.asarray(layer.weight, dtype=np.float32)
            fan_out, fan_in = weight.shape
            target = params.w[index]
            target.fill(0)
            if index == 0:
                target[:, :fan_out] = cp.asarray(weight).T
            elif index == L - 1:
                target[:, :fan_in] = cp.asarray(weight)
            else:
                target[:fan_out, :fan_in] = cp.asarray(weight)
            params.b[index][...] = cp.asarray(np.asarray(layer.bias, dtype=np.float32))
            if self._sdim:
                params.s[index][...] = cp.asarray(np.asarray(layer.side_weight, dtype=np.float32))

    # ------------------------------------------------------------------ snapshots (copy on write)
    def _before_write(self) -> None:
        """Materialise the live lazy snapshots before the parameters change."""
        live = [s for s in (ref() for ref in self._pending) if s is not None and s.arrays is None]
        self._pending = []
        if live:
            with self._stream:
                arrays = [a.copy() for a in self._params.arrays()]
            for snap in live:
                snap.arrays, snap.scale = arrays, self._scale
        self._generation += 1

    def snapshot(self) -> object:
        snap = _Snapshot(self._generation)
        self._pending.append(weakref.ref(snap))
        return snap

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, _Snapshot):
            self.set_layers(snapshot)  # type: ignore[arg-type]
            return
        if snapshot.arrays is None:
            if snapshot.generation != self._generation:
                raise RuntimeError("this snapshot belongs to another CUDA engine or was never materialised")
            return                      # the parameters have not changed since the snapshot
        self._before_write()
        with self._stream:
            for dst, src in zip(self._params.arrays(), snapshot.arrays, strict=True):
                dst[...] = src
        self._scale = float(snapshot.scale)

    # ------------------------------------------------------------------ training
    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ValueError("rows must be a one-dimensional integer array of sample indices")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.samples.shape[0]):
            raise ValueError(f"sample indices must lie in [0, {self.samples.shape[0]})")
        return rows

    def train_epoch(self, epoch: int, lr: float) -> float:
        n = len(self.trainable)
        if n == 0:
            return 0.0
        cfg = self.config
        if self._order_cache is not None and self._order_cache[0] == epoch:
            order = self._order_cache[1]
        else:
            order = epoch_order(cfg.seed, epoch, self.trainable)
        sizes = batch_sizes(n, cfg.batch_size)
        plan = plan_steps(sizes, lr, cfg.weight_decay, self._scale)
        self._before_write()
        with self._stream:
            self._upload_batch_inputs(order, plan.coef, epoch)
            for t0, length, fold in plan.chunks:
                if fold is not None:
                    self._fold(fold)
                self._run_chunk(t0, length, n, sizes, plan.coef)
            self._scale = plan.end_scale
            # the next epoch's order is computed on the host while the device works
            self._order_cache = (epoch + 1, epoch_order(cfg.seed, epoch + 1, self.trainable))
            loss = float(self.d_loss.get()[0])
        return loss

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None
                       ) -> tuple[float, list[PhaseTiming]]:
        """A CUDA event pair around every kernel launch (named after the kernel); CUDA-graph capture
        is off for the epoch so that every launch is seen (the results are the same bits)."""
        cp, stream, kernels, graphs = self._cp, self._stream, self._kernels, self._use_graphs
        launches: list[tuple[str, int, Any, Any]] = []
        batch = [-1]

        def timed(name: str, kernel: Any) -> Any:
            def launch(*args: Any, **kwargs: Any) -> Any:
                if name == "cfn_batch_setup":
                    batch[0] += 1
                begin, end = cp.cuda.Event(), cp.cuda.Event()
                if ranges is not None:
                    ranges.push(name)
                try:
                    begin.record(stream)
                    result = kernel(*args, **kwargs)
                    end.record(stream)
                finally:
                    if ranges is not None:
                        ranges.pop()
                launches.append((name, batch[0], begin, end))
                return result
            return launch

        self._kernels = {name: timed(name, kernel) for name, kernel in kernels.items()}
        self._use_graphs = False
        try:
            host_start = time.monotonic()
            loss = self.train_epoch(epoch, lr)
            stream.synchronize()
        finally:
            self._kernels, self._use_graphs = kernels, graphs
        if not launches:
            return loss, []
        origin = launches[0][2]
        return loss, [(name, host_start + 1e-3 * cp.cuda.get_elapsed_time(origin, begin),
                       1e-3 * cp.cuda.get_elapsed_time(begin, end), b) for name, b, begin, end in launches]

    def _run_chunk(self, t0: int, length: int, n_order: int, sizes: np.ndarray, coef: np.ndarray) -> None:
        B = self.config.batch_size
        if self._use_graphs and self._warm:
            graph = self._graphs.get(length) or self._capture(length, n_order)
            if graph is not None:
                graph.launch(self._stream)
                return
        for t in range(t0, t0 + length):
            self._launch_step(self._params, n_order, B, int(sizes[t]), coef[t], fuse=True)
        self._warm = True               # every kernel has run once: modules are loaded

    def _capture(self, length: int, n_order: int):
        """A CUDA graph of ``length`` consecutive training steps (None if capture fails)."""
        stream = self._stream
        try:
            stream.begin_capture()
        except Exception as exc:  # pragma: no cover - depends on the CUDA/CuPy build
            warnings.warn(f"CUDA graph capture unavailable ({exc}); launching kernels one by one", RuntimeWarning,
                          stacklevel=2)
            self._use_graphs = False
            return None
        try:
            for _ in range(length):
                self._launch_step(self._params, n_order, self.config.batch_size, fuse=True)
        except Exception as exc:
            try:
                stream.end_capture()
            except Exception:
                pass
            warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                          "launching kernels one by one", RuntimeWarning, stacklevel=2)
            self._use_graphs = False
            return None
        graph = stream.end_capture()
        self._graphs[length] = graph
        return graph

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        rows = self._check_rows(rows)
        if rows.size == 0:
            return 0.0
        self._ensure_capacity(len(rows), int(self._counts[rows].sum()))
        plan = plan_steps(np.array([len(rows)]), lr, self.config.weight_decay, self._scale, 1)
        self._before_write()
        with self._stream:
            self._upload_batch_inputs(rows, plan.coef, epoch, len(rows))
            if plan.chunks[0][2] is not None:
                self._fold(plan.chunks[0][2])
            self._launch_step(self._params, len(rows), len(rows), len(rows), plan.coef[0])
            self._scale = plan.end_scale
            return float(self.d_loss.get()[0])

    #: The stages of the training step :meth:`run_stage` runs alone (the whole step is :meth:`sgd_step`).
    STAGES = ("fold",)

    def run_stage(self, stage: str, rows: np.ndarray, epoch: int, lr: float) -> None:
        """Run one stage of the training step alone and wait for it, so that micro-benchmarks time it
        (docs/engine_api.md, "Per-stage hook"): ``fold`` is the weight-decay fold, done with a factor 1
        (the same kernels and traffic, the parameters unchanged).  ``rows``, ``epoch``, ``lr``: unused by it."""
        if stage not in self.STAGES:
            raise ValueError(f"stage must be one of {', '.join(self.STAGES)}, got {stage!r}")
        with self._stream:
            self._fold(1.0)
        self._stream.synchronize()

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        rows = self._check_rows(rows)
        cp, p = self._cp, self._params
        self._ensure_capacity(max(len(rows), 1), int(self._counts[rows].sum()) if rows.size else 0)
        coef = np.array([[self._scale, -1.0, -1.0, 1.0]], dtype=np.float32)
        with self._stream:
            grads = DeviceParams([cp.zeros_like(a) for a in p.w], [cp.zeros_like(a) for a in p.b],
                            [cp.zeros_like(a) for a in p.s])
            loss = 0.0
            if rows.size:
                self._upload_batch_inputs(rows, coef, epoch, len(rows))
                self._launch_step(grads, len(rows), len(rows), len(rows), coef[0], grads=True)
                loss = float(self.d_loss.get()[0])
            layers = self._export(grads, 1.0, grads=True)
        return loss, layers

    # ------------------------------------------------------------------ parameters
    def _export(self, params: DeviceParams, scale: float, grads: bool = False) -> list[Layer]:
        """Device layout -> canonical float32 layers (the lazy scale multiplied in)."""
        cp, L, widths = self._cp, self._L, self._widths
        s32 = np.float32(scale)
        out = []
        with self._stream:
            for index in range(L):
                if index == 0:
                    weight = self._export_transposed(params.w[0], widths[1], s32)
                    bias = params.b[0].get()
                elif index == L - 1:
                    weight = (params.w[L - 1][:, :widths[L - 1]] * s32).get()
                    bias = (params.b[L - 1] * s32).get()
                else:
                    weight = cp.ascontiguousarray(params.w[index][:widths[index + 1], :widths[index]]).get()
                    bias = params.b[index].get()
                side_w = None
                if self._sdim:
                    side_w = (params.s[index] * s32).get() if index == L - 1 else params.s[index].get()
                elif self._unused_side is not None and not grads:
                    side_w = None if self._unused_side[index] is None else self._unused_side[index].copy()
                out.append(Layer(weight=np.ascontiguousarray(weight, dtype=np.float32),
                                 bias=np.ascontiguousarray(bias, dtype=np.float32),
                                 side_weight=None if side_w is None else np.ascontiguousarray(side_w, np.float32)))
        return out

    def _export_transposed(self, v_t, width: int, s32: np.float32, chunk_bytes: int = 64 << 20) -> np.ndarray:
        """``(s * v_t[:, :width]).T`` as a host array, transposed on the device in column chunks
        (bounded scratch memory, no slow host transpose)."""
        cp = self._cp
        n = v_t.shape[0]
        out = np.empty((width, n), dtype=np.float32)
        step = max(1, chunk_bytes // max(1, 4 * width))
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            out[:, c0:c1] = cp.ascontiguousarray((v_t[c0:c1, :width] * s32).T).get()
        return out

    def max_abs_param(self) -> float:
        """``max |theta|`` over every parameter (NaN if any is NaN), computed on the device.

        The divergence check needs only this number; ``get_layers()`` would copy every parameter
        to the host each epoch (hundreds of MB at ML-10M size).
        """
        cp, L, p = self._cp, self._L, self._params
        lazy = {id(p.w[0]), id(p.w[L - 1]), id(p.b[L - 1])} | ({id(p.s[L - 1])} if self._sdim else set())
        largest = 0.0
        with self._stream:
            for a in p.arrays():
                if a.size == 0 or (not self._sdim and any(a is x for x in p.s)):
                    continue
                peak = max(abs(float(cp.max(a))), abs(float(cp.min(a))))
                if id(a) in lazy:
                    peak *= abs(self._scale)
                if not math.isfinite(peak):
                    return float("nan")
                largest = max(largest, peak)
        if self._unused_side is not None:
            for w in self._unused_side:
                if w is not None and w.size:
                    largest = max(largest, float(np.max(np.abs(w))))
        return largest

    def get_layers(self) -> list[Layer]:
        return self._export(self._params, self._scale)

    def set_layers(self, layers: list[Layer]) -> None:
        self._check_layers(layers)
        for index, layer in enumerate(layers):
            expected = (self._widths[index + 1] if index < self._L - 1 else self._n_inputs, self._widths[index])
            if layer.weight.shape != expected:
                raise ValueError(f"layer {index} has shape {layer.weight.shape}, the engine's is {expected}")
        self._before_write()
        with self._stream:
            self._write_params(self._params, layers)
        self._scale = 1.0
        if self._unused_side is not None:
            self._unused_side = [None if layer.side_weight is None else layer.side_weight.copy() for layer in layers]

    # ------------------------------------------------------------------ introspection
    def device_bytes(self) -> int:
        """Bytes of the engine's persistent device buffers (parameters, data, scratch)."""
        seen, total = set(), 0
        for value in vars(self).values():
            for a in (value if isinstance(value, list) else [value]):
                if isinstance(a, self._cp.ndarray) and id(a) not in seen:
                    seen.add(id(a))
                    total += int(a.nbytes)
        return total + sum(int(a.nbytes) for a in self._params.arrays())

    @property
    def stream(self):
        """The CUDA stream every launch of this engine goes to (record timing events on it)."""
        return self._stream

    @property
    def uses_graphs(self) -> bool:
        return self._use_graphs

    @property
    def scatter_mode(self) -> str:
        return self._scatter


def _check_samples(samples: sp.csr_matrix, side: np.ndarray | None) -> None:
    """Clear errors for input the kernels cannot take (instead of silently wrong gradients)."""
    if samples.shape[1] >= 2 ** 31 or samples.shape[0] >= 2 ** 31:
        raise ValueError(f"the CUDA engine indexes samples and inputs with 32-bit integers; got shape {samples.shape}")
    if samples.nnz and not np.all(np.isfinite(samples.data)):
        raise ValueError("the training matrix contains NaN or infinite values")
    if side is not None and not np.all(np.isfinite(side)):
        raise ValueError("the side information contains NaN or infinite values")
    if not samples.has_canonical_format:
        check = samples.copy()
        check.sort_indices()
        same = np.diff(check.indices) == 0
        row_start = np.zeros(check.nnz, dtype=bool)
        row_start[check.indptr[1:-1][check.indptr[1:-1] < check.nnz]] = True
        if check.nnz > 1 and np.any(same & ~row_start[1:]):
            raise ValueError("the training matrix has duplicate entries (one (sample, input) pair stored twice); "
                             "sum or drop them first (scipy: matrix.sum_duplicates())")
