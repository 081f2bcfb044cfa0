# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython + OpenMP kernels of one shard's split step (cfn_fast/backends/cpu_shard.py; the specification is
cfn_fast/backends/numpy_shard.py).

A shard owns the inputs ``[first, stop)``: the first layer's weight columns of those inputs and the output
layer's rows (weight, bias, side weight).  Those four per-input arrays live here, each as one contiguous row
per input (the first layer's weight transposed), and cost O(entries of the batch x width) per step:

gather        the batch's entries in this shard (column, value, hidden flag) in CSR order.  The hidden flag
              is the unsharded one bit for bit: splitmix64(key + the entry's position in the *whole*
              training CSR), top 24 bits < threshold; the swap rule looks at the sample's whole row (the
              global row pointer), hashing its positions until one is visible (the row is then not all
              hidden).  Then a counting sort of the entries by column (the distinct columns in increasing
              order, a stable permutation);
partition     the distinct columns cut into at most 16 groups of ~equal entry counts (a function of the batch,
              never of the thread count), each with its own B x width partial;
encode        parallel over groups: each distinct column's row V_in[c] is read once and added, times x_e, into
              the group's partial z of the rows whose entry of c is visible; z = scale_in * the sum of the
              partials in group order;
output        parallel over groups, column by column (the row V_out[c] stays in cache from first to last use):
              the outputs at the batch's entries of c (dots with the codes), the loss (float64, per column,
              then summed in column order), delta_e = 2 w_e (y_e - x_e)(1 - y_e^2), the group's partial of
              d loss / d code of those rows (scale_out delta_e V_out[c], the old row), then the update of the
              row, its bias and side row; the part of d loss / d code = the sum of the partials in group order;
input update  recorded per distinct column (the rows of dz and the coefficients f x_e of its visible
              entries): the next encode applies V_in[c] += sum f x_e dz[row_e] to each row it loads anyway
              before using it, the other rows on their own (what the unsharded engine does: the same
              operations in the same order as applying the update at once, one pass over the rows less).

Exact weight decay at sparse cost, as in the unsharded CPU engine (cfn_cpu.pyx): the input columns are kept
as ``scale_in * V_in`` and the output rows as ``scale_out * (V_out, b_out, S_out)``; a step multiplies the
scale (float64) by the reference's float32 shrink ``1 - lr λ`` and moves the touched rows of ``V`` by
``-(lr / B) g / scale_new``.  Two scales, since the output rows move in ``output`` and the input columns in
``input_update`` of the same step.  ``V`` is folded back (scale = 1) before a scale drops below 1e-10.

Every write has one owner (a row of the batch, a column, a group's partial) and every sum a fixed order, so results do not
depend on the thread count.  No kernel holds the GIL: shards may run as threads of one process.  The inner
loops (blocked multi-axpy and multi-dot) are plain C compiled for AVX-512F+FMA, AVX2+FMA and the baseline; the
best the CPU runs is picked at import (:func:`simd_level`).
"""
from cython.parallel cimport prange
from libc.stdint cimport uint64_t, int64_t, int32_t, uint8_t
from libc.string cimport memcpy, memset

import numpy as np

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>

    static inline uint64_t sh_splitmix64(uint64_t x) {
        uint64_t z = x + 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }

    static inline int sh_ctz64(uint64_t x) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int k = 0; while (!(x & 1)) { x >>= 1; k++; } return k;
    #endif
    }

    /* The row primitives, plain C loops that the compiler vectorises, instantiated for AVX-512F+FMA,
       AVX2+FMA and the build's baseline; sh_simd_init picks the best the CPU runs (as cfn_cpu.pyx does; GCC's
       target_clones dispatch by CPU model and picks the baseline on AMD processors).  Every sum has one order
       for a given m: results never depend on the thread count.

       maxpy(y, n, m, x[], c)   y += sum_j c[j] x[j]   (four x rows per pass over y; y aliases no x)
       saxpy(v, n, m, y[], c)   y[j] += c[j] v         (four y rows per pass over v; distinct rows, none v)
       dots(v, rows[], m, n, out)   out[j] = v . rows[j]  (four rows per pass over v)
       tanh(x, n)               x[i] = tanh(x[i]) within ~2 ulp, both branches computed and picked by bit masks (the
                                loop vectorises; -fno-finite-math-only keeps float selects as branches):
                                |x| < 0.625: x + x^3 P(x^2); else 1 - 2 / (2^t + 1), t = 2|x| / ln 2 (|x| clamped
                                at 10, where tanh is 1 in float), 2^t = 2^round(t) Q(t - round(t)); then the sign of
                                x; NaN stays NaN.  The float32 coefficients of the fits P and Q are cfn_cpu.pyx's
                                (its vector tanh). */
    #define SH_TP0 -0.3333333134651184f
    #define SH_TP1 0.1333320587873459f
    #define SH_TP2 -0.05394676327705383f
    #define SH_TP3 0.021700704470276833f
    #define SH_TP4 -0.008177398703992367f
    #define SH_TP5 0.0021429620683193207f
    #define SH_EQ0 1.0f
    #define SH_EQ1 0.6931471824645996f
    #define SH_EQ2 0.24022646248340607f
    #define SH_EQ3 0.05550328642129898f
    #define SH_EQ4 0.009618489071726799f
    #define SH_EQ5 0.0013399932067841291f
    #define SH_EQ6 0.00015345806605182588f
    #define SH_TWO_LOG2E 2.8853900817779268f
    #define SH_DEFINE(SFX, ATTR)                                                                              \
    ATTR static void sh_maxpy_##SFX(float *restrict y, ptrdiff_t n, int m, const float *const *x,            \
                                    const float *c) {                                                        \
        int j = 0;                                                                                           \
        for (; j + 4 <= m; j += 4) {                                                                         \
            const float *restrict x0 = x[j], *restrict x1 = x[j + 1], *restrict x2 = x[j + 2],              \
                        *restrict x3 = x[j + 3];                                                             \
            const float c0 = c[j], c1 = c[j + 1], c2 = c[j + 2], c3 = c[j + 3];                              \
            for (ptrdiff_t i = 0; i < n; i++)                                                                \
                y[i] += c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i];                                   \
        }                                                                                                    \
        for (; j < m; j++) {                                                                                 \
            const float *restrict x0 = x[j];                                                                 \
            const float c0 = c[j];                                                                           \
            for (ptrdiff_t i = 0; i < n; i++) y[i] += c0 * x0[i];                                            \
        }                                                                                                    \
    }                                                                                                        \
    ATTR static void sh_saxpy_##SFX(const float *restrict v, ptrdiff_t n, int m, float *const *y,            \
                                    const float *c) {                                                        \
        int j = 0;                                                                                           \
        for (; j + 4 <= m; j += 4) {                                                                         \
            float *restrict y0 = y[j], *restrict y1 = y[j + 1], *restrict y2 = y[j + 2],                    \
                  *restrict y3 = y[j + 3];                                                                   \
            const float c0 = c[j], c1 = c[j + 1], c2 = c[j + 2], c3 = c[j + 3];                              \
            for (ptrdiff_t i = 0; i < n; i++) {                                                              \
                const float vi = v[i];                                                                       \
                y0[i] += c0 * vi; y1[i] += c1 * vi; y2[i] += c2 * vi; y3[i] += c3 * vi;                      \
            }                                                                                                \
        }                                                                                                    \
        for (; j < m; j++) {                                                                                 \
            float *restrict y0 = y[j];                                                                       \
            const float c0 = c[j];                                                                           \
            for (ptrdiff_t i = 0; i < n; i++) y0[i] += c0 * v[i];                                            \
        }                                                                                                    \
    }                                                                                                        \
    ATTR static void sh_dots_##SFX(const float *restrict v, const float *const *rows, int m, ptrdiff_t n,    \
                                   float *restrict out) {                                                    \
        int j = 0;                                                                                           \
        for (; j + 4 <= m; j += 4) {                                                                         \
            const float *restrict r0 = rows[j], *restrict r1 = rows[j + 1], *restrict r2 = rows[j + 2],     \
                        *restrict r3 = rows[j + 3];                                                          \
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;                                                \
            for (ptrdiff_t i = 0; i < n; i++) {                                                              \
                s0 += v[i] * r0[i]; s1 += v[i] * r1[i]; s2 += v[i] * r2[i]; s3 += v[i] * r3[i];              \
            }                                                                                                \
            out[j] = s0; out[j + 1] = s1; out[j + 2] = s2; out[j + 3] = s3;                                  \
        }                                                                                                    \
        for (; j < m; j++) {                                                                                 \
            const float *restrict r0 = rows[j];                                                              \
            float s0 = 0.0f;                                                                                 \
            for (ptrdiff_t i = 0; i < n; i++) s0 += v[i] * r0[i];                                            \
            out[j] = s0;                                                                                      \
        }                                                                                                     \
    }                                                                                                         \
    ATTR static void sh_tanh_##SFX(float *restrict x, ptrdiff_t n) {                                          \
        for (ptrdiff_t i = 0; i < n; i++) {                                                                   \
            uint32_t vb; memcpy(&vb, &x[i], 4);                                                               \
            const uint32_t ab = vb & 0x7fffffffu;           /* |x| */                                         \
            const uint32_t cb = ab < 0x41200000u ? ab : 0x41200000u;  /* min(|x|, 10) on the bits */          \
            float a, c; memcpy(&a, &ab, 4); memcpy(&c, &cb, 4);                                               \
            const float a2 = a * a;                                                                           \
            float p = SH_TP5 * a2 + SH_TP4;                                                                   \
            p = p * a2 + SH_TP3; p = p * a2 + SH_TP2; p = p * a2 + SH_TP1; p = p * a2 + SH_TP0;               \
            const float small = a + a * a2 * p;                                                               \
            const float t = c * SH_TWO_LOG2E;                                                                 \
            const int k = (int)(t + 0.5f);                  /* t >= 0: rounded to nearest */                  \
            const float f = t - (float)k;                                                                     \
            float q = SH_EQ6 * f + SH_EQ5;                                                                    \
            q = q * f + SH_EQ4; q = q * f + SH_EQ3; q = q * f + SH_EQ2; q = q * f + SH_EQ1; q = q * f + SH_EQ0;\
            const int bits = (k + 127) << 23;               /* 2^k, k <= 29 */                                \
            float scale; memcpy(&scale, &bits, 4);                                                            \
            const float large = 1.0f - 2.0f / (q * scale + 1.0f);                                             \
            uint32_t sb, lb; memcpy(&sb, &small, 4); memcpy(&lb, &large, 4);                                  \
            const uint32_t small_mask = 0u - (uint32_t)(ab < 0x3f200000u);    /* |x| < 0.625 */               \
            const uint32_t nan_mask = 0u - (uint32_t)(ab > 0x7f800000u);                                      \
            uint32_t rb = (sb & small_mask) | (lb & ~small_mask);                                             \
            rb = ((rb & ~nan_mask) | (vb & nan_mask)) | (vb & 0x80000000u);  /* NaN stays NaN; the sign of x */\
            memcpy(&x[i], &rb, 4);                                                                            \
        }                                                                                                     \
    }

    #if defined(_MSC_VER) && !defined(__clang__)
    #define restrict __restrict
    #endif
    SH_DEFINE(generic, )
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #define SH_X86 1
    SH_DEFINE(avx512, __attribute__((target("avx512f,fma"))))
    SH_DEFINE(avx2, __attribute__((target("avx2,fma"))))
    #endif

    typedef void (*sh_maxpy_t)(float *, ptrdiff_t, int, const float *const *, const float *);
    typedef void (*sh_saxpy_t)(const float *, ptrdiff_t, int, float *const *, const float *);
    typedef void (*sh_dots_t)(const float *, const float *const *, int, ptrdiff_t, float *);
    typedef void (*sh_tanh_t)(float *, ptrdiff_t);
    static sh_maxpy_t sh_maxpy_p = sh_maxpy_generic;
    static sh_saxpy_t sh_saxpy_p = sh_saxpy_generic;
    static sh_dots_t sh_dots_p = sh_dots_generic;
    static sh_tanh_t sh_tanh_p = sh_tanh_generic;
    #define SH_USE(SFX) do { sh_maxpy_p = sh_maxpy_##SFX; sh_saxpy_p = sh_saxpy_##SFX; sh_dots_p = sh_dots_##SFX; \
        sh_tanh_p = sh_tanh_##SFX; } \
        while (0)
    static int sh_simd = 0;   /* 0 generic, 1 avx2+fma, 2 avx512f+fma */
    /* level: -1 the best the CPU has, else the level wanted (capped at what the CPU has) */
    static int sh_simd_init(int level) {
        int best = 0;
    #ifdef SH_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
        if (best == 1 && __builtin_cpu_supports("avx512f")) best = 2;
    #endif
        if (level < 0 || level > best) level = best;
        SH_USE(generic);
    #ifdef SH_X86
        if (level == 1) SH_USE(avx2);
        if (level == 2) SH_USE(avx512);
    #endif
        sh_simd = level;
        return level;
    }
    #define cfn_shard_maxpy(y, n, m, x, c) sh_maxpy_p((y), (n), (m), (x), (c))
    #define cfn_shard_saxpy(v, n, m, y, c) sh_saxpy_p((v), (n), (m), (y), (c))
    #define cfn_shard_dots(v, rows, m, n, out) sh_dots_p((v), (rows), (m), (n), (out))
    #define cfn_shard_tanh(x, n) sh_tanh_p((x), (n))
    """
    int sh_simd_init(int level) nogil
    uint64_t sh_splitmix64(uint64_t x) nogil
    void cfn_shard_maxpy(float* y, Py_ssize_t n, int m, const float** x, const float* c) nogil
    void cfn_shard_dots(const float* v, const float** rows, int m, Py_ssize_t n, float* out) nogil
    void cfn_shard_saxpy(const float* v, Py_ssize_t n, int m, float** y, const float* c) nogil
    void cfn_shard_tanh(float* x, Py_ssize_t n) nogil
    int sh_ctz64(uint64_t x) nogil

_SIMD_NAMES = ("generic", "avx2", "avx512")
_simd = sh_simd_init(-1)


def simd_level():
    """The SIMD path of the row primitives: 'avx512', 'avx2' or 'generic'."""
    return _SIMD_NAMES[_simd]


def set_simd_level(name):
    """Force a SIMD path ('generic', 'avx2', 'avx512' or 'best', capped by the CPU; for tests); returns the one
    in use.  Not while a step runs."""
    global _simd
    _simd = sh_simd_init(-1 if name is None or name == "best" else _SIMD_NAMES.index(name))
    return _SIMD_NAMES[_simd]


# fold a scale into its arrays (scale = 1) before it drops below this
cdef double FOLD_BELOW = 1e-10
cdef enum:
    MAX_GROUPS = 16            # most column groups of a batch (each: a B x H partial of z or dh)
    ENTRIES_PER_GROUP = 1024   # target number of batch entries per group
    PART_FLOATS = 4 << 20      # bound on the floats of all partials together (at least one group)


cdef inline void* _ptr(object a) except? NULL:
    """The data pointer of a C-contiguous array this module allocated (NULL when it is empty)."""
    if a.size == 0:
        return NULL
    return <void*><size_t>a.ctypes.data


cdef void scale_rows(float* p, Py_ssize_t n, double s, int nt) noexcept nogil:
    """p[k] = float(p[k] * s) (a fold)."""
    cdef Py_ssize_t k
    if p == NULL:
        return
    for k in prange(n, schedule='static', num_threads=nt):
        p[k] = <float>(<double>p[k] * s)


def tanh_array(const float[::1] x):
    """The kernels' vector tanh of each entry (to test its accuracy)."""
    out = np.array(x, dtype=np.float32)
    cdef float[::1] o = out
    if o.shape[0]:
        cfn_shard_tanh(&o[0], o.shape[0])
    return out


def splitmix64_array(const uint64_t[::1] x):
    """SplitMix64 of each entry (to test the kernel's hash against cfn_fast.corruption)."""
    out = np.empty(x.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        o[i] = sh_splitmix64(x[i])
    return out


cdef class ShardState:
    """One shard's per-input arrays and the buffers of the mini-batch in progress.

    ``indptr`` / ``indices`` / ``data``: the shard's CSR (n_samples x n_local); ``positions``: each entry's
    position in the whole training CSR; ``row_starts``: the whole CSR's row pointer; ``side``: every sample's
    side row (n_samples x side_dim) or None.  Parameters start at zero: :meth:`load` them."""

    cdef readonly int n_local, h_first, h_last, side_dim, n_samples
    cdef public int nthreads
    cdef readonly double scale_in, scale_out
    cdef float alpha, beta
    cdef uint64_t threshold
    # the per-input arrays (before their scale): V_in (n_local x h_first), V_out, b_out, S_out; read them
    # through export (V_in may have a deferred update pending)
    cdef object win, wout, bout, sout
    cdef float* p_win
    cdef float* p_wout
    cdef float* p_bout
    cdef float* p_sout
    # the shard's data
    cdef object _indptr, _indices, _data, _positions, _row_starts, _side
    cdef const int64_t* indptr
    cdef const int32_t* indices
    cdef const float* data
    cdef const int64_t* positions
    cdef const int64_t* row_starts
    cdef const float* side
    # the mini-batch in progress: B rows, ne entries in nd distinct columns
    cdef readonly int batch_rows
    cdef int nd
    cdef Py_ssize_t ne
    cdef int cap_b
    cdef Py_ssize_t cap_e
    cdef object _buf
    cdef int64_t* eoff               # entries of row i: eoff[i] .. eoff[i + 1] - 1 (CSR order)
    cdef int32_t* erow
    cdef int32_t* ecol
    cdef float* evl
    cdef uint8_t* ehid
    cdef float* eout                 # outputs, then deltas, at the entries (sorted order)
    cdef int32_t* perm               # sorted position q -> entry
    cdef int32_t* dcol               # distinct columns, increasing
    cdef int32_t* seg                # column s holds sorted positions seg[s] .. seg[s + 1] - 1
    cdef double* colloss
    cdef const float** xp            # row pointers of a multi-axpy / multi-dot (each column its range)
    cdef float* xc                   # their coefficients
    cdef float** yp                  # rows of the partials a column adds into (each column its range)
    cdef int32_t* gstart             # group g holds the distinct columns gstart[g] .. gstart[g + 1] - 1
    cdef object _part
    cdef float* part                 # the groups' B x H partials, one after the other
    cdef int32_t* pstart             # group g applies the pending columns pstart[g] .. pstart[g + 1] - 1
    # the previous batch's input update, deferred to the next encode: pending column p (pend_dcol[p],
    # increasing) moves by sum over q in pend_seg[p] .. pend_seg[p + 1] - 1 of pend_coef[q] pend_xp[q]
    cdef object _pend
    cdef int pend_nd
    cdef float* pend_dz
    cdef float* pend_coef
    cdef const float** pend_xp
    cdef int32_t* pend_dcol
    cdef int32_t* pend_seg
    cdef float* sideb                # side rows of the batch
    cdef int32_t* ccount             # n_local, zero between batches
    cdef int32_t* slot               # n_local
    cdef uint64_t* bitmap            # n_local / 64, zero between batches

    def __init__(self, int n_local, int h_first, int h_last, int side_dim, indptr, indices, data, positions,
                 row_starts, side, double alpha, double beta, uint64_t threshold, int nthreads):
        if n_local < 1 or h_first < 1 or h_last < 1 or side_dim < 0:
            raise ValueError("a shard needs at least one input and one hidden unit in each layer")
        self.n_local, self.h_first, self.h_last, self.side_dim = n_local, h_first, h_last, side_dim
        self.alpha, self.beta, self.threshold = alpha, beta, threshold
        self.nthreads = nthreads
        self._indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(indices, dtype=np.int32)
        self._data = np.ascontiguousarray(data, dtype=np.float32)
        self._positions = np.ascontiguousarray(positions, dtype=np.int64)
        self._row_starts = np.ascontiguousarray(row_starts, dtype=np.int64)
        self.n_samples = len(self._indptr) - 1
        if len(self._row_starts) != self.n_samples + 1 or len(self._positions) != len(self._indices) \
                or len(self._data) != len(self._indices):
            raise ValueError("the shard's CSR, positions and global row pointer do not agree in size")
        # the kernels index with these: a malformed CSR is refused here, not met as a crash there
        ip, ix = self._indptr, self._indices
        if ip[0] != 0 or ip[len(ip) - 1] != len(ix) or np.any(np.diff(ip) < 0):
            raise ValueError("the shard's CSR row pointer must start at 0, never decrease and end at its entry count")
        if len(ix) and (ix.min() < 0 or ix.max() >= n_local):
            raise ValueError(f"the shard's CSR column indices must lie in [0, {n_local})")
        self.indptr = <const int64_t*>_ptr(self._indptr)
        self.indices = <const int32_t*>_ptr(self._indices)
        self.data = <const float*>_ptr(self._data)
        self.positions = <const int64_t*>_ptr(self._positions)
        self.row_starts = <const int64_t*>_ptr(self._row_starts)
        if side_dim > 0:
            self._side = np.ascontiguousarray(side, dtype=np.float32)
            if self._side.shape != (self.n_samples, side_dim):
                raise ValueError(f"side must have shape ({self.n_samples}, {side_dim}), got {self._side.shape}")
            self.side = <const float*>_ptr(self._side)
        else:
            self._side = None
            self.side = NULL
        self.win = np.zeros((n_local, h_first), np.float32)
        self.wout = np.zeros((n_local, h_last), np.float32)
        self.bout = np.zeros(n_local, np.float32)
        self.sout = np.zeros((n_local, side_dim), np.float32)
        self.p_win = <float*>_ptr(self.win)
        self.p_wout = <float*>_ptr(self.wout)
        self.p_bout = <float*>_ptr(self.bout)
        self.p_sout = <float*>_ptr(self.sout)
        self.scale_in = self.scale_out = 1.0
        columns = {"ccount": np.zeros(n_local, np.int32), "slot": np.zeros(n_local, np.int32),
                   "bitmap": np.zeros((n_local + 63) // 64, np.uint64)}
        self.ccount = <int32_t*>_ptr(columns["ccount"])
        self.slot = <int32_t*>_ptr(columns["slot"])
        self.bitmap = <uint64_t*>_ptr(columns["bitmap"])
        self._buf = {"columns": columns}
        self.cap_b = self.cap_e = 0
        self.batch_rows = 0
        self._part = None
        self._pend = None
        self.pend_nd = 0
        self._ensure(1, 1)

    # ----------------------------------------------------------------- parameters
    def load(self, first_weight, out_weight, out_bias, out_side):
        """The shard's per-input arrays from the canonical layout (first layer's weight columns h_first x
        n_local, output rows); scales become 1, a deferred update is dropped."""
        self.pend_nd = 0
        np.copyto(self.win, np.asarray(first_weight, np.float32).T)
        np.copyto(self.wout, out_weight)
        np.copyto(self.bout, out_bias)
        if self.side_dim > 0:
            np.copyto(self.sout, out_side)
        self.scale_in = self.scale_out = 1.0

    def export(self):
        """``(first-layer weight columns (h_first x n_local), output weight, bias, side weight)`` with the
        scales applied (each value rounded once from float64; a deferred update applied first)."""
        with nogil:
            self._flush_pending()
        first = scaled_copy(self.win, self.scale_in, self.nthreads).T.copy()
        return (first, scaled_copy(self.wout, self.scale_out, self.nthreads),
                scaled_copy(self.bout, self.scale_out, self.nthreads),
                scaled_copy(self.sout, self.scale_out, self.nthreads))

    cdef void _fold_in(self) noexcept nogil:
        if self.scale_in < FOLD_BELOW:
            scale_rows(self.p_win, <Py_ssize_t>self.n_local * self.h_first, self.scale_in, self.nthreads)
            self.scale_in = 1.0

    cdef void _fold_out(self) noexcept nogil:
        if self.scale_out < FOLD_BELOW:
            scale_rows(self.p_wout, <Py_ssize_t>self.n_local * self.h_last, self.scale_out, self.nthreads)
            scale_rows(self.p_bout, self.n_local, self.scale_out, self.nthreads)
            scale_rows(self.p_sout, <Py_ssize_t>self.n_local * self.side_dim, self.scale_out, self.nthreads)
            self.scale_out = 1.0

    # ----------------------------------------------------------------- the batch
    def _ensure(self, int B, Py_ssize_t ne):
        """Grow the batch buffers to B rows and ne entries."""
        if B <= self.cap_b and ne <= self.cap_e:
            return
        B = max(B, self.cap_b)
        ne = max(ne, self.cap_e, 1)
        b = {"columns": self._buf["columns"]}
        b["eoff"] = np.zeros(B + 1, np.int64)
        for name in ("erow", "ecol", "perm"):
            b[name] = np.zeros(ne, np.int32)
        for name in ("evl", "eout", "xc"):
            b[name] = np.zeros(ne, np.float32)
        b["ehid"] = np.zeros(ne, np.uint8)
        b["xp"] = np.zeros(ne, np.uint64)          # pointers: 64-bit slots
        b["yp"] = np.zeros(ne, np.uint64)
        b["gstart"] = np.zeros(MAX_GROUPS + 1, np.int32)
        b["pstart"] = np.zeros(MAX_GROUPS + 1, np.int32)
        nd = min(ne, self.n_local)
        b["dcol"] = np.zeros(nd, np.int32)
        b["seg"] = np.zeros(nd + 1, np.int32)
        b["colloss"] = np.zeros(nd, np.float64)
        b["sideb"] = np.zeros(B * self.side_dim + 1, np.float32)
        self._buf = b
        self.eoff = <int64_t*>_ptr(b["eoff"])
        self.erow = <int32_t*>_ptr(b["erow"])
        self.ecol = <int32_t*>_ptr(b["ecol"])
        self.perm = <int32_t*>_ptr(b["perm"])
        self.evl = <float*>_ptr(b["evl"])
        self.eout = <float*>_ptr(b["eout"])
        self.xc = <float*>_ptr(b["xc"])
        self.ehid = <uint8_t*>_ptr(b["ehid"])
        self.xp = <const float**>_ptr(b["xp"])
        self.yp = <float**>_ptr(b["yp"])
        self.gstart = <int32_t*>_ptr(b["gstart"])
        self.pstart = <int32_t*>_ptr(b["pstart"])
        self.dcol = <int32_t*>_ptr(b["dcol"])
        self.seg = <int32_t*>_ptr(b["seg"])
        self.colloss = <double*>_ptr(b["colloss"])
        self.sideb = <float*>_ptr(b["sideb"])
        self.cap_b, self.cap_e = B, ne

    def gather(self, const int64_t[::1] rows, uint64_t key):
        """Begin a mini-batch: the entries of ``rows`` in this shard with their hidden flags (epoch ``key``),
        sorted by column.  Returns the number of entries."""
        cdef int B = rows.shape[0], i
        cdef Py_ssize_t ne = 0
        cdef int64_t r
        if B < 1:
            raise ValueError("a mini-batch needs at least one row")
        for i in range(B):
            r = rows[i]
            if r < 0 or r >= self.n_samples:
                raise IndexError(f"rows must lie in [0, {self.n_samples}), got {r}")
            ne += self.indptr[r + 1] - self.indptr[r]
        self._ensure(B, ne)
        with nogil:
            self._gather(&rows[0], B, key)
            self.nd = self._sort_columns(ne)
        self.ne = ne
        self.batch_rows = B
        return ne

    cdef void _gather(self, const int64_t* rows, int B, uint64_t key) noexcept nogil:
        cdef int i, sd = self.side_dim
        cdef int64_t r, p, p0, p1, g, g1, e
        cdef uint64_t thr = self.threshold
        cdef uint8_t swap
        self.eoff[0] = 0
        for i in range(B):
            r = rows[i]
            self.eoff[i + 1] = self.eoff[i] + self.indptr[r + 1] - self.indptr[r]
            if sd > 0:
                memcpy(self.sideb + <Py_ssize_t>i * sd, self.side + r * sd, sd * sizeof(float))
        # hashing is cheap: a parallel region only pays off for big batches (the same result either way)
        for i in prange(B, schedule='dynamic', chunksize=4, num_threads=self.nthreads if self.eoff[B] > 65536 else 1):
            r = rows[i]
            p0 = self.indptr[r]
            p1 = self.indptr[r + 1]
            if p1 == p0:
                continue
            # the swap rule over the sample's whole row: all hidden unless some entry is visible
            swap = 1
            g1 = self.row_starts[r + 1]
            for g in range(self.row_starts[r], g1):
                if (sh_splitmix64(key + <uint64_t>g) >> 40) >= thr:
                    swap = 0
                    break
            e = self.eoff[i]
            for p in range(p0, p1):
                self.erow[e] = i
                self.ecol[e] = self.indices[p]
                self.evl[e] = self.data[p]
                self.ehid[e] = ((sh_splitmix64(key + <uint64_t>self.positions[p]) >> 40) < thr) ^ swap
                e = e + 1

    cdef int _sort_columns(self, Py_ssize_t ne) noexcept nogil:
        """Stable counting sort of the entries by column: a bitmap of the batch's columns gives the distinct
        columns in increasing order.  O(ne + n_local / 64); the bitmap and counts are left zero."""
        cdef Py_ssize_t e
        cdef int nd = 0, s, c, wi
        cdef int nwords = (self.n_local + 63) >> 6
        cdef uint64_t word
        for e in range(ne):
            c = self.ecol[e]
            self.bitmap[c >> 6] |= (<uint64_t>1) << (c & 63)
            self.ccount[c] += 1
        self.seg[0] = 0
        for wi in range(nwords):
            word = self.bitmap[wi]
            if word == 0:
                continue
            self.bitmap[wi] = 0
            while word != 0:
                c = (wi << 6) + sh_ctz64(word)
                word = word & (word - 1)
                self.dcol[nd] = c
                self.slot[c] = nd
                self.seg[nd + 1] = self.seg[nd] + self.ccount[c]
                self.ccount[c] = 0
                nd += 1
        for e in range(ne):           # seg[s] serves as segment s's fill pointer, then is restored
            s = self.slot[self.ecol[e]]
            self.perm[self.seg[s]] = <int32_t>e
            self.seg[s] += 1
        for s in range(nd - 1, 0, -1):
            self.seg[s] = self.seg[s - 1]
        if nd > 0:
            self.seg[0] = 0
        return nd

    def _check_block(self, block, int width, str what):
        if self.batch_rows < 1:
            raise RuntimeError("no mini-batch in progress: call gather first")
        if block.shape[0] != self.batch_rows or block.shape[1] != width:
            raise ValueError(f"{what} must have shape ({self.batch_rows}, {width}), got {tuple(block.shape)}")

    # ----------------------------------------------------------------- the step
    def encode(self):
        """This shard's first-layer pre-activations of the batch from its visible entries (B x h_first)."""
        cdef int B = self.batch_rows, H = self.h_first, g, i, k
        cdef float sc = <float>self.scale_in
        cdef float* z
        if B < 1:
            raise RuntimeError("no mini-batch: call gather first")
        out = np.empty((B, H), np.float32)
        cdef float* o = <float*>_ptr(out)
        cdef int G = self._partition(H)
        with nogil:
            self._split_pending(G)
            for g in prange(G, schedule='dynamic', chunksize=1, num_threads=self.nthreads):
                self._encode_group(g, self.part + <Py_ssize_t>g * B * H)
            self.pend_nd = 0
            for i in prange(B, schedule='static', num_threads=self.nthreads):
                z = o + <Py_ssize_t>i * H
                self._sum_groups(z, i, G, H)
                for k in range(H):
                    z[k] = z[k] * sc
        return out

    cdef void _split_pending(self, int G) noexcept nogil:
        """pstart[g]: the first pending column of group g's column range [dcol[gstart[g]], dcol[gstart[g + 1]])
        (group 0 from column 0, the last group to the end): every pending column in exactly one group."""
        cdef int g, p = 0
        cdef int32_t c
        self.pstart[0] = 0
        for g in range(1, G):
            c = self.dcol[self.gstart[g]] if self.gstart[g] < self.nd else 0x7fffffff
            while p < self.pend_nd and self.pend_dcol[p] < c:
                p += 1
            self.pstart[g] = p
        self.pstart[G] = self.pend_nd

    cdef void _encode_group(self, int g, float* zp) noexcept nogil:
        """Group g's input rows in column order, the batch's columns merged with the pending ones of the same
        range: a pending row first gets the previous batch's deferred move; a batch row (read once) is then
        added, times x_e, into the group's partial z of the rows whose entry of the column is visible."""
        cdef int H = self.h_first, s = self.gstart[g], send = self.gstart[g + 1], q, q0, m
        cdef int p = self.pstart[g], pend = self.pstart[g + 1]
        cdef int32_t e, c
        cdef bint batch_column
        memset(zp, 0, <Py_ssize_t>self.batch_rows * H * sizeof(float))
        while s < send or p < pend:
            batch_column = s < send and (p >= pend or self.dcol[s] <= self.pend_dcol[p])
            c = self.dcol[s] if batch_column else self.pend_dcol[p]
            if p < pend and self.pend_dcol[p] == c:
                self._apply_pending(p)
                p += 1
            if not batch_column:
                continue
            q0 = self.seg[s]
            m = 0
            for q in range(q0, self.seg[s + 1]):
                e = self.perm[q]
                if self.ehid[e] == 0:
                    self.yp[q0 + m] = zp + <Py_ssize_t>self.erow[e] * H
                    self.xc[q0 + m] = self.evl[e]
                    m += 1
            cfn_shard_saxpy(self.p_win + <Py_ssize_t>c * H, H, m, self.yp + q0, self.xc + q0)
            s += 1

    cdef inline void _sum_groups(self, float* out, int i, int G, int H) noexcept nogil:
        """out = row i of the group partials, summed in group order."""
        cdef int g, k
        cdef Py_ssize_t stride = <Py_ssize_t>self.batch_rows * H
        cdef const float* src = self.part + <Py_ssize_t>i * H
        for k in range(H):
            out[k] = src[k]
        for g in range(1, G):
            src = self.part + g * stride + <Py_ssize_t>i * H
            for k in range(H):
                out[k] = out[k] + src[k]

    cdef int _partition(self, int H) except -1:
        """Groups of consecutive columns with ~equal entry counts, each with a B x H partial (at most
        MAX_GROUPS, and PART_FLOATS floats in all): a function of the batch, never of the thread count."""
        cdef int G, g, s = 0
        cdef Py_ssize_t target, ne = self.ne
        cdef Py_ssize_t cap = PART_FLOATS // (<Py_ssize_t>self.batch_rows * H)
        G = <int>(ne // ENTRIES_PER_GROUP)
        if G > cap:
            G = <int>cap
        if G > MAX_GROUPS:
            G = MAX_GROUPS
        if G < 1:
            G = 1
        self._ensure_part(G * <Py_ssize_t>self.batch_rows * H)
        self.gstart[0] = 0
        for g in range(1, G):
            target = (ne * g) // G
            while s < self.nd and self.seg[s] < target:
                s += 1
            self.gstart[g] = s
        self.gstart[G] = self.nd
        return G

    def _ensure_part(self, Py_ssize_t floats):
        if self._part is None or self._part.size < floats:
            self._part = np.zeros(max(floats, 1), np.float32)
            self.part = <float*>_ptr(self._part)

    def output(self, const float[:, ::1] codes, double lr, double weight_decay):
        """The output rows at the batch's entries from the last ``codes`` (B x h_last): returns ``(loss, part
        of d loss / d codes)`` and updates the rows (SGD with decay, lr / B)."""
        cdef int B = self.batch_rows, H = self.h_last, s, g, i
        cdef float shrink = <float>(1.0 - lr * weight_decay)    # the reference's float32 factors
        cdef float step = <float>(lr / B)
        cdef double scale_new = self.scale_out * <double>shrink
        cdef float sc = <float>self.scale_out
        cdef float upd = <float>(-<double>step / scale_new)
        cdef double loss = 0.0
        self._check_block(codes, H, "codes")
        grad = np.empty((B, H), np.float32)
        cdef float* dh = <float*>_ptr(grad)
        cdef const float* h = &codes[0, 0]
        cdef int G = self._partition(H)
        with nogil:
            for g in prange(G, schedule='dynamic', chunksize=1, num_threads=self.nthreads):
                memset(self.part + <Py_ssize_t>g * B * H, 0, <Py_ssize_t>B * H * sizeof(float))
                for s in range(self.gstart[g], self.gstart[g + 1]):
                    self.colloss[s] = self._output_column(s, h, sc, upd, self.part + <Py_ssize_t>g * B * H)
            for i in prange(B, schedule='static', num_threads=self.nthreads):
                self._sum_groups(dh + <Py_ssize_t>i * H, i, G, H)
            for s in range(self.nd):
                loss = loss + self.colloss[s]
            self.scale_out = scale_new
            self._fold_out()
        return loss, grad

    cdef double _output_column(self, int s, const float* h, float sc, float upd, float* dhp) noexcept nogil:
        """Distinct column s, its row V_out[c] hot in cache from first to last: the outputs at its entries,
        their loss and deltas; the group's partial dh of their rows with the old row; then the row's update,
        its bias and side row.  Returns the loss."""
        cdef int H = self.h_last, sd = self.side_dim, d
        cdef int32_t c = self.dcol[s]
        cdef int q0 = self.seg[s], q1 = self.seg[s + 1], q
        cdef int32_t e
        cdef float z, y, r, wt, delta, gb = 0.0, coef
        cdef float* vrow = self.p_wout + <Py_ssize_t>c * H
        cdef float* srow = self.p_sout + <Py_ssize_t>c * sd
        cdef const float* sv
        cdef double loss = 0.0
        for q in range(q0, q1):
            self.xp[q] = h + <Py_ssize_t>self.erow[self.perm[q]] * H
            self.yp[q] = dhp + <Py_ssize_t>self.erow[self.perm[q]] * H
        cfn_shard_dots(vrow, self.xp + q0, q1 - q0, H, self.eout + q0)
        for q in range(q0, q1):
            z = self.eout[q] + self.p_bout[c]
            if sd > 0:
                sv = self.sideb + <Py_ssize_t>self.erow[self.perm[q]] * sd
                for d in range(sd):
                    z = z + sv[d] * srow[d]
            self.eout[q] = sc * z
        cfn_shard_tanh(self.eout + q0, q1 - q0)
        for q in range(q0, q1):
            e = self.perm[q]
            y = self.eout[q]
            wt = self.alpha if self.ehid[e] else self.beta
            r = y - self.evl[e]
            loss = loss + <double>wt * (<double>r * <double>r)
            delta = (<float>2.0) * wt * r * (<float>1.0 - y * y)
            self.eout[q] = delta
            self.xc[q] = sc * delta               # dh[row] += delta W[c] = (delta sc) V[c], the old row
            gb = gb + delta
        cfn_shard_saxpy(vrow, H, q1 - q0, self.yp + q0, self.xc + q0)
        for q in range(q0, q1):
            self.xc[q] = upd * self.eout[q]
        cfn_shard_maxpy(vrow, H, q1 - q0, self.xp + q0, self.xc + q0)
        self.p_bout[c] = self.p_bout[c] + upd * gb
        if sd > 0:
            for q in range(q0, q1):
                coef = self.xc[q]
                sv = self.sideb + <Py_ssize_t>self.erow[self.perm[q]] * sd
                for d in range(sd):
                    srow[d] = srow[d] + coef * sv[d]
        return loss

    def input_update(self, const float[:, ::1] dz, double lr, double weight_decay):
        """The shard's first-layer columns: SGD with decay, gradient sum over visible entries x_e dz[row_e]
        (``dz``: d loss / d first pre-activations, B x h_first).  Ends the batch.

        The rows' moves are recorded, not applied: the next :meth:`encode` applies them to the rows it loads
        anyway and the rest on their own (the same operations in the same order as applying them now: the
        same bits); :meth:`export` and a fold apply them first, :meth:`load` drops them."""
        cdef int B = self.batch_rows, H = self.h_first
        cdef float shrink = <float>(1.0 - lr * weight_decay)
        cdef float step = <float>(lr / B)
        cdef double scale_new = self.scale_in * <double>shrink
        cdef float upd = <float>(-<double>step / scale_new)
        self._check_block(dz, H, "dz")
        with nogil:
            self._flush_pending()
        self._ensure_pending(B, self.ne)
        cdef const float* dzp = &dz[0, 0]
        with nogil:
            memcpy(self.pend_dz, dzp, <Py_ssize_t>B * H * sizeof(float))
            self._defer(upd)
            self.scale_in = scale_new
            if self.scale_in < FOLD_BELOW:
                self._flush_pending()
                self._fold_in()
        self.batch_rows = 0

    def _ensure_pending(self, int B, Py_ssize_t ne):
        """Room for a batch's deferred input update (B rows of dz, ne entries); none may be pending."""
        pend = self._pend
        if pend is not None and pend["dz"].size >= B * self.h_first and pend["coef"].size >= ne:
            return
        ne = max(ne, 1)
        pend = {"dz": np.zeros(max(B * self.h_first, 1), np.float32), "coef": np.zeros(ne, np.float32),
                "xp": np.zeros(ne, np.uint64), "dcol": np.zeros(min(ne, self.n_local), np.int32),
                "seg": np.zeros(min(ne, self.n_local) + 1, np.int32)}
        self._pend = pend
        self.pend_dz = <float*>_ptr(pend["dz"])
        self.pend_coef = <float*>_ptr(pend["coef"])
        self.pend_xp = <const float**>_ptr(pend["xp"])
        self.pend_dcol = <int32_t*>_ptr(pend["dcol"])
        self.pend_seg = <int32_t*>_ptr(pend["seg"])

    cdef void _defer(self, float upd) noexcept nogil:
        """Record this batch's input update: per distinct column with visible entries, the rows of pend_dz
        and the coefficients upd x_e, in column order then entry order."""
        cdef int H = self.h_first, s, q, n = 0, nq = 0
        cdef int32_t e
        self.pend_seg[0] = 0
        for s in range(self.nd):
            for q in range(self.seg[s], self.seg[s + 1]):
                e = self.perm[q]
                if self.ehid[e] == 0:
                    self.pend_xp[nq] = self.pend_dz + <Py_ssize_t>self.erow[e] * H
                    self.pend_coef[nq] = upd * self.evl[e]
                    nq += 1
            if nq > self.pend_seg[n]:
                self.pend_dcol[n] = self.dcol[s]
                n += 1
                self.pend_seg[n] = nq
        self.pend_nd = n

    cdef inline void _apply_pending(self, int p) noexcept nogil:
        """Pending column p: V_in[c] += sum of its recorded moves (in entry order)."""
        cdef int q0 = self.pend_seg[p]
        cfn_shard_maxpy(self.p_win + <Py_ssize_t>self.pend_dcol[p] * self.h_first, self.h_first,
                        self.pend_seg[p + 1] - q0, self.pend_xp + q0, self.pend_coef + q0)

    cdef void _flush_pending(self) noexcept nogil:
        """Apply every deferred move now."""
        cdef int p
        if self.pend_nd == 0:
            return
        for p in prange(self.pend_nd, schedule='dynamic', chunksize=8, num_threads=self.nthreads):
            self._apply_pending(p)
        self.pend_nd = 0


def scaled_copy(a, double s, int nthreads=1):
    """float32 copy of the C-contiguous float32 array ``a`` times ``s`` (each value rounded once from float64)."""
    out = np.empty_like(a)
    if a.size == 0:
        return out
    cdef const float[::1] src = a.reshape(-1)
    cdef float[::1] dst = out.reshape(-1)
    cdef Py_ssize_t k, n = src.shape[0]
    with nogil:
        for k in prange(n, schedule='static', num_threads=nthreads):
            dst[k] = <float>(<double>src[k] * s)
    return out
