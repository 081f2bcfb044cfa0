"""The split step of a sharded CFN on one CUDA GPU (:mod:`cfn_fast.backends.shard_base`).

The CUDA engine's kernels (``kernels/cuda/cfn_train.cu``, launched through
:class:`~cfn_fast.backends.cuda_launch.StepLaunches`) run on the shard's own entries, with three more
(``kernels/cuda/cfn_shard.cu``): the batch's entry tables keyed by the entries' positions in the *whole*
training CSR (the swap rule over each sample's whole row), the row totals that make the blocks the shards
sum, and the way back from a summed block into the padded layout.  One step is

* :meth:`~CudaShardEngine.input_partial`: ``cfn_shard_tables``, ``cfn_batch_setup``, ``cfn_encode`` and
  ``cfn_shard_rows`` — the shard's first-layer pre-activations, a B x H₁ CuPy array;
* :meth:`~CudaShardEngine.output_partial`: ``cfn_shard_block_in`` and ``cfn_hidden_act`` on the summed
  block, the dense layers (cuBLAS, as the CUDA engine's eager step), ``cfn_output`` on the shard's entries,
  ``cfn_shard_rows`` (its part of the code gradient, B x H_last, and its loss), then
  ``cfn_scatter_segment`` on the output rows alone (the input-layer table is a zero one here);
* :meth:`~CudaShardEngine.finish_step`: ``cfn_shard_block_in`` (× (1 − h²)), the dense layers backward,
  and ``cfn_scatter_segment`` again on the first layer's columns (the output table is empty by then) with
  the first layer's bias and side weight.

The shard's per-input arrays (its first-layer columns, its output rows) are exactly the arrays the CUDA
engine stores lazily decayed (``W = s·V``), so weight decay costs nothing per step here either; the
replicated arrays take the plain update.  Deterministic: no float atomics (the segment scatter).  A block
the engine returns is a fresh CuPy array; a summed block it takes may be CuPy or NumPy.  The engine's
stream is non-blocking; events order it against the caller's current stream both ways (a block returned
is written before the caller's later work on that stream reads it, a block taken is read after the
caller's earlier work), so a sum on any stream (ThreadGroup, NCCL) needs no explicit synchronisation.
The output rows move in ``output_partial``, as the specification's; the lazy scale of the shard's arrays
advances there too, so a :meth:`get_layers` *between* ``output_partial`` and ``finish_step`` shows the
first-layer columns decayed but not yet stepped (between steps it is exact).  Nothing here imports CuPy
at import time.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..corruption import epoch_key, mask_threshold
from ..network import Layer, check_layers
from .cuda_launch import DeviceParams, StepLaunches
from .cuda_module import compiled_kernels, load_cupy
from .cuda_plan import MAX_THREADS, NCOEF, SMEM_LIMIT, device_limits, multiprocessors, pad4, plan_steps
from .shard_base import ShardData, ShardEngine
from .validation import checked_epoch

__all__ = ["CudaShardEngine"]


class CudaShardEngine(StepLaunches, ShardEngine):
    """One shard's split step on a CUDA GPU (CuPy + the CUDA engine's kernels).

    ``block_threads``, ``blocks_per_sm``, ``min_per_warp``: launch tuning of the sparse kernels, as
    :class:`~cfn_fast.backends.cuda_backend.CudaEngine`'s (default: 256 threads, grids from the compiled
    kernels' occupancy, 16 entries per warp at least)."""

    name = "cuda"
    device = "cuda"

    def __init__(self, parts: list[Layer], config, data: ShardData, side: np.ndarray | None, *,
                 block_threads: int | None = None, blocks_per_sm: int | None = None,
                 min_per_warp: int | None = None) -> None:
        super().__init__(parts, config, data, side)
        n_samples, n_local = data.samples.shape
        if self.side is not None and self.side.shape[0] != n_samples:
            raise ValueError(f"side must have one row per sample ({n_samples}), got {self.side.shape[0]}")
        self._sdim = 0 if self.side is None else int(self.side.shape[1])
        unused_dim = 0 if parts[0].side_weight is None else int(np.shape(parts[0].side_weight)[1])
        parts = check_layers(parts, n_local, self._sdim or unused_dim, what="parts")
        cp = load_cupy()
        self._cp = cp
        self._n_inputs, self._L = n_local, len(parts)
        self._widths = [n_local] + [layer.weight.shape[0] for layer in parts[:-1]]     # h_0 .. h_{L-1}
        self._hp = [0] + [pad4(w) for w in self._widths[1:]]
        for hp in self._hp[1:]:
            if hp * 4 > SMEM_LIMIT:
                raise ValueError(f"hidden width {hp} is too wide for the CUDA engine (at most {SMEM_LIMIT // 4})")
        # side weights kept as given when the shard trains without side information
        self._unused_side = None if self._sdim else [
            None if layer.side_weight is None else layer.side_weight.copy() for layer in parts]
        self._threshold = mask_threshold(config.mask_ratio)
        self._scale = 1.0
        self._step: dict | None = None          # what one step's three calls pass each other
        threads = int(block_threads or MAX_THREADS)
        if threads % 32 or not 32 <= threads <= MAX_THREADS:
            raise ValueError(f"block_threads must be a multiple of 32 in [32, {MAX_THREADS}], got {threads}")
        self._threads, self._per_sm = threads, int(blocks_per_sm or 0)
        self._min_per_warp = int(min_per_warp or 16)
        self._n_sm, self._limits = multiprocessors(cp), device_limits(cp)
        self._scatter, self._graphs = "segment", {}      # deterministic scatter; steps launch eagerly
        self._kernels = compiled_kernels(cp)
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._local_counts = np.diff(data.samples.indptr).astype(np.int64)
        with self._stream:
            self.d_indptr = cp.asarray(data.samples.indptr.astype(np.int64))
            self.d_indices = cp.asarray(data.samples.indices.astype(np.int32))
            self.d_data = cp.asarray(data.samples.data.astype(np.float32))
            self.d_positions = cp.asarray(np.asarray(data.positions, dtype=np.int64))
            self.d_row_starts = cp.asarray(np.asarray(data.row_starts, dtype=np.int64))
            self.d_side = cp.asarray(self.side) if self._sdim else cp.zeros(1, dtype=np.float32)
            self._dummy_f = cp.zeros(4, dtype=np.float32)
            self._dummy_i = cp.zeros(4, dtype=np.int32)
            for name, size, dtype in (("d_coef", NCOEF, np.float32), ("d_key", 1, np.uint64), ("d_ctl", 2, np.int32),
                                      ("d_bh", 4, np.int32), ("d_loss", 1, np.float64), ("d_ntouched", 1, np.int32),
                                      ("d_bad", 1, np.int32), ("d_ebase", 1, np.int64)):
                setattr(self, name, cp.zeros(size, dtype=dtype))
            self.d_stamp = cp.zeros(n_local, dtype=np.int32)
            self.d_touched = cp.zeros(n_local, dtype=np.int32)
            self._params = self._upload(parts)
            self._cap = self._ent_cap = 0
            self._order_cap = 0
            self._alloc_entry_tables(1)
            self._ensure(config.batch_size, 1)

    @property
    def stream(self):
        """The CUDA stream every launch of this shard goes to.  Blocks it returns are ordered before the
        caller's current stream's later work, and blocks it takes after the caller's earlier work."""
        return self._stream

    # ------------------------------------------------------------------ buffers and parameters
    def _ensure(self, rows: int, nnz: int) -> None:
        """Scratch for batches of ``rows`` samples and ``nnz`` local entries (the CUDA engine's, plus the
        batch's order and a zero input-layer table for the output rows' scatter)."""
        cp = self._cp
        old = self._cap
        self._ensure_capacity(rows, nnz)
        if self._cap != old:
            self.d_tx_zero = cp.zeros_like(self.d_tx)
        if rows > self._order_cap:
            self.d_order = cp.zeros(rows, dtype=np.int32)
            self.d_estart = cp.zeros(rows + 1, dtype=np.int64)
            self.d_pswap = cp.zeros(rows, dtype=np.int32)
            self.d_block = cp.zeros(rows * max(self._widths[1], self._widths[-1]), dtype=np.float32)
            self._order_cap = rows
        if nnz > self.d_ecol.size:
            self._alloc_entry_tables(nnz)

    def _upload(self, parts: list[Layer]) -> DeviceParams:
        """The shard's part in the CUDA engine's layout (:class:`~cfn_fast.backends.cuda_launch.DeviceParams`)."""
        cp, L, hp, S = self._cp, self._L, self._hp, self._sdim
        w, b, s = [], [], []
        for index, layer in enumerate(parts):
            fan_out, fan_in = layer.weight.shape
            if index == 0:
                target = cp.zeros((self._n_inputs, hp[1]), dtype=np.float32)
                target[:, :fan_out] = cp.asarray(np.ascontiguousarray(layer.weight.T))
            elif index == L - 1:
                target = cp.zeros((self._n_inputs, hp[L - 1]), dtype=np.float32)
                target[:, :fan_in] = cp.asarray(layer.weight)
            else:
                target = cp.zeros((hp[index + 1], hp[index]), dtype=np.float32)
                target[:fan_out, :fan_in] = cp.asarray(layer.weight)
            w.append(target)
            b.append(cp.asarray(layer.bias))
            s.append(cp.asarray(layer.side_weight) if S else cp.zeros(1, dtype=np.float32))
        return DeviceParams(w, b, s)

    def get_layers(self) -> list[Layer]:
        """The shard's part (the lazy scale multiplied in)."""
        cp, L, widths, p = self._cp, self._L, self._widths, self._params
        s32 = np.float32(self._scale)
        out = []
        with self._stream:
            for index in range(L):
                if index == 0:
                    weight = cp.ascontiguousarray((p.w[0][:, :widths[1]] * s32).T).get()
                    bias = p.b[0].get()
                elif index == L - 1:
                    weight = (p.w[L - 1][:, :widths[L - 1]] * s32).get()
                    bias = (p.b[L - 1] * s32).get()
                else:
                    weight = cp.ascontiguousarray(p.w[index][:widths[index + 1], :widths[index]]).get()
                    bias = p.b[index].get()
                side_w = None
                if self._sdim:
                    side_w = (p.s[index] * s32).get() if index == L - 1 else p.s[index].get()
                elif self._unused_side is not None and self._unused_side[index] is not None:
                    side_w = self._unused_side[index].copy()
                out.append(Layer(np.ascontiguousarray(weight, dtype=np.float32),
                                 np.ascontiguousarray(bias, dtype=np.float32),
                                 None if side_w is None else np.ascontiguousarray(side_w, dtype=np.float32)))
        return out

    def set_layers(self, parts: list[Layer]) -> None:
        L, widths = self._L, self._widths
        expected = [(widths[k + 1] if k < L - 1 else self._n_inputs, widths[k]) for k in range(L)]
        parts = check_layers(parts, self._n_inputs, self._sdim or self._side_width(), what="parts")
        given = [layer.weight.shape for layer in parts]
        if given != expected:
            raise ValueError(f"parts have shapes {given}, this shard's are {expected}")
        with self._stream:
            self._params = self._upload(parts)
        self._scale = 1.0
        self._step = None
        if self._unused_side is not None:
            self._unused_side = [None if layer.side_weight is None else layer.side_weight.copy() for layer in parts]

    def _side_width(self) -> int:
        first = None if self._unused_side is None else self._unused_side[0]
        return 0 if first is None else int(first.shape[1])

    # ------------------------------------------------------------------ blocks in and out
    def _follow_caller(self) -> None:
        """This engine's stream waits for the work the caller has enqueued so far (e.g. the sum of a
        block on its current stream): the engine's stream is non-blocking, so it would not otherwise."""
        self._stream.wait_event(self._cp.cuda.get_current_stream().record())

    def _handed_out(self, block: Any) -> Any:
        """``block``, with the caller's current stream made to wait for the kernels that wrote it."""
        self._cp.cuda.get_current_stream().wait_event(self._stream.record())
        return block

    def _block_in(self, block: Any, rows: np.ndarray, level: int, what: str, use_h: bool) -> None:
        """A summed block (CuPy or NumPy, B x H of hidden level ``level``) into ``d_delta[level]``
        (``use_h``: times (1 − h²)) or, padded, the first layer's pre-activations into ``d_part1`` (cfn_encode's
        partials, free once the shard's own block is out); refused when its shape is wrong or it holds NaN or
        infinite values, before any parameter moves."""
        cp = self._cp
        width = self._widths[level]
        if isinstance(block, cp.ndarray):
            if block.shape != (len(rows), width):
                raise ValueError(f"{what} must have shape {(len(rows), width)}, got {block.shape}")
            block = cp.ascontiguousarray(block.astype(np.float32, copy=False))
        else:
            block = np.asarray(block)
            if block.shape != (len(rows), width):
                raise ValueError(f"{what} must have shape {(len(rows), width)}, got {block.shape}")
            block = cp.asarray(np.ascontiguousarray(block, dtype=np.float32))
        target = self.d_delta[level] if use_h else self.d_part1
        self.d_bad.fill(0)
        hp = self._hp[level]
        blocks = int(min(1024, max(1, -(-len(rows) * hp // self._threads))))
        self._kernels["cfn_shard_block_in"]((blocks,), (self._threads,), (
            self.d_bh, block, np.int32(width), np.int32(hp), self.d_h[level], np.int32(1 if use_h else 0), target,
            self.d_bad))
        if int(self.d_bad.get()[0]):
            raise ValueError(f"{what} has NaN or infinite values")

    def _rows_out(self, part, total_warps: int, level: int, reduce_loss: bool) -> Any:
        """``cfn_shard_rows``: the block of hidden level ``level`` the shards sum, a fresh B x H CuPy array."""
        rows, width = int(self._step["rows"].size), self._widths[level]
        out = self.d_block[:rows * width]
        blocks = int(min(1024, max(1, -(-rows * width // self._threads))))
        i32 = np.int32
        self._kernels["cfn_shard_rows"]((blocks,), (self._threads,), (
            self.d_bh, self.d_coef, part, self.d_boff, i32(total_warps), i32(self._min_per_warp), i32(width),
            i32(self._hp[level]), out, i32(1 if reduce_loss else 0), self.d_lpart, self.d_loss))
        return out.reshape(rows, width).copy()

    # ------------------------------------------------------------------ the split step
    def input_partial(self, rows, epoch: int):
        rows, epoch = self.checked_rows(rows), checked_epoch(epoch)
        i32 = np.int32
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(self._local_counts[rows], out=starts[1:])
        self._step = None
        with self._stream:
            self._ensure(len(rows), int(starts[-1]))
            self.d_order[:len(rows)].set(rows.astype(np.int32))
            self.d_estart[:len(rows) + 1].set(starts)
            self.d_coef.set(np.array([self._scale, 0.0, 0.0, 1.0], dtype=np.float32))
            self.d_key.set(np.array([epoch_key(self.config.seed, epoch)], dtype=np.uint64))
            self.d_ctl[:1].set(np.zeros(1, dtype=np.int32))
            self.d_loss.set(np.zeros(1, dtype=np.float64))
            wpb = self._threads // 32
            self._kernels["cfn_shard_tables"]((int(max(1, min(4096, -(-len(rows) // wpb)))),), (self._threads,), (
                self.d_order, i32(len(rows)), i32(len(rows)), self.d_estart, self.d_indptr, self.d_indices,
                self.d_data, self.d_positions, self.d_row_starts, self.d_key, np.uint32(self._threshold),
                self.d_ecol, self.d_ex, self.d_erh, self.d_pswap))
            self._kernels["cfn_batch_setup"]((1,), (self._threads,), (
                self.d_order, i32(len(rows)), i32(len(rows)), self.d_estart, self.d_ctl, self.d_bh, self.d_brow,
                self.d_boff, self.d_ebase, self.d_ntouched, self.d_rowdone, self.d_rowdone_out))
            hp1 = self._hp[1]
            self._kernels["cfn_encode"]((self._grid_enc,), (32 * self._wpb1,), self._entries() + (
                self._params.w[0], i32(hp1), self.d_part1, i32(self._min_per_warp)) + self._fused_act(False),
                shared_mem=self._wpb1 * hp1 * 4)
            self._step = {"rows": rows, "epoch": epoch}
            block = self._rows_out(self.d_part1, self._tw_enc, 1, reduce_loss=False)
        return self._handed_out(block)

    def _entries(self) -> tuple:
        return (self.d_ebase, self.d_ecol, self.d_ex, self.d_erh, self.d_bh)

    def output_partial(self, rows, epoch: int, hidden_sum, lr: float) -> tuple[float, Any]:
        rows = self.checked_rows(rows)
        epoch, lr = self.checked_step(epoch, lr)
        step = self.begun(self._step, rows, "output", "plan")
        cp, k, L, hp, S = self._cp, self._kernels, self._L, self._hp, self._sdim
        i32, f32 = np.int32, np.float32
        cfg, p, bt = self.config, self._params, len(rows)
        self._follow_caller()
        with self._stream:
            self._block_in(hidden_sum, rows, 1, "hidden_sum", use_h=False)
            plan = plan_steps(np.array([bt]), lr, cfg.weight_decay, self._scale, 1)
            if plan.chunks[0][2] is not None:        # fold V *= s before the lazy scale gets small
                self._fold(plan.chunks[0][2])
            self.d_coef.set(plan.coef[0])
            self._act(1, layer=0, use_scale=0, z=self.d_part1, sparse=0, total_warps=1, rows=self._cap)
            for lev in range(1, L - 1):                 # dense hidden layers, as the CUDA engine's eager step
                cp.matmul(self.d_h[lev][:bt], p.w[lev].T, out=self.d_z[lev + 1][:bt])
                self._act(lev + 1, layer=lev, use_scale=0, z=self.d_z[lev + 1], sparse=0, total_warps=1,
                          rows=self._cap)
            k["cfn_output"]((self._grid_out,), (32 * self._wpbl,), self._entries() + (
                self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), p.w[L - 1], p.b[L - 1], p.s[L - 1],
                self.d_side, i32(S), f32(cfg.alpha), f32(cfg.beta), self.d_partl, self.d_lpart, i32(1),
                self._dummy_f, self.d_td, self.d_tx, i32(self._cap), self.d_stamp, self.d_touched, self.d_ntouched,
                i32(self._min_per_warp), i32(0), self.d_rowdone_out, self.d_boff, self.d_delta[L - 1],
                i32(self._widths[L - 1]), self.d_loss), shared_mem=self._wpbl * hp[L - 1] * 4)
            code_grad = self._rows_out(self.d_partl, self._tw_out, L - 1, reduce_loss=True)
            # the output rows alone: a zero input table, and the dense first-layer step made the identity
            # (eta 0, shrink 1) until finish_step knows its deltas
            coef = plan.coef[0].copy()
            coef[2:] = (0.0, 1.0)
            self.d_coef.set(coef)
            self._scatter_step(self.d_td, self.d_tx_zero)
            self._scale = plan.end_scale
            step["plan"], step["lr"] = plan, lr
            loss = float(self.d_loss.get()[0])
        return loss, self._handed_out(code_grad)

    def _scatter_step(self, tdelta, tx) -> None:
        """``cfn_scatter_segment`` over the batch's touched columns with the given tables (it clears them)."""
        L, hp, i32 = self._L, self._hp, np.int32
        tg = self._params
        self._kernels["cfn_scatter_segment"]((self._grid_seg,), (self._threads,), (
            self.d_bh, self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), self.d_delta[1],
            i32(self._widths[1]), i32(hp[1]), self.d_side, i32(self._sdim), tdelta, tx, i32(self._cap),
            self.d_touched, self.d_ntouched, tg.w[L - 1], tg.b[L - 1], tg.s[L - 1], tg.w[0], tg.b[0], tg.s[0]))

    def finish_step(self, rows, code_grad_sum, lr: float) -> None:
        rows = self.checked_rows(rows)
        step = self.begun(self._step, rows, "finish", "plan")
        lr = self.checked_step(step["epoch"], lr)[1]
        if lr != step["lr"]:       # the shard's arrays share one lazy decay scale, advanced by output_partial
            raise ValueError(f"finish_step must take the lr of the step's output_partial ({step['lr']!r}), "
                             f"got {lr!r}")
        cp, k, L, hp, S = self._cp, self._kernels, self._L, self._hp, self._sdim
        i32, bt, p = np.int32, len(rows), self._params
        coef_row = step["plan"].coef[0]
        self._follow_caller()
        with self._stream:
            self._block_in(code_grad_sum, rows, L - 1, "code_grad_sum", use_h=True)
            self.d_coef.set(coef_row)
            for lev in range(L - 1, 1, -1):             # dense layer lev-1: h[lev-1] -> h[lev]
                below = lev - 1
                k["cfn_bias_side"]((-(-hp[lev] // self._threads),), (self._threads,), (
                    self.d_bh, self.d_coef, self.d_delta[lev], i32(self._widths[lev]), i32(hp[lev]), self.d_brow,
                    self.d_side, i32(S), p.b[below], p.s[below]))
                delta = self.d_delta[lev][:bt]
                cp.matmul(delta, p.w[below], out=self.d_dacc[below][:bt])      # with the old weights
                g = cp.matmul(delta.T, self.d_h[below][:bt])
                p.w[below] *= np.float32(coef_row[3])
                p.w[below] -= np.float32(coef_row[2]) * g
                self._delta(below, use_scale=0, acc=self.d_dacc[below], sparse=0, total_warps=1, reduce_loss=0)
            # the first layer's columns, bias and side weight (the output table was cleared by the first scatter)
            self._scatter_step(self.d_td, self.d_tx)
        self._step = None
