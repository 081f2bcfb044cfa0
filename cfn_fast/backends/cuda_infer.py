"""The CUDA engine's inference: codes of the last hidden layer, sampled outputs, the output layer.

:class:`Inference` is the part of :class:`~cfn_fast.backends.cuda_backend.CudaEngine` that runs a
trained network on (possibly new) input rows: ``cfn_encode`` + ``cfn_hidden_act`` in chunks of
:data:`INFER_ROWS` rows (cuBLAS for dense hidden layers), ``cfn_predict_pairs`` for single
entries, and cuBLAS for the output layer.  Work goes to the caller's stream when one is set
(:func:`cfn_fast.interop.caller_stream`), after the engine's own.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..interop import current_caller_stream

__all__ = ["INFER_ROWS", "Inference"]

INFER_ROWS = 2048         # rows encoded per launch sequence at inference


class Inference:
    """Inference on the device (a part of ``CudaEngine``; it reads the engine's buffers and grids)."""

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
        h = [None] + [cp.zeros((chunk, hp[lev]), dtype=np.float32) for lev in range(1, L)]
        z = [None] + [cp.zeros((chunk, hp[lev]), dtype=np.float32) for lev in range(1, L)]
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
            for lev in range(1, L - 1):
                cp.matmul(h[lev][:m], self._params.w[lev].T, out=z[lev + 1][:m])
                self._act(lev + 1, layer=lev, use_scale=0, z=z[lev + 1], sparse=0, total_warps=1, rows=m, bh=bh,
                          boff=boff, coef=coef, side=d_side, brow=brow, sdim=sdim, out=h[lev + 1])
            codes[start:start + m] = h[L - 1][:m]
        return codes

    def _inference_stream(self):
        """The caller's stream (``stream=`` of the CFN inference methods, set per thread by
        :func:`cfn_fast.interop.caller_stream`), ordered after this engine's own work; else the engine's."""
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

