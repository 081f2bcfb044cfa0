# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython + OpenMP kernels of kernelised weights (Sparse FC; ``kernel_dim > 0``), for the CPU engine's
kernelised path (``cfn_fast.backends.cpu_kernelised``).

The specification is ``cfn_fast.backends.kernelised`` (NumPy): per layer, W is fan_out x fan_in (canonical
layout, row-major), u is fan_out x d (one vector per output unit), v is fan_in x d (one per input unit) and

    K_ij = max(0, 1 - |u_i - v_j|^2)          (the squares summed dimension by dimension, in float32)

Each kernel is dense over the layer, parallel with OpenMP ``prange`` over output rows, each output element
written by one thread: results do not depend on the thread count.
"""
from cython.parallel cimport prange

__all__ = ["effective_weight", "masked_product"]


def effective_weight(const float[:, ::1] W, const float[:, ::1] u, const float[:, ::1] v_t, float[:, ::1] K,
                     float[:, ::1] out, int nthreads):
    """``K`` and ``out = W * K`` of one layer (both fan_out x fan_in, written in place); ``v_t``: v transposed
    (d x fan_in), so that the inner loops run along a row of K (vectorised)."""
    cdef Py_ssize_t n_out = W.shape[0], n_in = W.shape[1], d = u.shape[1], i, j, k
    cdef float ui, diff, kij
    if u.shape[0] != n_out or v_t.shape[1] != n_in or v_t.shape[0] != d or K.shape[0] != n_out \
            or K.shape[1] != n_in or out.shape[0] != n_out or out.shape[1] != n_in:
        raise ValueError("effective_weight: shapes of W, u, v_t, K and out disagree")
    if n_out == 0 or n_in == 0:
        return
    with nogil:
        for i in prange(n_out, num_threads=max(nthreads, 1), schedule="static"):
            for j in range(n_in):
                K[i, j] = 0.0
            for k in range(d):                  # the squares summed dimension by dimension, as the reference
                ui = u[i, k]
                for j in range(n_in):
                    diff = ui - v_t[k, j]
                    K[i, j] = K[i, j] + diff * diff
            for j in range(n_in):
                kij = 1.0 - K[i, j]
                kij = kij if kij > 0.0 else 0.0
                K[i, j] = kij
                out[i, j] = W[i, j] * kij


def masked_product(float[:, ::1] G, const float[:, ::1] W, const float[:, ::1] K, float[:, ::1] M, int nthreads):
    """From ``G`` = the gradient of the effective weight ``W * K``: ``M = G * W`` where ``K > 0`` (else 0), and
    ``G`` becomes the gradient of ``W``, ``G * K`` (in place).  The unit vectors' gradients are then two thin
    products of ``M`` (``cfn_fast.backends.cpu_kernelised``)."""
    cdef Py_ssize_t n_out = G.shape[0], n_in = G.shape[1], i, j
    cdef float g, kij
    if W.shape[0] != n_out or W.shape[1] != n_in or K.shape[0] != n_out or K.shape[1] != n_in \
            or M.shape[0] != n_out or M.shape[1] != n_in:
        raise ValueError("masked_product: shapes of G, W, K and M disagree")
    if n_out == 0 or n_in == 0:
        return
    with nogil:
        for i in prange(n_out, num_threads=max(nthreads, 1), schedule="static"):
            for j in range(n_in):
                g = G[i, j]
                kij = K[i, j]
                M[i, j] = g * W[i, j] if kij > 0.0 else 0.0
                G[i, j] = g * kij
