"""The CUDA engine: CFN training and inference on one GPU, hand-written kernels loaded by CuPy.

Same maths as the NumPy reference (:mod:`cfn_fast.backends.numpy_backend`), op for op, but sparse:
a mini-batch costs O(known entries x hidden width), never O(batch x n_inputs).

* The kernels are CUDA C in ``kernels/cuda/*.cu`` (package data ``cfn_fast.kernels_cuda``), compiled
  once through ONE :class:`cupy.RawModule` on the first GPU use (never at ``import cfn_fast``) and
  cached by CuPy on disk.  cuBLAS (``cupy.matmul``) does the dense hidden-to-hidden layers.
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

import importlib
import math
import os
import re
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..corruption import epoch_key, mask_threshold
from ..network import Layer
from .base import Engine, TrainConfig, epoch_order
# host-side planning lives in cuda_plan (NumPy only); re-exported here, where callers have found it
from .cuda_plan import (FOLD_BELOW, MAX_THREADS, NCOEF, SMEM_LIMIT, SPARSE_KERNELS, StepPlan,  # noqa: F401
                        _device_limits, _kernel_attr, _multiprocessors, _pad4, batch_sizes, launch_plan,
                        max_batch_nnz, memory_plan, plan_steps, resident_blocks)

__all__ = ["CudaEngine", "kernel_source", "KERNEL_NAMES", "batch_sizes", "max_batch_nnz", "plan_steps",
           "StepPlan", "NCOEF", "FOLD_BELOW", "memory_plan", "resident_blocks", "launch_plan", "SPARSE_KERNELS"]

#: every ``extern "C"`` kernel the engine fetches from the module
KERNEL_NAMES = ("cfn_epoch_tables", "cfn_batch_setup", "cfn_encode", "cfn_hidden_act", "cfn_output", "cfn_hidden_delta",
                "cfn_bias_side", "cfn_scatter_atomic", "cfn_scatter_segment", "cfn_scale", "cfn_predict_pairs")
#: the load-balanced sparse kernels, whose grids are sized from their occupancy
INFER_ROWS = 2048         # rows encoded per launch sequence at inference
SEGMENT_TABLE_LIMIT = 2 << 30   # bytes of the segment scatter's column tables (n_inputs x batch x 8)
_COMPILE_OPTIONS = ("-std=c++17",)


# ============================================================================ kernel source
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def _kernel_files() -> dict[str, str]:
    """``{file name: text}`` of the .cu/.cuh files: package data first, then the repository path."""
    roots: list[Any] = []
    try:
        from importlib.resources import files
        roots.append(files("cfn_fast.kernels_cuda"))
    except Exception:  # not installed as package data (in-place build), or an old importlib
        pass
    try:
        spec = importlib.util.find_spec("cfn_fast.kernels_cuda")
        if spec is not None and spec.submodule_search_locations:
            roots.extend(Path(p) for p in spec.submodule_search_locations)
    except Exception:
        pass
    roots.append(Path(__file__).resolve().parents[2] / "kernels" / "cuda")
    for root in roots:
        try:
            found = {p.name: p.read_text(encoding="utf-8") for p in root.iterdir()
                     if p.name.endswith((".cu", ".cuh"))}
        except (OSError, NotADirectoryError, AttributeError):
            continue
        if any(name.endswith(".cu") for name in found):
            return found
    raise FileNotFoundError("the CUDA kernel sources (kernels/cuda/*.cu, package data cfn_fast.kernels_cuda) "
                            "were not found; reinstall cfn_fast")


def kernel_source() -> str:
    """All ``.cu`` files concatenated into one translation unit, local headers inlined once."""
    files = _kernel_files()
    included: set[str] = set()

    def expand(text: str, origin: str) -> str:
        def include(match: re.Match) -> str:
            name = match.group(1)
            if name in included:
                return f"// (already included: {name})"
            if name not in files:
                raise FileNotFoundError(f"{origin} includes {name!r}, which is not among the CUDA sources")
            included.add(name)
            return f"// ---- begin {name}\n{expand(files[name], name)}\n// ---- end {name}"
        return _INCLUDE.sub(include, text)

    return "\n".join(f"// ==== {name}\n{expand(files[name], name)}" for name in sorted(files) if name.endswith(".cu"))


_MODULES: dict[tuple, Any] = {}


def _cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        from . import BackendUnavailable
        raise BackendUnavailable(f"the CUDA engine needs CuPy ({exc}); pip install 'cfn_fast[cuda13]'") from exc


def _kernels(cp) -> dict[str, Any]:
    """The compiled kernels (one RawModule per CuPy module, compiled on first use)."""
    from ..profiling import cuda_compile_options     # -lineinfo on request (Nsight Compute)
    options = cuda_compile_options(_COMPILE_OPTIONS)
    key = (id(cp), options)
    if key not in _MODULES:
        module = cp.RawModule(code=kernel_source(), options=options)
        _MODULES[key] = {name: module.get_function(name) for name in KERNEL_NAMES}
    return _MODULES[key]


# ============================================================================ host-side planning


def _env(name: str, default: str | None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


# ============================================================================ device parameters
class _Params:
    """Device parameters (or gradients) of the L layers in the engine's layout.

    ``w[0]``   input weight transposed, n_inputs x Hp1 (lazy scale)
    ``w[l]``   dense hidden layer l, Hp_{l+1} x Hp_l (0 < l < L-1)
    ``w[L-1]`` output weight, n_inputs x Hp_{L-1} (lazy scale)
    ``b[l]``   bias of layer l (``b[L-1]`` lazy);  ``s[l]`` side weight, fan_out x side_dim (``s[L-1]`` lazy)
    """

    def __init__(self, w: list, b: list, s: list) -> None:
        self.w, self.b, self.s = w, b, s

    def arrays(self) -> list:
        return [*self.w, *self.b, *self.s]


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
class CudaEngine(Engine):
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

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, *, scatter: str | None = None, graphs: bool | None = None,
                 min_per_warp: int | None = None, blocks_per_sm: int | None = None,
                 block_threads: int | None = None) -> None:
        super().__init__(layers, config, samples, side)
        _check_samples(samples, self.side)
        cp = _cupy()
        self._cp = cp
        self._check_layers(layers)
        n_samples, n_inputs = samples.shape
        self._n_inputs = n_inputs
        self._L = len(layers)
        self._widths = [n_inputs] + [layer.weight.shape[0] for layer in layers[:-1]]   # h_0 .. h_{L-1}
        self._hp = [0] + [_pad4(w) for w in self._widths[1:]]                             # padded widths
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
        self._n_sm = _multiprocessors(cp)
        self._limits = _device_limits(cp)
        self._blocks = max(1, (self._per_sm or 4) * self._n_sm)
        for hp in self._hp[1:]:
            if hp * 4 > SMEM_LIMIT:
                raise ValueError(f"hidden width {hp} is too wide for the CUDA engine (at most {SMEM_LIMIT // 4})")

        self._kernels = _kernels(cp)
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

    def _upload_params(self, layers: list[Layer]) -> _Params:
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
        params = _Params(w, b, s)
        self._write_params(params, layers)
        return params

    def _write_params(self, params: _Params, layers: list[Layer]) -> None:
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

    def _ensure_capacity(self, rows: int, nnz: int) -> None:
        """Scratch buffers for batches of up to ``rows`` samples and ``nnz`` known entries."""
        if rows <= self._cap and nnz <= self._ent_cap:
            return
        if nnz >= 2 ** 31 - 1:
            raise ValueError(f"a mini-batch with {nnz} known entries exceeds the CUDA engine's 2^31 limit; "
                             "lower batch_size")
        cp, L, hp = self._cp, self._L, self._hp
        rows, nnz = max(rows, self._cap, 1), max(nnz, self._ent_cap, 1)
        if self._scatter == "segment" and 8 * self._n_inputs * rows > SEGMENT_TABLE_LIMIT:
            raise ValueError(f"scatter='segment' needs {8 * self._n_inputs * rows / 2**30:.1f} GiB of tables for "
                             f"batches of {rows} samples over {self._n_inputs} inputs; use a smaller batch or "
                             "CudaEngine(..., scatter='atomic') (env CFN_CUDA_SCATTER=atomic)")
        self._graphs.clear()            # captured graphs point at the old buffers
        # fixed grids of the sparse kernels (graph-capturable): enough warps for the largest batch
        self._wpb1, self._wpbl = self._wpb(hp[1]), self._wpb(hp[L - 1])
        self._grid_enc = self._sparse_grid(nnz, self._wpb1, "cfn_encode", hp[1])
        self._grid_out = self._sparse_grid(nnz, self._wpbl, "cfn_output", hp[L - 1])
        self._grid_sct = self._sparse_grid(nnz, self._threads // 32, "cfn_scatter_atomic")
        # one warp per touched column: no more warps than columns a batch can touch
        touchable = min(self._n_inputs, nnz)
        self._grid_seg = int(max(1, min(self._resident_grid("cfn_scatter_segment", self._threads // 32),
                                         -(-touchable // (self._threads // 32)))))
        self._tw_enc = self._grid_enc * self._wpb1
        self._tw_out = self._grid_out * self._wpbl
        with self._stream:
            self.d_brow = cp.zeros(rows, dtype=np.int32)
            self.d_boff = cp.zeros(rows + 1, dtype=np.int32)
            self.d_rowdone = cp.zeros(rows + 1, dtype=np.int32)      # warps done per row (fused encode)
            self.d_rowdone_out = cp.zeros(rows + 1, dtype=np.int32)  # and of cfn_output (+ all warps)
            # warp partial rows: slot (warp + row), see cfn_row_total in kernels/cuda/cfn_common.cuh
            self.d_part1 = cp.zeros((self._tw_enc + rows, hp[1]), dtype=np.float32)
            self.d_partl = cp.zeros((self._tw_out + rows, hp[L - 1]), dtype=np.float32)
            self.d_lpart = cp.zeros(self._tw_out, dtype=np.float64)
            self.d_h = [None] + [cp.zeros((rows, hp[l]), dtype=np.float32) for l in range(1, L)]
            self.d_delta = [None] + [cp.zeros((rows, hp[l]), dtype=np.float32) for l in range(1, L)]
            # dense hidden layers (eager): products of cuBLAS, forward (z) and backward (dacc)
            self.d_z = [None] + [cp.zeros((rows, hp[l]), dtype=np.float32) if l >= 2 else None for l in range(1, L)]
            self.d_dacc = [None] + [cp.zeros((rows, hp[l]), dtype=np.float32) if l <= L - 2 else None
                                    for l in range(1, L)]
            if self._scatter == "atomic":
                self.d_edelta = cp.zeros(nnz, dtype=np.float32)
                self.d_td = self.d_tx = self._dummy_f
            else:
                table = self._n_inputs * rows
                self.d_edelta = self._dummy_f
                self.d_td = cp.zeros(table, dtype=np.float32)
                self.d_tx = cp.zeros(table, dtype=np.float32)
        self._cap, self._ent_cap = rows, nnz

    def _alloc_entry_tables(self, n: int) -> None:
        """The epoch's entry tables (column, value, 2*row + hidden) for ``n`` known entries."""
        cp, n = self._cp, max(int(n), 1)
        self.d_ecol = cp.zeros(n, dtype=np.int32)
        self.d_ex = cp.zeros(n, dtype=np.float32)
        self.d_erh = cp.zeros(n, dtype=np.int32)
        self._graphs.clear()            # captured graphs point at the old tables

    def _build_entry_tables(self, starts: np.ndarray, batch_size: int, csr, key, threshold: int, out) -> None:
        """Lay out the entries of the samples in ``d_order`` (device) batch after batch, once
        (cfn_epoch_tables); ``starts`` is the host prefix sum of their entry counts."""
        estart, ecol, ex, erh, pswap, d_order = out
        n = len(starts) - 1
        estart[:n + 1].set(starts)
        wpb = self._threads // 32
        blocks = int(max(1, min(4096, -(-n // wpb))))
        self._kernels["cfn_epoch_tables"]((blocks,), (self._threads,), (
            d_order, np.int32(n), np.int32(batch_size), estart, csr[0], csr[1], csr[2], key,
            np.uint32(threshold), ecol, ex, erh, pswap))

    # ------------------------------------------------------------------ launch helpers
    def _wpb(self, hp: int) -> int:
        """Warps per block of the sparse kernels (each warp holds one shared row of hp floats)."""
        return max(1, min(self._threads // 32, SMEM_LIMIT // (hp * 4)))

    def _resident_grid(self, kernel: str, wpb: int, smem: int = 0) -> int:
        """Blocks of ``kernel`` that run in ONE wave on the device (its occupancy x the SMs)."""
        if self._per_sm:
            return self._per_sm * self._n_sm
        fn = self._kernels[kernel]
        per_sm = resident_blocks(_kernel_attr(fn, "num_regs", 32), 32 * wpb, smem,
                                 _kernel_attr(fn, "shared_size_bytes"), self._limits)
        return per_sm * self._n_sm

    def _sparse_grid(self, nnz_bound: int, wpb: int, kernel: str = "cfn_encode", hp: int = 0) -> int:
        """Grid of a load-balanced sparse kernel: enough warps for ``nnz_bound`` entries at
        ``min_per_warp`` each, at most one wave (more warps only shrink each warp's range)."""
        wave = self._resident_grid(kernel, wpb, wpb * hp * 4)
        return int(max(1, min(wave, -(-nnz_bound // (self._min_per_warp * wpb)))))

    def _launch_step(self, tg: _Params, n_order: int, batch_arg: int, bt: int | None = None,
                     coef_row: np.ndarray | None = None, grads: bool = False, fuse: bool = False) -> None:
        """Enqueue one SGD step (or gradient evaluation) on the current stream.

        ``fuse``: cfn_encode also computes the first hidden layer's activations (one launch less
        per step); only where every batch row has known entries (training epochs: ``trainable``).

        Everything the kernels need per step is read from device memory (counter, coefficient
        table, batch description), so with one hidden layer this sequence is graph-capturable.
        ``bt``/``coef_row`` (host copies) are only used by the dense hidden layers.
        """
        cp, k, L, hp, S = self._cp, self._kernels, self._L, self._hp, self._sdim
        i32, f32 = np.int32, np.float32
        cfg, p = self.config, self._params
        mpw = i32(self._min_per_warp)
        ent = (self.d_ebase, self.d_ecol, self.d_ex, self.d_erh, self.d_bh)
        k["cfn_batch_setup"]((1,), (self._threads,), (
            self.d_order, i32(n_order), i32(batch_arg), self.d_estart,
            self.d_ctl, self.d_bh, self.d_brow, self.d_boff, self.d_ebase, self.d_ntouched, self.d_rowdone,
            self.d_rowdone_out))
        k["cfn_encode"]((self._grid_enc,), (32 * self._wpb1,), ent + (
            p.w[0], i32(hp[1]), self.d_part1, mpw) + self._fused_act(fuse), shared_mem=self._wpb1 * hp[1] * 4)
        if not fuse:
            self._act(1, layer=0, use_scale=1, z=self.d_part1, sparse=1, total_warps=self._tw_enc, rows=self._cap)
        for l in range(1, L - 1):                           # dense hidden layers (eager only)
            cp.matmul(self.d_h[l][:bt], p.w[l].T, out=self.d_z[l + 1][:bt])
            self._act(l + 1, layer=l, use_scale=0, z=self.d_z[l + 1], sparse=0, total_warps=1, rows=self._cap)
        mode = 0 if self._scatter == "atomic" else 1
        k["cfn_output"]((self._grid_out,), (32 * self._wpbl,), ent + (
            self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), p.w[L - 1], p.b[L - 1], p.s[L - 1],
            self.d_side, i32(S), f32(cfg.alpha), f32(cfg.beta), self.d_partl, self.d_lpart, i32(mode),
            self.d_edelta, self.d_td, self.d_tx, i32(self._cap), self._stamp(), self._touched(), self.d_ntouched,
            mpw, i32(1 if fuse else 0), self.d_rowdone_out, self.d_boff, self.d_delta[L - 1],
            i32(self._widths[L - 1]), self.d_loss), shared_mem=self._wpbl * hp[L - 1] * 4)
        if not fuse:
            self._delta(L - 1, use_scale=1, acc=self.d_partl, sparse=1, total_warps=self._tw_out, reduce_loss=1)
        for lev in range(L - 1, 1, -1):                     # dense layer lev-1: h[lev-1] -> h[lev] (eager)
            below = lev - 1
            k["cfn_bias_side"]((-(-hp[lev] // self._threads),), (self._threads,), (
                self.d_bh, self.d_coef, self.d_delta[lev], i32(self._widths[lev]), i32(hp[lev]), self.d_brow,
                self.d_side, i32(S), tg.b[below], tg.s[below]))
            delta = self.d_delta[lev][:bt]
            cp.matmul(delta, p.w[below], out=self.d_dacc[below][:bt])      # with the old weights
            g = cp.matmul(delta.T, self.d_h[below][:bt])
            if grads:
                tg.w[below][...] = g
            else:
                tg.w[below] *= f32(coef_row[3])
                tg.w[below] -= f32(coef_row[2]) * g
            self._delta(below, use_scale=0, acc=self.d_dacc[below], sparse=0, total_warps=1, reduce_loss=0)
        if self._scatter == "atomic":
            k["cfn_scatter_atomic"]((self._grid_sct,), (self._threads,), ent + (
                self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), self.d_delta[1], i32(self._widths[1]), i32(hp[1]),
                self.d_edelta, self.d_side, i32(S), tg.w[L - 1], tg.b[L - 1], tg.s[L - 1], tg.w[0], tg.b[0],
                tg.s[0], mpw))
        else:
            k["cfn_scatter_segment"]((self._grid_seg,), (self._threads,), (
                self.d_bh, self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), self.d_delta[1],
                i32(self._widths[1]), i32(hp[1]), self.d_side, i32(S), self.d_td, self.d_tx, i32(self._cap),
                self.d_touched, self.d_ntouched, tg.w[L - 1], tg.b[L - 1], tg.s[L - 1], tg.w[0], tg.b[0], tg.s[0]))

    def _fused_act(self, fuse: bool, **kw) -> tuple:
        """The arguments of cfn_encode's fused activation (cfn_hidden_act's, for the first layer)."""
        i32 = np.int32
        return (i32(1 if fuse else 0), self.d_rowdone, kw.get("boff", self.d_boff), kw.get("coef", self.d_coef),
                self._params.b[0], self._params.s[0], kw.get("side", self.d_side), kw.get("brow", self.d_brow),
                i32(kw.get("sdim", self._sdim)), i32(self._widths[1]), kw.get("out", self.d_h[1]))

    def _stamp(self):
        return self.d_stamp if self._scatter == "segment" else self._dummy_i

    def _touched(self):
        return self.d_touched if self._scatter == "segment" else self._dummy_i

    def _act(self, level: int, *, layer: int, use_scale: int, z, sparse: int, total_warps: int, rows: int,
             bh=None, boff=None, coef=None, side=None, brow=None, sdim: int | None = None, out=None) -> None:
        """cfn_hidden_act: activations of hidden level ``level`` (output of layer ``layer``)."""
        hp = self._hp[level]
        blocks = int(min(1024, max(1, -(-rows * hp // self._threads))))
        i32 = np.int32
        self._kernels["cfn_hidden_act"]((blocks,), (self._threads,), (
            self.d_bh if bh is None else bh, self.d_coef if coef is None else coef, i32(use_scale), z, i32(sparse),
            self.d_boff if boff is None else boff, i32(total_warps), i32(self._min_per_warp),
            self._params.b[layer], self._params.s[layer], self.d_side if side is None else side,
            self.d_brow if brow is None else brow, i32(self._sdim if sdim is None else sdim),
            i32(self._widths[level]), i32(hp), self.d_h[level] if out is None else out))

    def _delta(self, level: int, *, use_scale: int, acc, sparse: int, total_warps: int, reduce_loss: int) -> None:
        """cfn_hidden_delta: back-propagated deltas of hidden level ``level``."""
        hp = self._hp[level]
        blocks = int(min(1024, max(1, -(-self._cap * hp // self._threads))))
        i32 = np.int32
        self._kernels["cfn_hidden_delta"]((blocks,), (self._threads,), (
            self.d_bh, self.d_coef, i32(use_scale), acc, i32(sparse), self.d_boff, i32(total_warps),
            i32(self._min_per_warp), self.d_h[level], self.d_delta[level], i32(self._widths[level]), i32(hp),
            i32(reduce_loss), self.d_lpart, self.d_loss))

    def _fold(self, scale: float) -> None:
        """V *= s on the lazily scaled arrays (then the scale is 1)."""
        p, L = self._params, self._L
        arrays = [p.w[0], p.w[L - 1], p.b[L - 1]] + ([p.s[L - 1]] if self._sdim else [])
        for a in arrays:
            n = int(a.size)
            self._kernels["cfn_scale"]((int(min(4096, max(1, -(-n // self._threads)))),), (self._threads,),
                                       (a, np.int64(n), np.float32(scale)))

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
    def _upload_batch_inputs(self, order: np.ndarray, coef: np.ndarray, epoch: int,
                             batch_size: int | None = None) -> None:
        """The epoch's order, coefficients and key, and the epoch's entry tables (built once here,
        so that no step kernel searches its batch or walks the CSR)."""
        cp = self._cp
        if len(order) > self.d_order.size:
            self.d_order = cp.zeros(len(order), dtype=np.int32)
            self.d_estart = cp.zeros(len(order) + 1, dtype=np.int64)
            self.d_pswap = cp.zeros(len(order), dtype=np.int32)
            self._graphs.clear()
        starts = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(self._counts[np.asarray(order, dtype=np.int64)], out=starts[1:])
        if starts[-1] > self.d_ecol.size:
            self._alloc_entry_tables(int(starts[-1]))
        if coef.size > self.d_coef.size:
            self.d_coef = self._cp.zeros(coef.size, dtype=np.float32)
            self._graphs.clear()
        self.d_order[:len(order)].set(np.ascontiguousarray(order, dtype=np.int32))
        self.d_coef[:coef.size].set(np.ascontiguousarray(coef, dtype=np.float32).ravel())
        self.d_key.set(np.array([epoch_key(self.config.seed, epoch)], dtype=np.uint64))
        self.d_ctl[:1].set(np.zeros(1, dtype=np.int32))
        self.d_loss.set(np.zeros(1, dtype=np.float64))
        self._build_entry_tables(starts, int(batch_size or self.config.batch_size),
                                 (self.d_indptr, self.d_indices, self.d_data), self.d_key, self._threshold,
                                 (self.d_estart, self.d_ecol, self.d_ex, self.d_erh, self.d_pswap, self.d_order))

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

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        rows = self._check_rows(rows)
        cp, p = self._cp, self._params
        self._ensure_capacity(max(len(rows), 1), int(self._counts[rows].sum()) if rows.size else 0)
        coef = np.array([[self._scale, -1.0, -1.0, 1.0]], dtype=np.float32)
        with self._stream:
            grads = _Params([cp.zeros_like(a) for a in p.w], [cp.zeros_like(a) for a in p.b],
                            [cp.zeros_like(a) for a in p.s])
            loss = 0.0
            if rows.size:
                self._upload_batch_inputs(rows, coef, epoch, len(rows))
                self._launch_step(grads, len(rows), len(rows), len(rows), coef[0], grads=True)
                loss = float(self.d_loss.get()[0])
            layers = self._export(grads, 1.0, grads=True)
        return loss, layers

    # ------------------------------------------------------------------ parameters
    def _export(self, params: _Params, scale: float, grads: bool = False) -> list[Layer]:
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
            if layer.weight.shape != (self._widths[index + 1] if index < self._L - 1 else self._n_inputs,
                                      self._widths[index]):
                raise ValueError(f"layer {index} has shape {layer.weight.shape}, the engine's is "
                                 f"{(self._widths[index + 1] if index < self._L - 1 else self._n_inputs, self._widths[index])}")
        self._before_write()
        with self._stream:
            self._write_params(self._params, layers)
        self._scale = 1.0
        if self._unused_side is not None:
            self._unused_side = [None if layer.side_weight is None else layer.side_weight.copy() for layer in layers]

    # ------------------------------------------------------------------ inference
    def _device_inputs(self, inputs: sp.csr_matrix, side: np.ndarray | None):
        """Device CSR and side matrix for ``inputs`` (the training copies when they are the same objects)."""
        cp = self._cp
        if not sp.issparse(inputs):
            raise TypeError("inputs must be a scipy.sparse CSR matrix")
        same = inputs is self.samples
        inputs = inputs.tocsr()
        if inputs.shape[1] != self._n_inputs:
            raise ValueError(f"inputs must have {self._n_inputs} columns, got {inputs.shape[1]}")
        if side is not None:
            if not self._sdim:
                raise ValueError("this model was trained without side information; pass side=None")
            side = np.asarray(side, dtype=np.float32)
            if side.ndim != 2 or side.shape != (inputs.shape[0], self._sdim):
                raise ValueError(f"side must have shape ({inputs.shape[0]}, {self._sdim}), got {side.shape}")
        if same:
            csr = (self.d_indptr, self.d_indices, self.d_data)
            counts = self._counts
        else:
            csr = (cp.asarray(inputs.indptr.astype(np.int64)), cp.asarray(inputs.indices.astype(np.int32)),
                   cp.asarray(inputs.data.astype(np.float32)))
            counts = np.diff(inputs.indptr).astype(np.int64)
        if side is None:
            d_side, sdim = self._dummy_f, 0
        elif side is self.side:
            d_side, sdim = self.d_side, self._sdim
        else:
            d_side, sdim = cp.asarray(np.ascontiguousarray(side)), self._sdim
        return csr, counts, d_side, sdim

    def _encode_device(self, csr, counts: np.ndarray, d_side, sdim: int, row_ids: np.ndarray):
        """Last hidden layer (n x Hp_{L-1}, device) of the rows ``row_ids`` of a device CSR, uncorrupted."""
        cp, k, L, hp = self._cp, self._kernels, self._L, self._hp
        i32 = np.int32
        n = len(row_ids)
        codes = cp.zeros((n, hp[L - 1]), dtype=np.float32)
        if n == 0:
            return codes
        chunk = min(INFER_ROWS, n)
        coef = cp.asarray(np.array([self._scale, 0.0, 0.0, 1.0], dtype=np.float32))
        bh = cp.zeros(4, dtype=i32)
        brow = cp.zeros(chunk, dtype=i32)
        boff = cp.zeros(chunk + 1, dtype=i32)
        key = cp.zeros(1, dtype=np.uint64)
        ebase = cp.zeros(1, dtype=np.int64)
        estart = cp.zeros(chunk + 1, dtype=np.int64)
        pswap = cp.zeros(chunk, dtype=i32)
        cap = int(max(1, max(counts[row_ids[s:s + chunk]].sum() for s in range(0, n, chunk))))
        ecol, ex, erh = cp.zeros(cap, dtype=i32), cp.zeros(cap, dtype=np.float32), cp.zeros(cap, dtype=i32)
        h = [None] + [cp.zeros((chunk, hp[l]), dtype=np.float32) for l in range(1, L)]
        z = [None] + [cp.zeros((chunk, hp[l]), dtype=np.float32) for l in range(1, L)]
        wpb = self._wpb(hp[1])
        grid = self._sparse_grid(int(max(counts[row_ids].max(), 1)) * chunk, wpb, "cfn_encode", hp[1])
        part = cp.zeros((grid * wpb + chunk, hp[1]), dtype=np.float32)
        for start in range(0, n, chunk):
            ids = row_ids[start:start + chunk]
            m = len(ids)
            c = counts[ids]
            off = np.zeros(m + 1, dtype=np.int64)
            np.cumsum(c, out=off[1:])
            nnz = int(off[-1])
            if nnz >= 2 ** 31 - 1:
                raise ValueError("too many known entries in one inference chunk")
            brow[:m].set(ids.astype(i32))
            boff[:m + 1].set(off.astype(i32))
            bh.set(np.array([m, nnz, 0, 0], dtype=i32))
            self._build_entry_tables(off, chunk, csr, key, 0, (estart, ecol, ex, erh, pswap, brow))
            k["cfn_encode"]((grid,), (32 * wpb,), (
                ebase, ecol, ex, erh, bh, self._params.w[0],
                i32(hp[1]), part, i32(self._min_per_warp)) + self._fused_act(False, out=h[1]),
                shared_mem=wpb * hp[1] * 4)
            self._act(1, layer=0, use_scale=1, z=part, sparse=1, total_warps=grid * wpb, rows=m, bh=bh,
                      boff=boff, coef=coef, side=d_side, brow=brow, sdim=sdim, out=h[1])
            for l in range(1, L - 1):
                cp.matmul(h[l][:m], self._params.w[l].T, out=z[l + 1][:m])
                self._act(l + 1, layer=l, use_scale=0, z=z[l + 1], sparse=0, total_warps=1, rows=m, bh=bh,
                          boff=boff, coef=coef, side=d_side, brow=brow, sdim=sdim, out=h[l + 1])
            codes[start:start + m] = h[L - 1][:m]
        return codes

    def _inference_stream(self):
        """The caller's stream (``stream=`` of the CFN inference methods, set per thread by
        :func:`cfn_fast.interop.caller_stream`), ordered after this engine's own work; else the engine's."""
        from ..interop import current_caller_stream
        caller = current_caller_stream()
        if caller is None:
            return self._stream
        caller.wait_event(self._stream.record())  # parameters written on the engine's stream come first
        return caller

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None, *, on_device: bool = False) -> np.ndarray:
        """Codes of every row of ``inputs``: a host array, or a CuPy array with ``on_device``."""
        with self._inference_stream():
            csr, counts, d_side, sdim = self._device_inputs(inputs, side)
            codes = self._encode_device(csr, counts, d_side, sdim, np.arange(inputs.shape[0], dtype=np.int64))
            codes = codes[:, :self._widths[self._L - 1]]
            return self._cp.ascontiguousarray(codes) if on_device else np.ascontiguousarray(codes.get())

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        cp, L = self._cp, self._L
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols differ in length: {rows.size} and {cols.size}")
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        if rows.min() < 0 or rows.max() >= inputs.shape[0]:
            raise ValueError(f"row indices must lie in [0, {inputs.shape[0]})")
        if cols.min() < 0 or cols.max() >= self._n_inputs:
            raise ValueError(f"column indices must lie in [0, {self._n_inputs})")
        needed, local = np.unique(rows, return_inverse=True)
        with self._inference_stream():
            csr, counts, d_side, sdim = self._device_inputs(inputs, side)
            codes = self._encode_device(csr, counts, d_side, sdim, needed)
            pside = self._dummy_f
            if sdim:
                pside = cp.asarray(np.ascontiguousarray(np.asarray(side, dtype=np.float32)[needed]))
            out = cp.empty(rows.size, dtype=np.float32)
            p = self._params
            blocks = int(min(self._blocks, max(1, -(-rows.size // (self._threads // 32)))))
            self._kernels["cfn_predict_pairs"]((blocks,), (self._threads,), (
                codes, np.int32(self._hp[L - 1]), cp.asarray(local.astype(np.int32)),
                cp.asarray(cols.astype(np.int32)), np.int64(rows.size), p.w[L - 1], p.b[L - 1], p.s[L - 1],
                pside, np.int32(sdim), np.float32(self._scale), out))
            return out.get()

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None, *,
               on_device: bool = False) -> np.ndarray:
        """Output layer on ``codes`` (host or CuPy arrays; CuPy ones are used in place); a host result,
        or a CuPy one with ``on_device``."""
        cp, L, p = self._cp, self._L, self._params
        if not isinstance(codes, cp.ndarray):
            codes = np.asarray(codes, dtype=np.float32)
        width = self._widths[L - 1]
        if codes.ndim != 2 or codes.shape[1] != width:
            raise ValueError(f"codes must have shape (n, {width}), got {codes.shape}")
        s32 = np.float32(self._scale)
        with self._inference_stream():
            codes = cp.asarray(codes, dtype=cp.float32)
            sel = slice(None) if cols is None else cp.asarray(cols, dtype=cp.int64)
            weight = p.w[L - 1][:, :width][sel] * s32
            z = cp.matmul(codes, weight.T) + p.b[L - 1][sel] * s32
            if side is not None and self._sdim:
                z += cp.matmul(cp.asarray(side, dtype=cp.float32), (p.s[L - 1][sel] * s32).T)
            out = cp.tanh(z)
            return out if on_device else out.get().astype(np.float32, copy=False)

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
