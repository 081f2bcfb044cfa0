# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython + OpenMP kernels of kernelised weights (Sparse FC; ``kernel_dim > 0``), for the CPU engine's
kernelised path (``cfn_fast.backends.cpu_kernelised``).

The specification is ``cfn_fast.backends.kernelised`` (NumPy): per layer, W is fan_out x fan_in (canonical
layout, row-major), u is fan_out x d (one vector per output unit), v is fan_in x d (one per input unit) and

    K_ij = max(0, 1 - |u_i - v_j|^2)          (the squares summed dimension by dimension, in float32)

Each kernel is dense over the layer, parallel with OpenMP ``prange`` over output rows (or blocks of input
columns where it sums over rows), each output element written by one thread: results do not depend on the
thread count.
"""
from cython.parallel cimport prange

__all__ = ["effective_weight", "kernel_backward"]


cdef inline float squared_distance(const float* a, const float* b, Py_ssize_t d) noexcept nogil:
    cdef float s = 0.0, diff
    cdef Py_ssize_t k
    for k in range(d):
        diff = a[k] - b[k]
        s = s + diff * diff
    return s


def effective_weight(const float[:, ::1] W, const float[:, ::1] u, const float[:, ::1] v, float[:, ::1] K,
                     float[:, ::1] out, int nthreads):
    """``K`` and ``out = W * K`` of one layer (both fan_out x fan_in, written in place)."""
    cdef Py_ssize_t n_out = W.shape[0], n_in = W.shape[1], d = u.shape[1], i, j
    cdef float kij
    if u.shape[0] != n_out or v.shape[0] != n_in or v.shape[1] != d or K.shape[0] != n_out \
            or K.shape[1] != n_in or out.shape[0] != n_out or out.shape[1] != n_in:
        raise ValueError("effective_weight: shapes of W, u, v, K and out disagree")
    if n_out == 0 or n_in == 0:
        return
    with nogil:
        for i in prange(n_out, num_threads=max(nthreads, 1), schedule="static"):
            for j in range(n_in):
                kij = 1.0 - squared_distance(&u[i, 0], &v[j, 0], d) if d > 0 else 1.0
                if kij < 0.0:
                    kij = 0.0
                K[i, j] = kij
                out[i, j] = W[i, j] * kij


def kernel_backward(float[:, ::1] G, const float[:, ::1] W, const float[:, ::1] K, const float[:, ::1] u,
                    const float[:, ::1] v, float[:, ::1] M, double[:, ::1] gu, double[:, ::1] gv,
                    double[::1] colsum, int nthreads):
    """From ``G`` = the gradient of the effective weight ``W * K``: ``G`` becomes the gradient of ``W``
    (``G * K``, in place), ``gu`` and ``gv`` the gradients of ``u`` and ``v`` (float64; ``M`` and ``colsum``:
    scratch, fan_out x fan_in and fan_in).

    ``M = G * W`` where ``K > 0`` (else 0); ``gu_i = -2 (sum_j M_ij u_i - sum_j M_ij v_j)`` (pass 1, parallel over
    rows i); ``gv_j = 2 (sum_i M_ij u_i - sum_i M_ij v_j)`` (pass 2, parallel over blocks of 64 columns j,
    each reading the rows' slices of its block)."""
    cdef Py_ssize_t n_out = G.shape[0], n_in = G.shape[1], d = u.shape[1], i, j, k, block, j0, j1
    cdef Py_ssize_t n_blocks = (n_in + 63) // 64
    cdef double rowsum
    cdef float m
    if W.shape[0] != n_out or W.shape[1] != n_in or K.shape[0] != n_out or K.shape[1] != n_in \
            or M.shape[0] != n_out or M.shape[1] != n_in or u.shape[0] != n_out or v.shape[0] != n_in \
            or v.shape[1] != d or gu.shape[0] != n_out or gu.shape[1] != d or gv.shape[0] != n_in \
            or gv.shape[1] != d or colsum.shape[0] != n_in:
        raise ValueError("kernel_backward: shapes of G, W, K, u, v, M, gu, gv and colsum disagree")
    if n_out == 0 or n_in == 0:
        return
    with nogil:
        for i in prange(n_out, num_threads=max(nthreads, 1), schedule="static"):
            rowsum = 0.0
            for k in range(d):
                gu[i, k] = 0.0
            for j in range(n_in):
                m = G[i, j] * W[i, j] if K[i, j] > 0.0 else 0.0
                M[i, j] = m
                G[i, j] = G[i, j] * K[i, j]
                if m != 0.0:
                    rowsum = rowsum + m
                    for k in range(d):
                        gu[i, k] = gu[i, k] + m * v[j, k]
            for k in range(d):
                gu[i, k] = -2.0 * (rowsum * u[i, k] - gu[i, k])
        for block in prange(n_blocks, num_threads=max(nthreads, 1), schedule="static"):
            j0 = block * 64
            j1 = min(j0 + 64, n_in)
            for j in range(j0, j1):
                colsum[j] = 0.0
                for k in range(d):
                    gv[j, k] = 0.0
            for i in range(n_out):
                for j in range(j0, j1):
                    m = M[i, j]
                    if m != 0.0:
                        colsum[j] = colsum[j] + m
                        for k in range(d):
                            gv[j, k] = gv[j, k] + m * u[i, k]
            for j in range(j0, j1):
                for k in range(d):
                    gv[j, k] = 2.0 * (gv[j, k] - colsum[j] * v[j, k])
