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


def effective_weight(float[:, ::1] W, const float[:, ::1] u, const float[:, ::1] v_t, float[:, ::1] K,
                     float[:, ::1] out, int nthreads, const float[:, ::1] grad=None, float shrink=1.0,
                     float step=0.0):
    """``K`` and ``out = W * K`` of one layer (both fan_out x fan_in, written in place); ``v_t``: v transposed
    (d x fan_in), so that the inner loops run along a row of K (vectorised).  With ``grad`` (the gradient of W)
    the SGD step ``W <- W * shrink - step * grad`` is taken first, in the same pass."""
    cdef Py_ssize_t n_out = W.shape[0], n_in = W.shape[1], d = u.shape[1], i, j, k
    cdef float ui, diff, kij, w
    cdef bint update = grad is not None
    if u.shape[0] != n_out or v_t.shape[1] != n_in or v_t.shape[0] != d or K.shape[0] != n_out \
            or K.shape[1] != n_in or out.shape[0] != n_out or out.shape[1] != n_in \
            or (update and (grad.shape[0] != n_out or grad.shape[1] != n_in)):
        raise ValueError("effective_weight: shapes of W, u, v_t, K, out and grad disagree")
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
                w = W[i, j]
                if update:                      # as the reference: θ·shrink, then − step·g
                    w = w * shrink
                    w = w - step * grad[i, j]
                    W[i, j] = w
                kij = 1.0 - K[i, j]
                kij = kij if kij > 0.0 else 0.0
                K[i, j] = kij
                out[i, j] = w * kij


def masked_product(float[:, ::1] G, const float[:, ::1] W, const float[:, ::1] K, const float[:, ::1] v_t,
                   float[:, ::1] M, double[:, ::1] mv, int nthreads):
    """From ``G`` = the gradient of the effective weight ``W * K``: ``M = G * W`` where ``K > 0`` (else 0), ``G``
    becomes the gradient of ``W``, ``G * K`` (in place), and ``mv[i] = (M v)_i, rowsum(M)_i`` (fan_out x (d + 1),
    from the row of M just written, still in cache).  The gradient of u follows from ``mv``, that of v from one
    thin product ``Mᵀ [u 1]`` (``cfn_fast.backends.cpu_kernelised``)."""
    cdef Py_ssize_t n_out = G.shape[0], n_in = G.shape[1], d = v_t.shape[0], i, j, k
    cdef float g, kij
    cdef double acc
    if W.shape[0] != n_out or W.shape[1] != n_in or K.shape[0] != n_out or K.shape[1] != n_in \
            or M.shape[0] != n_out or M.shape[1] != n_in or v_t.shape[1] != n_in or mv.shape[0] != n_out \
            or mv.shape[1] != d + 1:
        raise ValueError("masked_product: shapes of G, W, K, v_t, M and mv disagree")
    if n_out == 0 or n_in == 0:
        mv[:, :] = 0.0
        return
    with nogil:
        for i in prange(n_out, num_threads=max(nthreads, 1), schedule="static"):
            for j in range(n_in):
                g = G[i, j]
                kij = K[i, j]
                M[i, j] = g * W[i, j] if kij > 0.0 else 0.0
                G[i, j] = g * kij
            for k in range(d):
                acc = 0.0
                for j in range(n_in):
                    acc = acc + M[i, j] * v_t[k, j]
                mv[i, k] = acc
            acc = 0.0
            for j in range(n_in):
                acc = acc + M[i, j]
            mv[i, d] = acc
