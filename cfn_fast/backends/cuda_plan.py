"""Host-side planning for the CUDA engine, in NumPy alone (no CuPy): mini-batch sizes, the per-step
learning-rate / weight-decay coefficients captured into CUDA graphs, the GPU memory plan, and the
occupancy-sized launch grids.  Kept apart from :mod:`cfn_fast.backends.cuda_backend` so it can be
read, tested and used by the device check without a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPARSE_KERNELS = ("cfn_encode", "cfn_output", "cfn_scatter_atomic", "cfn_scatter_segment")
MAX_THREADS = 256         # CFN_MAX_THREADS of kernels/cuda/cfn_common.cuh (the kernels' __launch_bounds__)
NCOEF = 4                 # per-step coefficients: s before the step, eta_lazy, eta_dense, shrink
FOLD_BELOW = 1e-6         # fold V *= s before the lazy scale s would drop below this
GRAPH_CHUNK = 64          # training steps per captured CUDA graph
SMEM_LIMIT = 48 * 1024    # dynamic shared memory per block without opt-in


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """Rows of each mini-batch when ``n`` ordered samples are cut into batches of ``batch_size``."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.full((n + batch_size - 1) // batch_size, batch_size, dtype=np.int64)
    sizes[-1] = n - batch_size * (len(sizes) - 1)
    return sizes


def max_batch_nnz(counts: np.ndarray, rows: int) -> int:
    """An upper bound of the known entries of any batch of ``rows`` samples: the sum of the largest counts."""
    counts = np.asarray(counts, dtype=np.int64)
    if rows >= len(counts):
        return int(counts.sum())
    return int(np.partition(counts, len(counts) - rows)[len(counts) - rows:].sum())


@dataclass
class StepPlan:
    """Per-step coefficients of a run of SGD steps and where the lazy scale is folded."""

    coef: np.ndarray                           # (steps, NCOEF) float32: s_before, eta_lazy, eta_dense, shrink
    chunks: list[tuple[int, int, float | None]]  # (first step, steps, scale to fold before the chunk or None)
    end_scale: float                           # lazy scale after the last step (float64)


def plan_steps(sizes: np.ndarray, lr: float, weight_decay: float, scale: float, chunk: int | None = None,
               fold_below: float | None = None) -> StepPlan:
    """Coefficients of consecutive SGD steps with batch rows ``sizes``, exactly the reference's
    ``theta <- shrink*theta - (lr/B)*g`` with ``shrink = float32(1 - lr*lambda)`` and ``lr/B`` in float32.

    The lazily decayed matrices hold ``W = s*V``: before step t ``s_t``, after it
    ``s_{t+1} = shrink*s_t`` (tracked in float64), and the sparse gradient moves ``V`` by
    ``-(lr/B)/s_{t+1} * g``.  Steps are grouped in chunks of at most ``chunk`` (one CUDA graph
    each); ``V`` is folded at a chunk boundary when ``s`` would drop below ``fold_below`` inside it.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    chunk = GRAPH_CHUNK if chunk is None else int(chunk)
    fold_below = FOLD_BELOW if fold_below is None else float(fold_below)
    shrink32 = np.float32(1.0 - lr * weight_decay)
    shrink = float(shrink32)
    if not shrink > 0.0:
        raise ValueError(f"lr * weight_decay must be < 1 (got {lr * weight_decay}); "
                         "otherwise weight decay flips the sign of the weights")
    if not scale > 0.0:
        raise ValueError(f"the lazy scale must be positive, got {scale}")
    n = len(sizes)
    coef = np.empty((n, NCOEF), dtype=np.float32)
    # longest chunk over which the scale cannot fall from 1 below fold_below
    if shrink < 1.0:
        longest = max(1, int(math.floor(math.log(fold_below) / math.log(shrink))))
    else:
        longest = chunk
    chunk = max(1, min(chunk, longest))
    chunks: list[tuple[int, int, float | None]] = []
    # lr / B in float32, exactly the reference's np.float32(lr / batch_size)
    steps = np.array([np.float32(lr / float(b)) for b in np.unique(sizes)], dtype=np.float64)[
        np.searchsorted(np.unique(sizes), sizes)] if n else np.zeros(0)
    s = float(scale)
    t0 = 0
    while t0 < n:
        length = min(chunk, n - t0)
        fold = None
        if s * shrink ** length < fold_below:
            fold, s = s, 1.0
        before = s * shrink ** np.arange(length, dtype=np.float64)      # s before each step of the chunk
        after = before * shrink
        coef[t0:t0 + length, 0] = before
        coef[t0:t0 + length, 1] = steps[t0:t0 + length] / after
        coef[t0:t0 + length, 2] = steps[t0:t0 + length]
        coef[t0:t0 + length, 3] = shrink32
        s = float(after[-1])
        chunks.append((t0, length, fold))
        t0 += length
    return StepPlan(coef=coef, chunks=chunks, end_scale=s)


def memory_plan(n_samples: int, n_inputs: int, nnz: int, hidden: tuple[int, ...], *, batch_size: int = 35,
                batch_nnz: int | None = None, side_dim: int = 0, scatter: str = "segment", snapshot: bool = True,
                n_sm: int = 132, blocks_per_sm: int = 4, block_threads: int = 256) -> dict[str, int]:
    """Bytes of device memory the engine allocates for a training run, by buffer group.

    Mirrors :class:`CudaEngine`'s allocations (``__init__``, ``_upload_params``,
    ``_ensure_capacity``): the training CSR (int64 indptr, int32 indices, float32 data), the
    parameters in the padded device layout, one lazily materialised snapshot (the trainer keeps
    the last good epoch), the segment scatter's column tables and the per-batch scratch.
    ``batch_nnz`` is the largest batch's known entries (default: every known entry, an upper
    bound).  The CuPy pool rounds each allocation up to 512 bytes, which this leaves out.
    """
    hp = [pad4(h) for h in hidden]
    rows, L = int(batch_size), len(hidden) + 1
    batch_nnz = int(nnz if batch_nnz is None else batch_nnz)
    params = 4 * (n_inputs * hp[0] + n_inputs * hp[-1]                      # W_in^T, W_out (lazy scale)
                  + sum(hp[i + 1] * hp[i] for i in range(L - 2))            # dense hidden layers
                  + sum(hidden) + n_inputs                                  # biases
                  + side_dim * (sum(hidden) + n_inputs))                    # side weights
    data = 8 * (n_samples + 1) + 8 * nnz + 4 * n_samples                    # CSR + epoch order
    data += 12 * nnz + 8 * (n_samples + 1) + 4 * n_samples                  # epoch entry tables, starts, swaps
    n_steps = -(-n_samples // rows)
    warps = n_sm * blocks_per_sm * (block_threads // 32)                    # an upper bound of the grid
    scratch = (4 * n_steps * NCOEF + 4 * 4 * rows + 4 * (rows + 1)          # coefficients, batch tables
               + 4 * (warps + rows) * (hp[0] + hp[-1]) + 8 * warps          # warp partial rows, loss partials
               + 4 * rows * (2 * sum(hp) + 2 * sum(hp[1:])))                # h, delta, dense z / dacc
    side = 4 * n_samples * side_dim
    if scatter == "segment":
        tables = 8 * n_inputs * rows + 8 * n_inputs                         # tdelta, tx; stamp, touched
    else:
        tables = 4 * batch_nnz
    plan = dict(parameters=params, snapshot=params if snapshot else 0, data=data, side=side,
                scatter_tables=tables, scratch=scratch)
    plan["total"] = sum(plan.values())
    return plan


#: per-SM limits of sm_90 (H100/H200), used when the device does not report its own
SM90_LIMITS = {"MaxRegistersPerMultiprocessor": 65536, "MaxSharedMemoryPerMultiprocessor": 233472,
               "MaxThreadsPerMultiProcessor": 2048, "MaxBlocksPerMultiprocessor": 32}


def resident_blocks(num_regs: int, threads: int, dynamic_smem: int = 0, static_smem: int = 0,
                    limits: dict | None = None) -> int:
    """Blocks of ``threads`` threads that fit on one SM at once (the CUDA occupancy calculation):
    registers are allocated per warp in units of 256, shared memory per block with 1 KiB reserved."""
    lim = dict(SM90_LIMITS)
    lim.update({k: v for k, v in (limits or {}).items() if k in SM90_LIMITS and v})
    warps = -(-int(threads) // 32)
    regs_per_warp = -(-max(int(num_regs), 1) * 32 // 256) * 256
    by_regs = (lim["MaxRegistersPerMultiprocessor"] // regs_per_warp) // warps
    by_threads = lim["MaxThreadsPerMultiProcessor"] // (warps * 32)
    smem = int(dynamic_smem) + int(static_smem)
    by_smem = lim["MaxSharedMemoryPerMultiprocessor"] // (smem + 1024) if smem else lim["MaxBlocksPerMultiprocessor"]
    return max(1, min(by_regs, by_threads, by_smem, lim["MaxBlocksPerMultiprocessor"]))


def kernel_attr(fn, name: str, default: int = 0) -> int:
    try:
        value = fn.attributes.get(name)
    except Exception:
        value = getattr(fn, name, None)
    return default if value is None else int(value)


def device_limits(cp) -> dict:
    try:
        attrs = cp.cuda.Device().attributes
        return {k: int(attrs[k]) for k in SM90_LIMITS if k in attrs}
    except Exception:
        return {}


def launch_plan(kernels: dict, cp, hidden: tuple[int, ...], block_threads: int = MAX_THREADS) -> dict:
    """What the engine launches for a network with ``hidden`` units: for each sparse kernel its
    registers, warps per block, dynamic shared memory, resident blocks per SM and grid."""
    n_sm, limits = multiprocessors(cp), device_limits(cp)
    widths = {"cfn_encode": pad4(hidden[0]), "cfn_output": pad4(hidden[-1])}
    out = {}
    for name in SPARSE_KERNELS:
        fn = kernels[name]
        hp = widths.get(name)
        wpb = block_threads // 32 if hp is None else max(1, min(block_threads // 32, SMEM_LIMIT // (hp * 4)))
        smem = 0 if hp is None else wpb * hp * 4
        regs = kernel_attr(fn, "num_regs", 32)
        per_sm = resident_blocks(regs, 32 * wpb, smem, kernel_attr(fn, "shared_size_bytes"), limits)
        out[name] = dict(num_regs=regs, warps_per_block=wpb, dynamic_smem=smem, blocks_per_sm=per_sm,
                         grid=per_sm * n_sm, sms=n_sm)
    return out


def pad4(n: int) -> int:
    return (int(n) + 3) // 4 * 4


def multiprocessors(cp) -> int:
    try:
        return int(cp.cuda.Device().attributes["MultiProcessorCount"])
    except Exception:
        try:
            return int(cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"])
        except Exception:
            return 80
