"""The CUDA engine's training step: scratch buffers, launch grids and the fixed launch sequence.

:class:`StepLaunches` is the part of :class:`~cfn_fast.backends.cuda_backend.CudaEngine` that
enqueues kernels: it sizes the scratch buffers and the grids of the load-balanced sparse kernels
(from the compiled kernels' occupancy, :func:`~cfn_fast.backends.cuda_plan.resident_blocks`), lays
out the epoch's entry tables (``cfn_epoch_tables``) and launches one SGD step
(``cfn_batch_setup``, ``cfn_encode``, ``cfn_hidden_act``, ``cfn_output``, ``cfn_hidden_delta``,
``cfn_bias_side``, ``cfn_scatter_*``; ``cfn_scale`` folds the lazy weight-decay scale).  It keeps
its state on the engine (``self``); the engine's ``__init__`` sets the attributes it reads.
"""
from __future__ import annotations

import numpy as np

from ..corruption import epoch_key
from .cuda_plan import SMEM_LIMIT, kernel_attr, resident_blocks

__all__ = ["SEGMENT_TABLE_LIMIT", "DeviceParams", "StepLaunches"]

SEGMENT_TABLE_LIMIT = 2 << 30   # bytes of the segment scatter's column tables (n_inputs x batch x 8)


class DeviceParams:
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


class StepLaunches:
    """Buffers, grids and kernel launches of the training step (a part of ``CudaEngine``)."""

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
            self.d_h = [None] + [cp.zeros((rows, hp[lev]), dtype=np.float32) for lev in range(1, L)]
            self.d_delta = [None] + [cp.zeros((rows, hp[lev]), dtype=np.float32) for lev in range(1, L)]
            # dense hidden layers (eager): products of cuBLAS, forward (z) and backward (dacc)
            self.d_z = [None] + [cp.zeros((rows, hp[lev]), dtype=np.float32) if lev >= 2 else None
                                 for lev in range(1, L)]
            self.d_dacc = [None] + [cp.zeros((rows, hp[lev]), dtype=np.float32) if lev <= L - 2 else None
                                    for lev in range(1, L)]
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
        per_sm = resident_blocks(kernel_attr(fn, "num_regs", 32), 32 * wpb, smem,
                                 kernel_attr(fn, "shared_size_bytes"), self._limits)
        return per_sm * self._n_sm

    def _sparse_grid(self, nnz_bound: int, wpb: int, kernel: str = "cfn_encode", hp: int = 0) -> int:
        """Grid of a load-balanced sparse kernel: enough warps for ``nnz_bound`` entries at
        ``min_per_warp`` each, at most one wave (more warps only shrink each warp's range)."""
        wave = self._resident_grid(kernel, wpb, wpb * hp * 4)
        return int(max(1, min(wave, -(-nnz_bound // (self._min_per_warp * wpb)))))

    def _launch_step(self, tg: DeviceParams, n_order: int, batch_arg: int, bt: int | None = None,
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
        for lev in range(1, L - 1):                         # dense hidden layers (eager only)
            cp.matmul(self.d_h[lev][:bt], p.w[lev].T, out=self.d_z[lev + 1][:bt])
            self._act(lev + 1, layer=lev, use_scale=0, z=self.d_z[lev + 1], sparse=0, total_warps=1, rows=self._cap)
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
                self.d_brow, self.d_coef, self.d_h[L - 1], i32(hp[L - 1]), self.d_delta[1], i32(self._widths[1]),
                i32(hp[1]), self.d_edelta, self.d_side, i32(S), tg.w[L - 1], tg.b[L - 1], tg.s[L - 1], tg.w[0], tg.b[0],
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

    # ------------------------------------------------------------------ the epoch's inputs
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

