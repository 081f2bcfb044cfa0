# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython + OpenMP kernels of the CPU engine: sparse masked CFN training in O(nnz x width).

One mini-batch of B samples (rows of the training CSR) is processed as

1. gather     the batch's known entries (column, value, hidden flag) in CSR order; the hidden
              flag is the counter-based hash of :mod:`cfn_fast.corruption` (splitmix64 of
              ``key + global CSR position``, top 24 bits < threshold, then the swap rule);
2. sort       the entries by input column: a bitmap of the batch's columns gives the distinct
              columns in increasing order, a stable counting sort the permutation
              (O(nnz_batch + n_inputs / 64)).  A "segment" is the run of entries of one column;
              segments are cut into at most 16 groups of ~equal entry counts (the partition
              depends on the batch only, never on the thread count);
3. encode     parallel over groups: each distinct column's input-weight row (the input weight
              is stored transposed, n_inputs x H: one contiguous row per input) is loaded once
              and added, times x_k, into the group's partial z of the rows whose entry is
              visible; z = sum of the partials in group order, * scale + b1 + side S1, tanh;
4. dense      hidden-to-hidden layers and side blocks (small, dense), parallel over outputs;
5. output     fused, parallel over groups: for each distinct column c the row V_out[c] is
              loaded once, the outputs at the batch's entries of c are evaluated (sampled
              dense-dense product, 4 rows per load of V_out[c]), then the weighted residual,
              the float64 loss partial sums and delta_k = 2 w_k (y_k - x_k)(1 - y_k^2);
              delta_k W_out[c] goes into the group's partial dh (old weights), then the row,
              bias and side row of c are updated in place.  dh = sum of the partials in
              group order, times (1 - h^2);
6. backward   dense layers; the input layer's dense bias / side weight; its sparse rows get
              sum over visible entries x_k dz[row_k] (parallel over distinct columns).  Inside
              ``train_epoch`` this last update is deferred to the next batch's encoder, which
              applies it to the rows it loads anyway (same arithmetic, same order: the results
              are bit-identical to the eager update); the rest are flushed right after.

Scatters never race (one writer per column segment / per output unit) and every sum has a
fixed order that does not depend on the thread count, so results are bit-identical for any
number of threads.  The inner loops are SIMD primitives (dot, axpy, 4-row blocked multi-axpy
and multi-dot, vector tanh) written once and instantiated for AVX-512, AVX2+FMA and plain C;
the best one the CPU supports is picked at import (no -march needed at build time).

Exact weight decay at sparse cost: the four big per-input arrays (input weight, output
weight, output bias, output side weight) are kept as ``W = scale * V``.  A step multiplies
``scale`` (float64) by the reference's float32 shrink factor ``1 - lr λ``, and a sparse
gradient moves the touched rows of ``V`` by ``-(lr/B) g / scale_new``.  ``V`` is folded back
(scale = 1) before ``scale`` drops below 1e-10.  Dense parameters are updated directly as in
the reference: ``p = p * shrink - (lr/B) g``.
"""
from cython.parallel cimport prange, parallel
from libc.stdint cimport uint64_t, int64_t, int32_t, uint32_t, uint16_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from libc.math cimport tanhf, NAN

import numpy as np

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include <math.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int cfn_max_threads(void) { return omp_get_max_threads(); }
    static int cfn_has_openmp(void) { return 1; }
    #else
    static int cfn_max_threads(void) { return 1; }
    static int cfn_has_openmp(void) { return 0; }
    #endif

    #if defined(_MSC_VER) && !defined(__clang__)
    #define restrict __restrict
    #endif
    static inline int cfn_ctz64(uint64_t x) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int k = 0; while (!(x & 1)) { x >>= 1; k++; } return k;
    #endif
    }

    static inline uint64_t cfn_splitmix64(uint64_t x) {
        uint64_t z = x + 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }

    /* Software prefetch of the next weight row: off by default.  Until 2026-12 it never ran (GCC's IPA took
       the small function holding nothing but prefetches for one without effects and dropped its calls);
       made to run (always inlined, read prefetches), it slowed the encoder by 5-8 % on the ML-10M shape
       and gained nothing on ML-1M (bench/README.md), so it is kept as a switch only. */
    static int cfn_prefetch_on = 0;
    #if defined(__GNUC__)
    #define CFN_INLINE_PF __attribute__((always_inline)) static inline
    #else
    #define CFN_INLINE_PF static inline
    #endif
    CFN_INLINE_PF void cfn_prefetch(const void *p, ptrdiff_t nbytes) {
    #if defined(__GNUC__)
        const char *c = (const char *)p;
        if (!cfn_prefetch_on) return;
        for (ptrdiff_t o = 0; o < nbytes; o += 64) __builtin_prefetch(c + o, 0, 3);
    #endif
    }

    /* The SIMD primitives, written once over a small vector vocabulary and instantiated for
       AVX-512, AVX2+FMA and plain C (a one-float "vector").  n is the row length; tails use
       masked loads/stores.  Every primitive sums in a fixed order (deterministic).

       dot(a, b)                        -> a . b
       axpy(al, x, y)                   y += al x
       dots(v, rows[m], out)            out[j] = v . rows[j]       (v loaded once per 4 rows)
       segbwd(w, g, m, h[], dh[], a, c) dh[j] += a[j] w ;  g += sum_j c[j] h[j]
                                        (w read before g is written: g may alias w)
       maxpy(y, m, x[], c)              y += sum_j c[j] x[j]       (y loaded/stored once)
       saxpy(v, m, y[], c)              y[j] += c[j] v             (v loaded once)           */
    /* the module is built with -ffast-math: keep the compiler from re-vectorising the pair dots' chains
       (it could do so differently in each function, and a pair's value would then depend on its tile) */
    #if defined(__GNUC__) && !defined(__clang__)
    #define CFN_IN_ORDER __attribute__((optimize("no-associative-math")))
    #else
    #define CFN_IN_ORDER
    #endif
    /* one row of a dots44 tile: A . y_b for the four y rows held in b0..b3 (VT, FMA: those of the
       instantiation) */
    #define CFN_ROW4(VT, FMA, A, S0, S1, S2, S3) { VT a_ = (A); S0 = FMA(a_, b0, S0); S1 = FMA(a_, b1, S1); \
                                                    S2 = FMA(a_, b2, S2); S3 = FMA(a_, b3, S3); }
    #define CFN_DEFINE(SFX, ATTR, VT, W, MT, ZERO, LD, ST, SET1, FMA, ADD, HSUM, MK, MLD, MST)            \
    ATTR static float cfn_dot_##SFX(const float *restrict a, const float *restrict b, ptrdiff_t n) {       \
        VT s0 = ZERO, s1 = ZERO, s2 = ZERO, s3 = ZERO; ptrdiff_t i = 0;                                  \
        for (; i + 4 * W <= n; i += 4 * W) {                                                              \
            s0 = FMA(LD(a + i), LD(b + i), s0); s1 = FMA(LD(a + i + W), LD(b + i + W), s1);               \
            s2 = FMA(LD(a + i + 2 * W), LD(b + i + 2 * W), s2);                                          \
            s3 = FMA(LD(a + i + 3 * W), LD(b + i + 3 * W), s3); }                                         \
        for (; i + W <= n; i += W) s0 = FMA(LD(a + i), LD(b + i), s0);                                     \
        if (i < n) { MT m = MK(n - i); s1 = FMA(MLD(m, a + i), MLD(m, b + i), s1); }                      \
        return HSUM(ADD(ADD(s0, s1), ADD(s2, s3)));                                                        \
    }                                                                                                      \
    ATTR static void cfn_axpy_##SFX(float al, const float *restrict x, float *restrict y, ptrdiff_t n) {   \
        VT va = SET1(al); ptrdiff_t i = 0;                                                                 \
        for (; i + W <= n; i += W) ST(y + i, FMA(va, LD(x + i), LD(y + i)));                               \
        if (i < n) { MT m = MK(n - i); MST(y + i, m, FMA(va, MLD(m, x + i), MLD(m, y + i))); }            \
    }                                                                                                      \
    ATTR static void cfn_dots_##SFX(const float *restrict v, const float *const *rows, int m,             \
                                    ptrdiff_t n, float *out) {                                             \
        int j = 0;                                                                                         \
        for (; j + 4 <= m; j += 4) {                                                                       \
            const float *r0 = rows[j], *r1 = rows[j + 1], *r2 = rows[j + 2], *r3 = rows[j + 3];           \
            VT s0 = ZERO, s1 = ZERO, s2 = ZERO, s3 = ZERO; ptrdiff_t i = 0;                              \
            for (; i + W <= n; i += W) { VT x = LD(v + i);                                                 \
                s0 = FMA(x, LD(r0 + i), s0); s1 = FMA(x, LD(r1 + i), s1);                                  \
                s2 = FMA(x, LD(r2 + i), s2); s3 = FMA(x, LD(r3 + i), s3); }                                \
            if (i < n) { MT mk = MK(n - i); VT x = MLD(mk, v + i);                                          \
                s0 = FMA(x, MLD(mk, r0 + i), s0); s1 = FMA(x, MLD(mk, r1 + i), s1);                       \
                s2 = FMA(x, MLD(mk, r2 + i), s2); s3 = FMA(x, MLD(mk, r3 + i), s3); }                     \
            out[j] = HSUM(s0); out[j + 1] = HSUM(s1); out[j + 2] = HSUM(s2); out[j + 3] = HSUM(s3);       \
        }                                                                                                  \
        for (; j < m; j++) out[j] = cfn_dot_##SFX(v, rows[j], n);                                          \
    }                                                                                                      \
    ATTR static void cfn_maxpy_##SFX(float *restrict y, ptrdiff_t n, int m, const float *const *x,        \
                                     const float *c) {                                                     \
        int j = 0; ptrdiff_t i;                                                                            \
        for (; j + 4 <= m; j += 4) {                                                                       \
            const float *x0 = x[j], *x1 = x[j + 1], *x2 = x[j + 2], *x3 = x[j + 3];                        \
            VT c0 = SET1(c[j]), c1 = SET1(c[j + 1]), c2 = SET1(c[j + 2]), c3 = SET1(c[j + 3]);             \
            for (i = 0; i + W <= n; i += W) {                                                              \
                VT acc = FMA(c0, LD(x0 + i), LD(y + i));                                                   \
                acc = FMA(c1, LD(x1 + i), acc); acc = FMA(c2, LD(x2 + i), acc);                            \
                ST(y + i, FMA(c3, LD(x3 + i), acc)); }                                                     \
            if (i < n) { MT mk = MK(n - i);                                                                \
                VT acc = FMA(c0, MLD(mk, x0 + i), MLD(mk, y + i));                                         \
                acc = FMA(c1, MLD(mk, x1 + i), acc); acc = FMA(c2, MLD(mk, x2 + i), acc);                  \
                MST(y + i, mk, FMA(c3, MLD(mk, x3 + i), acc)); }                                           \
        }                                                                                                  \
        for (; j < m; j++) {                                                                               \
            const float *x0 = x[j]; VT c0 = SET1(c[j]);                                                    \
            for (i = 0; i + W <= n; i += W) ST(y + i, FMA(c0, LD(x0 + i), LD(y + i)));                     \
            if (i < n) { MT mk = MK(n - i); MST(y + i, mk, FMA(c0, MLD(mk, x0 + i), MLD(mk, y + i))); }   \
        }                                                                                                  \
    }                                                                                                      \
    ATTR static void cfn_saxpy_##SFX(const float *restrict v, ptrdiff_t n, int m, float *const *y,        \
                                     const float *c) {                                                     \
        int j = 0; ptrdiff_t i;                                                                            \
        for (; j + 4 <= m; j += 4) {                                                                       \
            float *y0 = y[j], *y1 = y[j + 1], *y2 = y[j + 2], *y3 = y[j + 3];                              \
            VT c0 = SET1(c[j]), c1 = SET1(c[j + 1]), c2 = SET1(c[j + 2]), c3 = SET1(c[j + 3]);             \
            for (i = 0; i + W <= n; i += W) { VT v0 = LD(v + i);                                           \
                ST(y0 + i, FMA(c0, v0, LD(y0 + i))); ST(y1 + i, FMA(c1, v0, LD(y1 + i)));                  \
                ST(y2 + i, FMA(c2, v0, LD(y2 + i))); ST(y3 + i, FMA(c3, v0, LD(y3 + i))); }                \
            if (i < n) { MT mk = MK(n - i); VT v0 = MLD(mk, v + i);                                        \
                MST(y0 + i, mk, FMA(c0, v0, MLD(mk, y0 + i))); MST(y1 + i, mk, FMA(c1, v0, MLD(mk, y1 + i))); \
                MST(y2 + i, mk, FMA(c2, v0, MLD(mk, y2 + i))); MST(y3 + i, mk, FMA(c3, v0, MLD(mk, y3 + i))); } \
        }                                                                                                  \
        for (; j < m; j++) {                                                                               \
            float *y0 = y[j]; VT c0 = SET1(c[j]);                                                          \
            for (i = 0; i + W <= n; i += W) ST(y0 + i, FMA(c0, LD(v + i), LD(y0 + i)));                    \
            if (i < n) { MT mk = MK(n - i); MST(y0 + i, mk, FMA(c0, MLD(mk, v + i), MLD(mk, y0 + i))); }   \
        }                                                                                                  \
    }                                                                                                      \
    /* dh[j] += a[j] w for all j (old w), then g += sum_j c[j] h[j]: g may be w itself */                 \
    ATTR static void cfn_segbwd_##SFX(const float *w, float *g, ptrdiff_t n, int m,                       \
                                      const float *const *h, float *const *dh,                             \
                                      const float *a, const float *c) {                                    \
        cfn_saxpy_##SFX(w, n, m, dh, a);                                                                   \
        cfn_maxpy_##SFX(g, n, m, h, c);                                                                    \
    }                                                                                                     \
    /* pair dots for inference: out = x . y over pairs of rows, each pair one chain of FMAs over           \
       the vectors of its rows (masked tail last), then its horizontal sum: the same operations for        \
       a pair whatever the tile it is computed in, dots14 (one x, four y) or dots44 (four x, four y);      \
       x and y may swap (a product does not depend on its operands' order) */                              \
    ATTR CFN_IN_ORDER static void cfn_dots14_##SFX(const float *restrict x, const float *const *y,         \
                                                   ptrdiff_t n, float *out) {                              \
        const float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];                                        \
        VT s0 = ZERO, s1 = ZERO, s2 = ZERO, s3 = ZERO; ptrdiff_t i = 0;                                    \
        for (; i + W <= n; i += W) { VT a = LD(x + i);                                                     \
            s0 = FMA(a, LD(y0 + i), s0); s1 = FMA(a, LD(y1 + i), s1);                                      \
            s2 = FMA(a, LD(y2 + i), s2); s3 = FMA(a, LD(y3 + i), s3); }                                    \
        if (i < n) { MT mk = MK(n - i); VT a = MLD(mk, x + i);                                             \
            s0 = FMA(a, MLD(mk, y0 + i), s0); s1 = FMA(a, MLD(mk, y1 + i), s1);                            \
            s2 = FMA(a, MLD(mk, y2 + i), s2); s3 = FMA(a, MLD(mk, y3 + i), s3); }                          \
        out[0] = HSUM(s0); out[1] = HSUM(s1); out[2] = HSUM(s2); out[3] = HSUM(s3);                        \
    }                                                                                                      \
    ATTR CFN_IN_ORDER static void cfn_dots44_##SFX(const float *const *x, const float *const *y,           \
                                                   ptrdiff_t n, float *out) {                              \
        const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];                                        \
        const float *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];                                        \
        VT s00 = ZERO, s01 = ZERO, s02 = ZERO, s03 = ZERO, s10 = ZERO, s11 = ZERO, s12 = ZERO, s13 = ZERO; \
        VT s20 = ZERO, s21 = ZERO, s22 = ZERO, s23 = ZERO, s30 = ZERO, s31 = ZERO, s32 = ZERO, s33 = ZERO; \
        VT b0, b1, b2, b3; ptrdiff_t i = 0;                                                                \
        for (; i + W <= n; i += W) {                                                                       \
            b0 = LD(y0 + i); b1 = LD(y1 + i); b2 = LD(y2 + i); b3 = LD(y3 + i);                            \
            CFN_ROW4(VT, FMA, LD(x0 + i), s00, s01, s02, s03)                                              \
            CFN_ROW4(VT, FMA, LD(x1 + i), s10, s11, s12, s13)                                              \
            CFN_ROW4(VT, FMA, LD(x2 + i), s20, s21, s22, s23)                                              \
            CFN_ROW4(VT, FMA, LD(x3 + i), s30, s31, s32, s33) }                                            \
        if (i < n) { MT mk = MK(n - i);                                                                    \
            b0 = MLD(mk, y0 + i); b1 = MLD(mk, y1 + i); b2 = MLD(mk, y2 + i); b3 = MLD(mk, y3 + i);        \
            CFN_ROW4(VT, FMA, MLD(mk, x0 + i), s00, s01, s02, s03)                                         \
            CFN_ROW4(VT, FMA, MLD(mk, x1 + i), s10, s11, s12, s13)                                         \
            CFN_ROW4(VT, FMA, MLD(mk, x2 + i), s20, s21, s22, s23)                                         \
            CFN_ROW4(VT, FMA, MLD(mk, x3 + i), s30, s31, s32, s33) }                                       \
        out[0] = HSUM(s00); out[1] = HSUM(s01); out[2] = HSUM(s02); out[3] = HSUM(s03);                    \
        out[4] = HSUM(s10); out[5] = HSUM(s11); out[6] = HSUM(s12); out[7] = HSUM(s13);                    \
        out[8] = HSUM(s20); out[9] = HSUM(s21); out[10] = HSUM(s22); out[11] = HSUM(s23);                  \
        out[12] = HSUM(s30); out[13] = HSUM(s31); out[14] = HSUM(s32); out[15] = HSUM(s33);                \
    }

    /* plain C: a "vector" of one float (no tails) */
    #define G_LD(p) (*(p))
    #define G_ST(p, v) (*(p) = (v))
    #define G_FMA(a, b, c) ((a) * (b) + (c))
    #define G_ADD(a, b) ((a) + (b))
    #define G_ID(x) (x)
    #define G_MK(r) 0
    #define G_MLD(m, p) ((void)(m), *(p))
    #define G_MST(p, m, v) ((void)(m), *(p) = (v))
    CFN_DEFINE(generic, , float, 1, int, 0.0f, G_LD, G_ST, G_ID, G_FMA, G_ADD, G_ID, G_MK, G_MLD, G_MST)

    static void cfn_tanh_generic(float *x, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
    }

    /* Vector tanh (within ~2 ulp of the correctly rounded value):
         |x| < 0.625:  x + x^3 P(x^2)            (P: degree-5 minimax fit, rel. error 2e-10)
         else:         1 - 2 / (2^t + 1), t = 2|x| / ln 2 (|x| clamped at 9, where tanh = 1 in float),
                       2^t = 2^round(t) * Q(t - round(t))  (Q: degree-6 fit on [-1/2, 1/2])
       then the sign of x.  The coefficients are float32 roundings of the fits. */
    #define CFN_TP0 -0.3333333134651184f
    #define CFN_TP1 0.1333320587873459f
    #define CFN_TP2 -0.05394676327705383f
    #define CFN_TP3 0.021700704470276833f
    #define CFN_TP4 -0.008177398703992367f
    #define CFN_TP5 0.0021429620683193207f
    #define CFN_EQ0 1.0f
    #define CFN_EQ1 0.6931471824645996f
    #define CFN_EQ2 0.24022646248340607f
    #define CFN_EQ3 0.05550328642129898f
    #define CFN_EQ4 0.009618489071726799f
    #define CFN_EQ5 0.0013399932067841291f
    #define CFN_EQ6 0.00015345806605182588f
    #define CFN_TWO_LOG2E 2.8853900817779268f

    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    #define CFN_X86 1
    #include <immintrin.h>
    #define A5 __attribute__((target("avx512f,fma")))
    #define Z_MK(r) ((__mmask16)((1u << (r)) - 1u))
    #define Z_MLD(m, p) _mm512_maskz_loadu_ps((m), (p))
    #define Z_MST(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
    CFN_DEFINE(avx512, A5, __m512, 16, __mmask16, _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_storeu_ps,
               _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_reduce_add_ps, Z_MK, Z_MLD, Z_MST)

    A5 static inline __m512 cfn_tanh16(__m512 v) {
        const __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
        __m512 a = _mm512_abs_ps(v), x2 = _mm512_mul_ps(a, a);
        __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(CFN_TP5), x2, _mm512_set1_ps(CFN_TP4));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(CFN_TP3));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(CFN_TP2));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(CFN_TP1));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(CFN_TP0));
        __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(a, x2), p, a);
        __m512 t = _mm512_mul_ps(_mm512_min_ps(a, _mm512_set1_ps(9.0f)), _mm512_set1_ps(CFN_TWO_LOG2E));
        __m512 nr = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 f = _mm512_sub_ps(t, nr);
        __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(CFN_EQ6), f, _mm512_set1_ps(CFN_EQ5));
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(CFN_EQ4));
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(CFN_EQ3));
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(CFN_EQ2));
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(CFN_EQ1));
        q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(CFN_EQ0));
        __m512 e = _mm512_scalef_ps(q, nr);
        __m512 large = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                                     _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
        __mmask16 is_small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
        __m512 r = _mm512_mask_blend_ps(is_small, large, small);
        return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r),
                                   _mm512_and_si512(_mm512_castps_si512(v), signbit)));
    }
    A5 static void cfn_tanh_avx512(float *x, ptrdiff_t n) {
        ptrdiff_t i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, cfn_tanh16(_mm512_loadu_ps(x + i)));
        if (i < n) { __mmask16 m = Z_MK(n - i); _mm512_mask_storeu_ps(x + i, m, cfn_tanh16(_mm512_maskz_loadu_ps(m, x + i))); }
    }

    #define A2 __attribute__((target("avx2,fma")))
    #define Y_MK(r) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(r)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    #define Y_MLD(m, p) _mm256_maskload_ps((p), (m))
    #define Y_MST(p, m, v) _mm256_maskstore_ps((p), (m), (v))
    A2 static inline __m256 cfn_tanh8(__m256 v) {
        const __m256 signbit = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
        __m256 a = _mm256_andnot_ps(signbit, v), x2 = _mm256_mul_ps(a, a);
        __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(CFN_TP5), x2, _mm256_set1_ps(CFN_TP4));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(CFN_TP3));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(CFN_TP2));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(CFN_TP1));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(CFN_TP0));
        __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(a, x2), p, a);
        __m256 t = _mm256_mul_ps(_mm256_min_ps(a, _mm256_set1_ps(9.0f)), _mm256_set1_ps(CFN_TWO_LOG2E));
        __m256 nr = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 f = _mm256_sub_ps(t, nr);
        __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(CFN_EQ6), f, _mm256_set1_ps(CFN_EQ5));
        q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(CFN_EQ4));
        q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(CFN_EQ3));
        q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(CFN_EQ2));
        q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(CFN_EQ1));
        q = _mm256_fmadd_ps(q, f, _mm256_set1_ps(CFN_EQ0));
        __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nr),
                                                                              _mm256_set1_epi32(127)), 23));
        __m256 e = _mm256_mul_ps(q, pow2);
        __m256 large = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                     _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
        __m256 r = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
        return _mm256_or_ps(r, _mm256_and_ps(v, signbit));
    }
    A2 static void cfn_tanh_avx2(float *x, ptrdiff_t n) {
        ptrdiff_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, cfn_tanh8(_mm256_loadu_ps(x + i)));
        if (i < n) { __m256i m = Y_MK(n - i); _mm256_maskstore_ps(x + i, m, cfn_tanh8(_mm256_maskload_ps(x + i, m))); }
    }
    A2 static inline float cfn_hsum256(__m256 v) {
        __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
        lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
        return _mm_cvtss_f32(lo);
    }
    CFN_DEFINE(avx2, A2, __m256, 8, __m256i, _mm256_setzero_ps(), _mm256_loadu_ps, _mm256_storeu_ps,
               _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, cfn_hsum256, Y_MK, Y_MLD, Y_MST)
    #endif

    typedef float (*cfn_dot_t)(const float *, const float *, ptrdiff_t);
    typedef void (*cfn_axpy_t)(float, const float *, float *, ptrdiff_t);
    typedef void (*cfn_dots_t)(const float *, const float *const *, int, ptrdiff_t, float *);
    typedef void (*cfn_segbwd_t)(const float *, float *, ptrdiff_t, int, const float *const *, float *const *,
                                 const float *, const float *);
    typedef void (*cfn_maxpy_t)(float *, ptrdiff_t, int, const float *const *, const float *);
    typedef void (*cfn_saxpy_t)(const float *, ptrdiff_t, int, float *const *, const float *);
    typedef void (*cfn_tanh_t)(float *, ptrdiff_t);
    typedef void (*cfn_dots14_t)(const float *, const float *const *, ptrdiff_t, float *);
    typedef void (*cfn_dots44_t)(const float *const *, const float *const *, ptrdiff_t, float *);
    static cfn_tanh_t cfn_tanh_p = cfn_tanh_generic;
    static cfn_dot_t cfn_dot_p = cfn_dot_generic;
    static cfn_axpy_t cfn_axpy_p = cfn_axpy_generic;
    static cfn_dots_t cfn_dots_p = cfn_dots_generic;
    static cfn_segbwd_t cfn_segbwd_p = cfn_segbwd_generic;
    static cfn_maxpy_t cfn_maxpy_p = cfn_maxpy_generic;
    static cfn_saxpy_t cfn_saxpy_p = cfn_saxpy_generic;
    static cfn_dots14_t cfn_dots14_p = cfn_dots14_generic;
    static cfn_dots44_t cfn_dots44_p = cfn_dots44_generic;
    static int cfn_simd = 0;   /* 0 generic, 1 avx2+fma, 2 avx512f */

    #define CFN_USE(SFX) do { cfn_dot_p = cfn_dot_##SFX; cfn_axpy_p = cfn_axpy_##SFX; cfn_dots_p = cfn_dots_##SFX; \
        cfn_segbwd_p = cfn_segbwd_##SFX; cfn_maxpy_p = cfn_maxpy_##SFX; cfn_saxpy_p = cfn_saxpy_##SFX; cfn_tanh_p = cfn_tanh_##SFX; \
        cfn_dots14_p = cfn_dots14_##SFX; cfn_dots44_p = cfn_dots44_##SFX; } while (0)

    /* level: -1 the best the CPU has, else the wanted level (capped at what the CPU has) */
    static int cfn_simd_init(int level) {
        int best = 0;
    #ifdef CFN_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
        if (best == 1 && __builtin_cpu_supports("avx512f")) best = 2;
    #endif
        if (level < 0 || level > best) level = best;
        CFN_USE(generic);
    #ifdef CFN_X86
        if (level == 1) CFN_USE(avx2);
        if (level == 2) CFN_USE(avx512);
    #endif
        cfn_simd = level;
        return level;
    }
    static int cfn_simd_level(void) { return cfn_simd; }
    #define cfn_dot(a, b, n) cfn_dot_p((a), (b), (n))
    #define cfn_axpy(al, x, y, n) cfn_axpy_p((al), (x), (y), (n))
    #define cfn_dots(v, rows, m, n, out) cfn_dots_p((v), (rows), (m), (n), (out))
    #define cfn_segbwd(w, g, n, m, h, dh, a, c) cfn_segbwd_p((w), (g), (n), (m), (h), (dh), (a), (c))
    #define cfn_maxpy(y, n, m, x, c) cfn_maxpy_p((y), (n), (m), (x), (c))
    #define cfn_saxpy(v, n, m, y, c) cfn_saxpy_p((v), (n), (m), (y), (c))
    #define cfn_tanh(x, n) cfn_tanh_p((x), (n))
    #define cfn_dots14(x, y, n, out) cfn_dots14_p((x), (y), (n), (out))
    #define cfn_dots44(x, y, n, out) cfn_dots44_p((x), (y), (n), (out))
    #include "cfn_rows.h"
    """
    int cfn_max_threads() nogil
    int cfn_has_openmp() nogil
    uint64_t cfn_splitmix64(uint64_t x) nogil
    void cfn_prefetch(const void* p, Py_ssize_t nbytes) nogil
    int cfn_prefetch_on
    float cfn_dot(const float* a, const float* b, Py_ssize_t n) nogil
    void cfn_axpy(float alpha, const float* x, float* y, Py_ssize_t n) nogil
    void cfn_dots(const float* v, const float** rows, int m, Py_ssize_t n, float* out) nogil
    void cfn_segbwd(const float* w, float* g, Py_ssize_t n, int m, const float** h, float** dh,
                    const float* a, const float* c) nogil
    void cfn_maxpy(float* y, Py_ssize_t n, int m, const float** x, const float* c) nogil
    void cfn_saxpy(const float* v, Py_ssize_t n, int m, float** y, const float* c) nogil
    void cfn_tanh(float* x, Py_ssize_t n) nogil
    void cfn_dots14(const float* x, const float** y, Py_ssize_t n, float* out) nogil
    void cfn_dots44(const float** x, const float** y, Py_ssize_t n, float* out) nogil
    int cfn_ctz64(uint64_t x) nogil
    int cfn_simd_init(int level) nogil
    int cfn_simd_level() nogil
    void cfn_rows_use(int level) nogil
    uint32_t cfn_row_seed(uint32_t seed, int64_t r) nogil
    uint16_t cfn_bf16_sr1(float x, uint32_t rs, uint32_t k) nogil
    uint16_t cfn_bf16_rn1(float x) nogil
    float cfn_bf16_load1(const uint16_t* p) nogil
    void cfn_bf16_round_nearest(const float* x, uint16_t* out, Py_ssize_t n) nogil
    void cfn_enc_rows(float* bf, uint16_t* bb, Py_ssize_t n, int ncol, const int32_t* col, const uint32_t* rseed,
                      const int32_t* poff, const float** dz, const float* cp, const int32_t* voff, float** z,
                      const float* xv) nogil
    void cfn_outdots(const float* rf, const uint16_t* rb, Py_ssize_t n, int m, const float** h, float* out) nogil
    void cfn_outupd(float* rf, uint16_t* rb, uint32_t rs, Py_ssize_t n, int m, const float** h, float** dh,
                    const float* a, const float* c) nogil


_SIMD_NAMES = ("generic", "avx2", "avx512")
cfn_rows_use(cfn_simd_init(-1))

# rescale the lazily decayed arrays (fold scale into V) when scale drops below this
cdef double FOLD_BELOW = 1e-10
cdef enum:
    MAX_GROUPS = 16            # most column groups of the fused output pass (each: a B x H partial of dh)
    ENTRIES_PER_GROUP = 1024   # target number of batch entries per group
    GROUP_FLOATS = 4 << 20     # bound on the floats of all dh partials together
    KBLOCK = 128               # column block of the dense backward (dh_prev = delta W)


def set_prefetch(bint on):
    """Software prefetch of the next weight row (off by default: it measured no gain)."""
    global cfn_prefetch_on
    cfn_prefetch_on = on


def has_openmp():
    """True when the kernels were compiled with OpenMP."""
    return bool(cfn_has_openmp())


def max_threads():
    """OpenMP's default thread count (1 without OpenMP)."""
    return cfn_max_threads()


def simd_level():
    """The SIMD path in use: 'avx512', 'avx2' or 'generic'."""
    return _SIMD_NAMES[cfn_simd_level()]


def set_simd_level(name):
    """Force a SIMD path ('generic', 'avx2', 'avx512' or 'best'); returns the one in use (capped by the CPU)."""
    level = -1 if name is None or name == "best" else _SIMD_NAMES.index(name)
    level = cfn_simd_init(level)
    cfn_rows_use(level)
    return _SIMD_NAMES[level]


def tanh_array(const float[::1] x):
    """The kernels' vector tanh of each entry (to test its accuracy)."""
    out = np.array(x, dtype=np.float32)
    cdef float[::1] o = out
    if o.shape[0]:
        cfn_tanh(&o[0], o.shape[0])
    return out


def splitmix64_array(const uint64_t[::1] x):
    """SplitMix64 of each entry (to test the kernel's hash against cfn_fast.corruption)."""
    out = np.empty(x.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        o[i] = cfn_splitmix64(x[i])
    return out


# ============================================================================= pointer helpers
# The views are const so that read-only inputs (a DLPack or memory-mapped buffer, numpy 2.0's from_dlpack) reach
# the kernels without a copy; the kernels write only into arrays this module allocated.
cdef inline float* fptr(object a) except? NULL:
    """float* of a C-contiguous float32 array (NULL when it is empty or None)."""
    if a is None:
        return NULL
    cdef const float[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return <float*>&flat[0]


cdef inline int32_t* iptr(object a) except? NULL:
    cdef const int32_t[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return <int32_t*>&flat[0]


cdef inline int64_t* lptr(object a) except? NULL:
    cdef const int64_t[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return <int64_t*>&flat[0]


cdef inline uint8_t* bptr(object a) except? NULL:
    cdef uint8_t[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return &flat[0]


cdef inline uint16_t* hptr(object a) except? NULL:
    """uint16_t* of a C-contiguous uint16 array (bfloat16 bits; NULL when it is empty or None)."""
    if a is None:
        return NULL
    cdef uint16_t[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return &flat[0]


cdef inline uint64_t* uptr(object a) except? NULL:
    cdef uint64_t[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return &flat[0]


cdef inline double* dptr(object a) except? NULL:
    cdef double[::1] flat = a.reshape(-1)
    if flat.shape[0] == 0:
        return NULL
    return &flat[0]


# ============================================================================= layer kernels
cdef void sparse_encode(const float* V, float sc, const float* bias, const float* St,
                        const int64_t* eoff, const int32_t* ecol, const float* evl, const uint8_t* ehid,
                        const float* sideb, float* h, int B, int H, int sd, int nt) noexcept nogil:
    """h[i] = tanh(sc * sum_{visible e of row i} evl[e] V[ecol[e]] + bias + sum_d side[i,d] St[d]).

    Entries of row i are eoff[i] .. eoff[i+1]-1 (absolute indices into ecol/evl/ehid);
    ``ehid`` NULL means every entry is visible.  Parallel over rows (each row's sum in
    entry order: deterministic whatever the thread count)."""
    cdef int i, k, d
    cdef int64_t e
    cdef float* z
    for i in prange(B, schedule='dynamic', chunksize=1, num_threads=nt):
        z = h + <Py_ssize_t>i * H
        memset(z, 0, H * sizeof(float))
        for e in range(eoff[i], eoff[i + 1]):
            if ehid == NULL or ehid[e] == 0:
                cfn_axpy(evl[e], V + <Py_ssize_t>ecol[e] * H, z, H)
        for k in range(H):
            z[k] = z[k] * sc + bias[k]
        for d in range(sd):
            cfn_axpy(sideb[<Py_ssize_t>i * sd + d], St + <Py_ssize_t>d * H, z, H)
        cfn_tanh(z, H)


cdef void dense_forward(const float* W, const float* bias, const float* S, const float* hin,
                        const float* sideb, float* hout, int B, int fi, int fo, int sd, int nt) noexcept nogil:
    """hout[i, j] = tanh(bias[j] + W[j] . hin[i] + S[j] . side[i]); parallel over output units j."""
    cdef int i, j
    cdef float z
    for j in prange(fo, schedule='static', num_threads=nt):
        for i in range(B):
            z = cfn_dot(W + <Py_ssize_t>j * fi, hin + <Py_ssize_t>i * fi, fi) + bias[j]
            if sd > 0:
                z = z + cfn_dot(S + <Py_ssize_t>j * sd, sideb + <Py_ssize_t>i * sd, sd)
            hout[<Py_ssize_t>i * fo + j] = z
    for i in prange(B, schedule='static', num_threads=nt):
        cfn_tanh(hout + <Py_ssize_t>i * fo, fo)


cdef void dense_backward_input(const float* W, const float* delta, float* dprev,
                               int B, int fi, int fo, int nt) noexcept nogil:
    """dprev[i, :] = sum_j delta[i, j] W[j, :]; parallel over column blocks of W (stay in cache)."""
    cdef int kb, i, j, k0, kl
    cdef int nkb = (fi + KBLOCK - 1) // KBLOCK
    for kb in prange(nkb, schedule='static', num_threads=nt):
        k0 = kb * KBLOCK
        kl = fi - k0
        if kl > KBLOCK:
            kl = KBLOCK
        for i in range(B):
            memset(dprev + <Py_ssize_t>i * fi + k0, 0, kl * sizeof(float))
            for j in range(fo):
                cfn_axpy(delta[<Py_ssize_t>i * fo + j], W + <Py_ssize_t>j * fi + k0,
                         dprev + <Py_ssize_t>i * fi + k0, kl)


cdef void dense_update(float* W, float* bias, float* S, const float* delta, const float* hin,
                       const float* sideb, int B, int fi, int fo, int sd, float shrink, float step,
                       float* gW, float* gb, float* gS, int nt) noexcept nogil:
    """Gradient of a dense layer for output unit j: sum_i delta[i, j] (hin[i], 1, side[i]).

    With ``gW`` NULL: SGD with decay in place, ``p = p * shrink - step * g`` (the reference's
    float32 update); else the gradient is written to (gW, gb, gS)."""
    cdef int i, j, k, d
    cdef float dl, gbj
    cdef float* buf
    cdef float* sbuf
    cdef float* w
    buf = NULL
    sbuf = NULL
    with parallel(num_threads=nt):
        buf = <float*>malloc((fi + sd + 1) * sizeof(float))
        sbuf = buf + fi
        for j in prange(fo, schedule='static'):
            memset(buf, 0, (fi + sd) * sizeof(float))
            gbj = 0
            for i in range(B):
                dl = delta[<Py_ssize_t>i * fo + j]
                cfn_axpy(dl, hin + <Py_ssize_t>i * fi, buf, fi)
                gbj = gbj + dl
                for d in range(sd):
                    sbuf[d] += dl * sideb[<Py_ssize_t>i * sd + d]
            if gW != NULL:
                memcpy(gW + <Py_ssize_t>j * fi, buf, fi * sizeof(float))
                gb[j] = gbj
                if sd > 0:
                    memcpy(gS + <Py_ssize_t>j * sd, sbuf, sd * sizeof(float))
            else:
                w = W + <Py_ssize_t>j * fi
                for k in range(fi):
                    w[k] = w[k] * shrink - step * buf[k]
                bias[j] = bias[j] * shrink - step * gbj
                for d in range(sd):
                    S[<Py_ssize_t>j * sd + d] = S[<Py_ssize_t>j * sd + d] * shrink - step * sbuf[d]
        free(buf)


cdef void dense_vector_update(float* p, const float* delta, int B, int n, float shrink, float step,
                              float* g, int nt) noexcept nogil:
    """Bias of the input layer: g = sum_i delta[i, :]; p = p * shrink - step * g (or write g)."""
    cdef int i, k
    cdef float s
    for k in range(n):      # B x n additions: not worth a parallel region
        s = 0
        for i in range(B):
            s = s + delta[<Py_ssize_t>i * n + k]
        if g != NULL:
            g[k] = s
        else:
            p[k] = p[k] * shrink - step * s


cdef void side_input_update(float* St, const float* delta, const float* sideb, int B, int H, int sd,
                            float shrink, float step, float* gSt, int nt) noexcept nogil:
    """Side weight of the input layer, stored transposed (sd x H): row d gets sum_i side[i, d] delta[i]."""
    cdef int i, d, k
    cdef float* buf
    cdef float* row
    buf = NULL
    with parallel(num_threads=nt):
        buf = <float*>malloc((H + 1) * sizeof(float))
        for d in prange(sd, schedule='static'):
            memset(buf, 0, H * sizeof(float))
            for i in range(B):
                cfn_axpy(sideb[<Py_ssize_t>i * sd + d], delta + <Py_ssize_t>i * H, buf, H)
            if gSt != NULL:
                memcpy(gSt + <Py_ssize_t>d * H, buf, H * sizeof(float))
            else:
                row = St + <Py_ssize_t>d * H
                for k in range(H):
                    row[k] = row[k] * shrink - step * buf[k]
        free(buf)


cdef void tanh_backward(float* dh, const float* h, Py_ssize_t n) noexcept nogil:
    """dh *= (1 - h^2) in place."""
    cdef Py_ssize_t k
    for k in range(n):
        dh[k] = dh[k] * (1.0 - h[k] * h[k])


cdef enum:
    DEC_ROW_QUADS = 8       # row quads per work item of decode_pairs (32 rows of x)
    DEC_COL_QUADS = 16      # column quads per work item (64 rows of V: stay in L2 across the row quads)


cdef inline void _decode_store(const float* acc, int stride_a, int stride_b, Py_ssize_t i0, Py_ssize_t m,
                               Py_ssize_t q0, Py_ssize_t nc, const int64_t* cols, const float* bias,
                               const float* SX, const float* S, int sd, float sc, float* out) noexcept nogil:
    """out[i, q] = sc (acc[a stride_a + b stride_b] + bias[c] + S[c] . SX[i]) for the valid rows i = i0 + a
    and columns q = q0 + b (c = cols[q]) of a 4 x 4 tile."""
    cdef int a, b
    cdef Py_ssize_t i, q
    cdef int64_t c
    cdef float z
    for a in range(4):
        i = i0 + a
        if i >= m:
            break
        for b in range(4):
            q = q0 + b
            if q >= nc:
                break
            c = cols[q]
            z = acc[a * stride_a + b * stride_b] + bias[c]
            if SX != NULL:
                z = z + cfn_dot(SX + i * sd, S + c * sd, sd)
            out[i * nc + q] = sc * z


cdef void decode_pairs(const float* X, Py_ssize_t m, const float* V, const int64_t* cols, Py_ssize_t nc, int n,
                       const float* bias, const float* SX, const float* S, int sd, float sc, float* out,
                       int nt) noexcept nogil:
    """out[i, q] = tanh(sc (V[cols[q]] . X[i] + bias[cols[q]] + S[cols[q]] . SX[i])) for i < m, q < nc.

    Tiles of 4 rows x 4 columns (short tiles repeat their last row or column); the dot of a pair is always
    the one chain of cfn_dots14 / cfn_dots44, so a value never depends on how many rows or columns were
    asked for, nor on the thread count.  Parallel over (row block, column block) work items."""
    cdef Py_ssize_t nrq = (m + 3) // 4, ncq = (nc + 3) // 4
    cdef Py_ssize_t nrb = (nrq + DEC_ROW_QUADS - 1) // DEC_ROW_QUADS
    cdef Py_ssize_t ncb = (ncq + DEC_COL_QUADS - 1) // DEC_COL_QUADS
    cdef Py_ssize_t item, rb, cb, rq, cq, rq1, cq1, r, q
    cdef bint rows_outer = m >= nc   # stream the larger side once; the smaller stays in cache
    cdef int a
    cdef const float** xp = NULL
    cdef const float** yp = NULL
    cdef float* acc = NULL
    with parallel(num_threads=nt):
        xp = <const float**>malloc(4 * sizeof(float*))
        yp = <const float**>malloc(4 * sizeof(float*))
        acc = <float*>malloc(16 * sizeof(float))
        for item in prange(nrb * ncb, schedule='dynamic'):
            # consecutive items share a block of the larger side and run over all of the smaller one
            rb = item // ncb if rows_outer else item % nrb
            cb = item % ncb if rows_outer else item // nrb
            rq1 = (rb + 1) * DEC_ROW_QUADS
            cq1 = (cb + 1) * DEC_COL_QUADS
            for rq in range(rb * DEC_ROW_QUADS, rq1 if rq1 < nrq else nrq):
                for a in range(4):
                    r = rq * 4 + a
                    xp[a] = X + (r if r < m else m - 1) * n
                for cq in range(cb * DEC_COL_QUADS, cq1 if cq1 < ncq else ncq):
                    for a in range(4):
                        q = cq * 4 + a
                        yp[a] = V + cols[q if q < nc else nc - 1] * n
                    if m == 1:
                        cfn_dots14(xp[0], yp, n, acc)               # acc[b] = x . y_b
                        _decode_store(acc, 0, 1, rq * 4, m, cq * 4, nc, cols, bias, SX, S, sd, sc, out)
                    elif nc == 1:
                        cfn_dots14(yp[0], xp, n, acc)               # acc[a] = y . x_a
                        _decode_store(acc, 1, 0, rq * 4, m, cq * 4, nc, cols, bias, SX, S, sd, sc, out)
                    else:
                        cfn_dots44(xp, yp, n, acc)                  # acc[4a + b] = x_a . y_b
                        _decode_store(acc, 4, 1, rq * 4, m, cq * 4, nc, cols, bias, SX, S, sd, sc, out)
        free(xp)
        free(yp)
        free(acc)
    # tanh is element-wise: the whole output in chunks
    cdef Py_ssize_t total = m * nc, nchunks = (m * nc + 8191) // 8192
    for item in prange(nchunks, schedule='static', num_threads=nt):
        cfn_tanh(out + item * 8192, 8192 if (item + 1) * 8192 <= total else total - item * 8192)


# ============================================================================= phase timers
# Per-phase timers of the training step (cfn_fast.profiling); one branch per phase when off.
cdef extern from *:
    """
    #include <time.h>
    static double cfn_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);   /* the clock of Python's time.monotonic() */
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    """
    double cfn_now() nogil

cdef enum:
    PH_GATHER = 0
    PH_SORT = 1
    PH_ENCODE = 2
    PH_DENSE_FWD = 3
    PH_OUTPUT = 4
    PH_DENSE_BWD = 5
    PH_INPUT = 6
    PH_FOLD = 7
    NPHASES = 8
    PH_BATCH = 8       # hook id of a whole mini-batch

#: names of the phases of the training step, in the order of ``profile_log``'s axis 1
PHASE_NAMES = ("gather", "sort", "encode", "dense_forward", "output", "dense_backward", "input_update", "fold")


def monotonic():
    """The clock of the phase timers (seconds)."""
    return cfn_now()


# ============================================================================= the training state
cdef inline Py_ssize_t _group_stride(Py_ssize_t B, Py_ssize_t H) noexcept nogil:
    """Floats between two group partials of B rows of H: whole 4 KiB pages (see ensure_capacity)."""
    return (B * H + 1023) // 1024 * 1024


cdef Py_ssize_t _skew(object a, Py_ssize_t page_offset) except -1:
    """Floats to skip from the start of float32 array ``a`` so that the address is at ``page_offset`` bytes
    within a 4 KiB page (``a`` has 1024 floats to spare)."""
    return ((page_offset - a.ctypes.data % 4096) % 4096) // 4


cdef class SparseCFN:
    """CFN parameters and work buffers, with the sparse training step in C.

    Layer 0 (inputs -> hidden) and layer L-1 (hidden -> outputs) are sparse-touched and kept
    as ``scale * V`` (input weight transposed: n_inputs x H0; output weight n_inputs x H);
    hidden-to-hidden layers and the input layer's bias and side weight are dense.
    """
    cdef readonly int n_layers, n_inputs, n_samples, side_dim
    cdef readonly double scale
    cdef public int nthreads
    cdef readonly object widths
    cdef float alpha, beta
    cdef uint64_t threshold
    cdef int cap_b
    cdef Py_ssize_t cap_e
    cdef int* w                      # widths (n_layers + 1)
    # training CSR
    cdef object _indptr, _indices, _data, _side
    cdef const int64_t* indptr
    cdef const int32_t* indices
    cdef const float* data
    cdef const float* side
    # parameters
    cdef readonly object win, b_in, s_in_t, wout, bout, sout, dense_w, dense_b, dense_s
    cdef float* p_win
    cdef float* p_bin
    cdef float* p_sin
    cdef float* p_wout
    cdef float* p_bout
    cdef float* p_sout
    # bfloat16 storage (bf16): the four arrays above hold bfloat16 bits (q_*; p_* are NULL), updates are rounded
    # stochastically with per-batch array seeds (cfn_fast/backends/bfloat16.py); round_salt comes from there
    cdef readonly bint bf16
    cdef uint16_t* q_win
    cdef uint16_t* q_wout
    cdef uint16_t* q_bout
    cdef uint16_t* q_sout
    cdef uint64_t round_salt
    cdef uint32_t seed_win, seed_wout, seed_bout, seed_sout, pend_seed
    cdef float** p_dw
    cdef float** p_db
    cdef float** p_ds
    # gradient outputs (non-NULL only inside gradients())
    cdef float* g_win
    cdef float* g_bin
    cdef float* g_sin
    cdef float* g_wout
    cdef float* g_bout
    cdef float* g_sout
    cdef float** g_dw
    cdef float** g_db
    cdef float** g_ds
    # work buffers
    cdef object _buf
    cdef int64_t* eoff
    cdef int32_t* erow
    cdef int32_t* ecol
    cdef float* evl
    cdef uint8_t* ehid
    cdef int32_t* perm
    cdef int32_t* dcol
    cdef int32_t* seg
    cdef int32_t* slot
    cdef int32_t* ccount
    cdef uint64_t* bitmap
    cdef int32_t* gstart
    cdef double* lossp
    # per batch entry / merged row of the row kernels (each group uses a disjoint range)
    cdef int32_t* mcol
    cdef uint32_t* mseed
    cdef int32_t* mpoff
    cdef int32_t* mvoff
    cdef float** pdz
    cdef float** vzp
    cdef float* vx
    cdef float** ehp
    cdef float** edp
    cdef float* eca
    cdef float* ecc
    cdef float* eval_
    # the previous mini-batch's input-layer update, deferred into this batch's encoder pass
    cdef int pend_nd
    cdef float* pend_dz
    cdef int32_t* pend_dcol
    cdef int32_t* pend_seg
    cdef int32_t* pend_row
    cdef float* pend_coef
    cdef int32_t* pstart
    cdef float* sideb
    cdef float** act                 # act[l], l = 1..L-1: B x w[l] (after dropout: what layer l + 1 takes)
    # dropout (cfn_fast.corruption): on when dropping; keep[l] the multipliers (0 or drop_scale), hraw[l] the
    # tanh outputs before them (the derivative needs them); brow the batch's sample rows (the draws' counters)
    cdef bint dropping
    cdef uint64_t drop_threshold, drop_salt
    cdef float drop_scale
    cdef float** keep
    cdef float** hraw
    cdef int64_t* brow
    cdef float* dA
    cdef float* dB
    cdef float* dhp
    # phase timers: off unless set_profiling(True); per mini-batch and phase: start, seconds
    cdef bint prof_on, prof_hook_on
    cdef object prof_hook, prof_arr
    cdef int prof_cur
    cdef double prof_t0
    cdef double* prof_log
    cdef Py_ssize_t prof_row, prof_rows
    cdef int last_nd, last_G
    cdef Py_ssize_t dhp_cap          # floats of the group partials

    def __cinit__(self):
        self.pend_nd = 0
        self.prof_on = self.prof_hook_on = 0
        self.prof_log = NULL
        self.prof_cur = -1
        self.w = NULL
        self.p_dw = self.p_db = self.p_ds = NULL
        self.g_dw = self.g_db = self.g_ds = NULL
        self.act = NULL
        self.keep = self.hraw = NULL

    def __dealloc__(self):
        free(self.w)
        free(self.p_dw)
        free(self.p_db)
        free(self.p_ds)
        free(self.g_dw)
        free(self.g_db)
        free(self.g_ds)
        free(self.act)
        free(self.keep)
        free(self.hraw)

    def __init__(self, widths, int side_dim, indptr, indices, data, side, double alpha, double beta,
                 uint64_t threshold, int batch_size, int nthreads, bint bf16=False, uint64_t round_salt=0,
                 bint dropping=False, uint64_t drop_threshold=0, float drop_scale=1.0, uint64_t drop_salt=0):
        cdef int l
        self.dropping = dropping
        self.drop_threshold = drop_threshold
        self.drop_scale = drop_scale
        self.drop_salt = drop_salt
        self.bf16 = bf16
        self.round_salt = round_salt
        self.widths = tuple(int(x) for x in widths)
        self.n_layers = len(self.widths) - 1
        if self.n_layers < 2:
            raise ValueError("a CFN network has at least one hidden layer")
        self.n_inputs = self.widths[0]
        self.side_dim = side_dim
        self.alpha = alpha
        self.beta = beta
        self.threshold = threshold
        self.nthreads = nthreads
        self.w = <int*>malloc((self.n_layers + 1) * sizeof(int))
        for l in range(self.n_layers + 1):
            self.w[l] = self.widths[l]
        nl = self.n_layers
        self.p_dw = <float**>malloc(nl * sizeof(float*))
        self.p_db = <float**>malloc(nl * sizeof(float*))
        self.p_ds = <float**>malloc(nl * sizeof(float*))
        self.g_dw = <float**>malloc(nl * sizeof(float*))
        self.g_db = <float**>malloc(nl * sizeof(float*))
        self.g_ds = <float**>malloc(nl * sizeof(float*))
        self.act = <float**>malloc(nl * sizeof(float*))
        self.keep = <float**>malloc(nl * sizeof(float*))
        self.hraw = <float**>malloc(nl * sizeof(float*))
        for l in range(nl):
            self.p_dw[l] = self.p_db[l] = self.p_ds[l] = NULL
            self.g_dw[l] = self.g_db[l] = self.g_ds[l] = NULL
            self.act[l] = self.keep[l] = self.hraw[l] = NULL
        H0 = self.widths[1]
        HL = self.widths[nl - 1]
        n = self.n_inputs
        big = np.uint16 if bf16 else np.float32
        self.win = np.zeros((n, H0), big)
        self.b_in = np.zeros(H0, np.float32)
        self.s_in_t = np.zeros((side_dim, H0), np.float32)
        self.wout = np.zeros((n, HL), big)
        self.bout = np.zeros(n, big)
        self.sout = np.zeros((n, side_dim), big)
        self.dense_w, self.dense_b, self.dense_s = [None], [None], [None]
        for l in range(1, nl - 1):
            self.dense_w.append(np.zeros((self.widths[l + 1], self.widths[l]), np.float32))
            self.dense_b.append(np.zeros(self.widths[l + 1], np.float32))
            self.dense_s.append(np.zeros((self.widths[l + 1], side_dim), np.float32))
        self.p_bin = fptr(self.b_in)
        self.p_sin = fptr(self.s_in_t)
        if bf16:
            self.p_win = self.p_wout = self.p_bout = self.p_sout = NULL
            self.q_win = hptr(self.win)
            self.q_wout = hptr(self.wout)
            self.q_bout = hptr(self.bout)
            self.q_sout = hptr(self.sout)
        else:
            self.q_win = self.q_wout = self.q_bout = self.q_sout = NULL
            self.p_win = fptr(self.win)
            self.p_wout = fptr(self.wout)
            self.p_bout = fptr(self.bout)
            self.p_sout = fptr(self.sout)
        for l in range(1, nl - 1):
            self.p_dw[l] = fptr(self.dense_w[l])
            self.p_db[l] = fptr(self.dense_b[l])
            self.p_ds[l] = fptr(self.dense_s[l])
        self.scale = 1.0
        self.set_data(indptr, indices, data, side)
        self.cap_b = 0
        self.cap_e = 0
        self._buf = {}
        self.ensure_capacity(max(1, batch_size), self.max_batch_entries(batch_size))

    # ----------------------------------------------------------------- set-up
    def set_data(self, indptr, indices, data, side):
        """The training CSR (int64 indptr, int32 indices, float32 data) and side rows (or None)."""
        self._indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(indices, dtype=np.int32)
        self._data = np.ascontiguousarray(data, dtype=np.float32)
        self.n_samples = len(self._indptr) - 1
        self.indptr = lptr(self._indptr)
        self.indices = iptr(self._indices)
        self.data = fptr(self._data)
        if self.side_dim > 0:
            self._side = np.ascontiguousarray(side, dtype=np.float32)
            self.side = fptr(self._side)
        else:
            self._side = None
            self.side = NULL

    def max_batch_entries(self, int batch_size):
        """Most known entries any mini-batch of ``batch_size`` rows can hold."""
        counts = np.sort(np.diff(self._indptr))[::-1]
        return int(counts[:batch_size].sum())

    def ensure_capacity(self, int B, Py_ssize_t ne):
        """Grow the work buffers to hold B rows and ne entries (never O(n_inputs x H) per batch)."""
        cdef int l
        if B <= self.cap_b and ne <= self.cap_e:
            return
        if self.pend_nd > 0:
            raise RuntimeError("internal error: buffers resized with a deferred update pending")
        B = max(B, self.cap_b)
        ne = max(ne, self.cap_e, 1)
        nl = self.n_layers
        HL = self.widths[nl - 1]
        wmax = max(self.widths[1:nl])
        b = {}
        b["eoff"] = np.zeros(B + 1, np.int64)
        nd = min(ne, max(self.n_inputs, 1))      # distinct columns of a batch
        for name in ("erow", "ecol", "perm"):
            b[name] = np.zeros(ne, np.int32)
        b["dcol"] = np.zeros(nd, np.int32)
        b["seg"] = np.zeros(nd + 1, np.int32)
        b["evl"] = np.zeros(ne, np.float32)
        b["ehid"] = np.zeros(ne, np.uint8)
        for name, dtype, size, fill in (("slot", np.int32, self.n_inputs, 0), ("ccount", np.int32, self.n_inputs, 0),
                                        ("bitmap", np.uint64, (self.n_inputs + 63) // 64, 0)):
            b[name] = self._buf.get(name, None)   # kept clean between batches: reuse
            if b[name] is None:
                b[name] = np.full(max(size, 1), fill, dtype)
        b["pend_dz"] = np.zeros(B * self.widths[1] + 1024, np.float32)
        b["pend_row"] = np.zeros(ne, np.int32)
        b["pend_dcol"] = np.zeros(nd, np.int32)
        b["pend_seg"] = np.zeros(nd + 1, np.int32)
        b["pend_coef"] = np.zeros(ne, np.float32)
        b["pstart"] = np.zeros(MAX_GROUPS + 1, np.int32)
        b["gstart"] = np.zeros(MAX_GROUPS + 1, np.int32)
        b["lossp"] = np.zeros(MAX_GROUPS, np.float64)
        for name in ("mcol", "mpoff", "mvoff"):
            b[name] = np.zeros(2 * nd + MAX_GROUPS + 2, np.int32)
        b["mseed"] = np.zeros(2 * nd + MAX_GROUPS + 2, np.uint32)
        for name in ("pdz", "vzp", "ehp", "edp"):
            b[name] = np.zeros(ne, np.uint64)
        for name in ("vx", "eca", "ecc", "eval_"):
            b[name] = np.zeros(ne, np.float32)
        b["sideb"] = np.zeros(B * self.side_dim + 1, np.float32)
        b["dA"] = np.zeros(B * wmax, np.float32)
        b["dB"] = np.zeros(B * wmax, np.float32)
        HP = max(HL, self.widths[1])
        gstride = _group_stride(B, HP)
        self.dhp_cap = min(MAX_GROUPS * gstride, max(GROUP_FLOATS, gstride))
        b["dhp"] = np.zeros(self.dhp_cap + 1024, np.float32)
        for l in range(1, nl):
            b[f"act{l}"] = np.zeros(B * self.widths[l], np.float32)
            if self.dropping:
                b[f"keep{l}"] = np.zeros(B * self.widths[l], np.float32)
                b[f"hraw{l}"] = np.zeros(B * self.widths[l], np.float32)
        b["brow"] = np.zeros(B, np.int64)
        self._buf = b
        self.eoff = lptr(b["eoff"])
        self.erow = iptr(b["erow"])
        self.ecol = iptr(b["ecol"])
        self.perm = iptr(b["perm"])
        self.dcol = iptr(b["dcol"])
        self.seg = iptr(b["seg"])
        self.evl = fptr(b["evl"])
        self.ehid = bptr(b["ehid"])
        self.slot = iptr(b["slot"])
        self.ccount = iptr(b["ccount"])
        self.bitmap = <uint64_t*>uptr(b["bitmap"])
        self.gstart = iptr(b["gstart"])
        # The group partials (dhp) are read and written in the same loops as the activation rows (output
        # pass) and the deferred dz rows (encoder), row i with row i.  Rows at the same offset within a 4 KiB
        # page would make every such store look like it feeds the next load ("4K aliasing"), so the buffers
        # start half a page apart: dz and the activations at one page offset, the partials 2 KiB after (group
        # partials are whole pages apart).  A guard: here it measured a few per cent, within the noise.
        h_page = b[f"act{nl - 1}"].ctypes.data % 4096
        self.pend_dz = fptr(b["pend_dz"]) + <Py_ssize_t>_skew(b["pend_dz"], h_page)
        self.pend_dcol = iptr(b["pend_dcol"])
        self.pend_seg = iptr(b["pend_seg"])
        self.pend_row = iptr(b["pend_row"])
        self.pend_coef = fptr(b["pend_coef"])
        self.pstart = iptr(b["pstart"])
        self.lossp = dptr(b["lossp"])
        self.mcol = iptr(b["mcol"])
        self.mpoff = iptr(b["mpoff"])
        self.mvoff = iptr(b["mvoff"])
        self.mseed = <uint32_t*>iptr(b["mseed"].view(np.int32))
        self.pdz = <float**>uptr(b["pdz"])     # pointer arrays: 64-bit slots
        self.vzp = <float**>uptr(b["vzp"])
        self.ehp = <float**>uptr(b["ehp"])
        self.edp = <float**>uptr(b["edp"])
        self.vx = fptr(b["vx"])
        self.eca = fptr(b["eca"])
        self.ecc = fptr(b["ecc"])
        self.eval_ = fptr(b["eval_"])
        self.sideb = fptr(b["sideb"])
        self.dA = fptr(b["dA"])
        self.dB = fptr(b["dB"])
        self.dhp = fptr(b["dhp"]) + <Py_ssize_t>_skew(b["dhp"], (h_page + 2048) % 4096)
        for l in range(1, nl):
            self.act[l] = fptr(b[f"act{l}"])
            if self.dropping:
                self.keep[l] = fptr(b[f"keep{l}"])
                self.hraw[l] = fptr(b[f"hraw{l}"])
        self.brow = lptr(b["brow"])
        self.cap_b = B
        self.cap_e = ne

    # ----------------------------------------------------------------- parameters
    def load(self, layers):
        """Import canonical layers (``cfn_fast.network.Layer``); scale becomes 1."""
        nl = self.n_layers
        first, last = layers[0], layers[nl - 1]
        self._set_big(self.win, np.asarray(first.weight, np.float32).T)
        np.copyto(self.b_in, first.bias)
        self._set_big(self.wout, last.weight)
        self._set_big(self.bout, last.bias)
        if self.side_dim > 0:
            np.copyto(self.s_in_t, np.asarray(first.side_weight, np.float32).T)
            self._set_big(self.sout, last.side_weight)
        for l in range(1, nl - 1):
            np.copyto(self.dense_w[l], layers[l].weight)
            np.copyto(self.dense_b[l], layers[l].bias)
            if self.side_dim > 0:
                np.copyto(self.dense_s[l], layers[l].side_weight)
        self.scale = 1.0

    def _set_big(self, dst, values):
        """One of the four per-input arrays from float32 values (bfloat16: rounded to nearest even)."""
        if not self.bf16:
            np.copyto(dst, values)
            return
        np.copyto(dst, round_nearest_bf16(values))

    def _big(self, a):
        """The float32 values of one of the four per-input arrays, before the scale."""
        return widen_bf16(a) if self.bf16 else a

    def export(self):
        """Canonical arrays [(weight, bias, side_weight or None), ...] with the scale applied."""
        nl = self.n_layers
        sd = self.side_dim
        win = scaled_transpose(self._big(self.win), self.scale)
        out = [(win, self.b_in.copy(), self.s_in_t.T.copy() if sd else None)]
        for l in range(1, nl - 1):
            out.append((self.dense_w[l].copy(), self.dense_b[l].copy(), self.dense_s[l].copy() if sd else None))
        out.append((scaled_copy(self._big(self.wout), self.scale), scaled_copy(self._big(self.bout), self.scale),
                    scaled_copy(self._big(self.sout), self.scale) if sd else None))
        return out

    def load_values_of(self, SparseCFN src):
        """``load(src.export())`` without the canonical layout's two transposes and its temporary copies: this
        float32 state takes the float32 values of ``src``'s parameters (bfloat16 widened, the lazy scale applied
        and rounded once, as export does); scale becomes 1.  ``src``: a state of the same network (the float32
        twin of a bfloat16 state)."""
        cdef int l
        if self.bf16 or self.widths != src.widths or self.side_dim != src.side_dim:
            raise ValueError("load_values_of takes a state of the same network into a float32 state")
        for dst, values in ((self.win, src.win), (self.wout, src.wout), (self.bout, src.bout), (self.sout, src.sout)):
            scaled_values_into(dst, values, src.scale, self.nthreads)
        np.copyto(self.b_in, src.b_in)
        np.copyto(self.s_in_t, src.s_in_t)
        for l in range(1, self.n_layers - 1):
            np.copyto(self.dense_w[l], src.dense_w[l])
            np.copyto(self.dense_b[l], src.dense_b[l])
            np.copyto(self.dense_s[l], src.dense_s[l])
        self.scale = 1.0

    def max_abs(self):
        """max |θ| over every parameter (NaN if any is NaN), without exporting anything."""
        cdef double s = self.scale
        arrays_scaled = [self.win, self.wout, self.bout, self.sout]
        arrays_dense = [self.b_in, self.s_in_t] + [a for l in range(1, self.n_layers - 1)
                                                   for a in (self.dense_w[l], self.dense_b[l], self.dense_s[l])]
        largest = 0.0
        for arrays, factor in ((arrays_scaled, s), (arrays_dense, 1.0)):
            for a in arrays:
                if a.size:
                    m = max_abs_bf16(a, self.nthreads) if a.dtype == np.uint16 else max_abs_array(a, self.nthreads)
                    if m != m:
                        return float("nan")
                    largest = max(largest, float(<float>(m * factor)))
        return largest

    def _param_arrays(self):
        nl = self.n_layers
        arrays = [self.win, self.b_in, self.s_in_t, self.wout, self.bout, self.sout]
        for l in range(1, nl - 1):
            arrays += [self.dense_w[l], self.dense_b[l], self.dense_s[l]]
        return arrays

    def snapshot(self, into=None):
        """Internal copies (no transposition): cheap to take every epoch.  ``into``: the arrays of an earlier
        snapshot to copy into (no new pages to fault in), else new ones."""
        arrays = self._param_arrays()
        if into is None or len(into) != len(arrays) or any(a.shape != b.shape or a.dtype != b.dtype
                                                            for a, b in zip(into, arrays)):
            into = [np.empty_like(a) for a in arrays]
        for dst, src in zip(into, arrays):
            parallel_copy(dst, src, self.nthreads)
        return (self.scale, into)

    def restore(self, snap):
        scale, arrays = snap
        for t, a in zip(self._param_arrays(), arrays):
            parallel_copy(t, a, self.nthreads)
        self.scale = scale

    def fold(self):
        """W = scale * V with scale = 1 (multiplies the four lazily decayed arrays in place)."""
        cdef double s = self.scale
        if s == 1.0:
            return
        with nogil:
            self._fold(s)
        self.scale = 1.0

    cdef void _fold(self, double s) noexcept nogil:
        cdef int nl = self.n_layers
        if self.bf16:
            scale_bf16_inplace(self.q_win, <Py_ssize_t>self.n_inputs * self.w[1], s, self.nthreads)
            scale_bf16_inplace(self.q_wout, <Py_ssize_t>self.n_inputs * self.w[nl - 1], s, self.nthreads)
            scale_bf16_inplace(self.q_bout, self.n_inputs, s, self.nthreads)
            scale_bf16_inplace(self.q_sout, <Py_ssize_t>self.n_inputs * self.side_dim, s, self.nthreads)
            return
        scale_inplace(self.p_win, <Py_ssize_t>self.n_inputs * self.w[1], s, self.nthreads)
        scale_inplace(self.p_wout, <Py_ssize_t>self.n_inputs * self.w[nl - 1], s, self.nthreads)
        scale_inplace(self.p_bout, self.n_inputs, s, self.nthreads)
        scale_inplace(self.p_sout, <Py_ssize_t>self.n_inputs * self.side_dim, s, self.nthreads)

    # ----------------------------------------------------------------- training
    def batch_entries(self, const int64_t[::1] rows):
        """Number of known entries of ``rows``."""
        cdef Py_ssize_t i, n = 0
        for i in range(rows.shape[0]):
            n += self.indptr[rows[i] + 1] - self.indptr[rows[i]]
        return n

    def train_epoch(self, const int64_t[::1] order, int batch_size, uint64_t key, double lr, double weight_decay):
        """All mini-batches of ``order`` (consecutive slices of batch_size); the summed loss."""
        cdef Py_ssize_t start, n = order.shape[0]
        cdef int B
        cdef double total = 0.0
        if n == 0:
            return 0.0
        self.ensure_capacity(batch_size, self.max_batch_entries(batch_size))
        self._profile_rows((n + batch_size - 1) // batch_size)
        with nogil:
            start = 0
            while start < n:
                B = batch_size if start + batch_size <= n else <int>(n - start)
                total += self._step(&order[start], B, key, lr, weight_decay, 1, 1)
                start += batch_size
            self._tick(PH_INPUT)     # the last batch's deferred input update
            self._flush_pending()
            self._tick(-1)
        return total

    def step(self, const int64_t[::1] rows, uint64_t key, double lr, double weight_decay, bint train):
        """One mini-batch: SGD step when ``train``, else gradients into the arrays set by set_grads."""
        cdef int B = rows.shape[0]
        cdef double loss
        self.ensure_capacity(B, self.batch_entries(rows))
        self._profile_rows(1)
        if self.bf16 and not train:
            raise NotImplementedError("gradients of a bfloat16 engine: take them from a float32 copy")
        with nogil:
            loss = self._step(&rows[0], B, key, lr, weight_decay, train, 0)
            if self.bf16:
                self._flush_pending()
        return loss

    # ----------------------------------------------------------------- phase timers
    def set_profiling(self, bint on, hook=None):
        """Phase timers on/off; ``hook(phase, begin)`` (phase ids of PHASE_NAMES, 8 = a mini-batch)
        is called with the GIL at every phase boundary (NVTX ranges), or None."""
        self.prof_on = on
        self.prof_hook = hook if on else None
        self.prof_hook_on = on and hook is not None
        if not on:
            self.prof_arr = None
            self.prof_log = NULL
            self.prof_rows = 0

    def profile_log(self):
        """(batches, phases, 2) float64 of the last train_epoch/step: start (monotonic s), seconds
        (0 where the phase did not run)."""
        if self.prof_arr is None:
            return np.zeros((0, NPHASES, 2))
        return self.prof_arr[:self.prof_row + 1].copy()

    def _profile_rows(self, Py_ssize_t rows):
        if not self.prof_on:
            return
        self.prof_arr = np.zeros((rows, NPHASES, 2))
        self.prof_log = dptr(self.prof_arr)
        self.prof_rows = rows
        self.prof_row = -1
        self.prof_cur = -1

    cdef void _tick(self, int phase) noexcept nogil:
        """End the running phase and start ``phase`` (-1: none)."""
        cdef double t
        cdef double* slot
        if not self.prof_on or self.prof_row < 0:
            return
        t = cfn_now()
        if self.prof_cur >= 0:
            slot = self.prof_log + (self.prof_row * NPHASES + self.prof_cur) * 2
            if slot[1] == 0:
                slot[0] = self.prof_t0
            slot[1] += t - self.prof_t0
            if self.prof_hook_on:
                with gil:
                    self.prof_hook(self.prof_cur, False)
        self.prof_cur = phase
        if phase >= 0 and self.prof_hook_on:
            with gil:
                self.prof_hook(phase, True)
        self.prof_t0 = cfn_now()     # the hook's own time is not counted

    cdef void _batch_mark(self, bint begin) noexcept nogil:
        """Next log row (begin) and the mini-batch hook."""
        if not self.prof_on:
            return
        if begin and self.prof_row + 1 < self.prof_rows:
            self.prof_row += 1
        if self.prof_hook_on:
            with gil:
                self.prof_hook(PH_BATCH, begin)

    def run_phase(self, int phase, const int64_t[::1] rows, uint64_t key, double lr, double weight_decay):
        """Re-run one phase of the training step on the buffers a previous ``step`` of the same
        ``rows`` left behind (micro-benchmarks): 0 batch set-up (gather, sort, partition), 1 encode,
        2 output (fused decoder, loss, deltas, dh and output update), 3 input-layer update, 4 fold."""
        cdef int B = rows.shape[0]
        cdef Py_ssize_t ne
        cdef float shrink = <float>(1.0 - lr * weight_decay)
        cdef float step = <float>(lr / B)
        cdef float upd = <float>(-<double>step / self.scale)
        if B > self.cap_b or self.batch_entries(rows) > self.cap_e:
            raise ValueError("run_phase needs a step() of the same rows first")
        with nogil:
            if phase == 0:
                ne = self._gather(&rows[0], B, key)
                self.last_nd = self._sort_columns(ne)
                self.last_G = self._partition(ne, self.last_nd, B)
            elif phase == 1:
                self._encode_columns(B, self.last_G, <float>self.scale)
                if self.dropping:
                    self._drop(1, B, key + self.drop_salt)
            elif phase == 2:
                self._output_pass(B, self.last_G, <float>self.scale, upd, self.dA)
            elif phase == 3 and self.bf16:
                self._defer_input_pass(B, self.last_nd, self.dA, upd)
                self._flush_pending()
            elif phase == 3:
                dense_vector_update(self.p_bin, self.dA, B, self.w[1], shrink, step, self.g_bin, self.nthreads)
                if self.side_dim > 0:
                    side_input_update(self.p_sin, self.dA, self.sideb, B, self.w[1], self.side_dim, shrink, step,
                                      self.g_sin, self.nthreads)
                self._input_pass(B, self.last_nd, self.dA, upd)
            elif phase == 4:
                self._fold(1.0)

    def set_grads(self, grads):
        """Gradient outputs (same internal layouts as the parameters) or None."""
        cdef int l
        nl = self.n_layers
        self._buf["grads"] = grads
        if grads is None:
            self.g_win = self.g_bin = self.g_sin = self.g_wout = self.g_bout = self.g_sout = NULL
            for l in range(nl):
                self.g_dw[l] = self.g_db[l] = self.g_ds[l] = NULL
            return
        self.g_win = fptr(grads["win"])
        self.g_bin = fptr(grads["b_in"])
        self.g_sin = fptr(grads["s_in_t"])
        self.g_wout = fptr(grads["wout"])
        self.g_bout = fptr(grads["bout"])
        self.g_sout = fptr(grads["sout"])
        for l in range(1, nl - 1):
            self.g_dw[l] = fptr(grads["dense_w"][l])
            self.g_db[l] = fptr(grads["dense_b"][l])
            self.g_ds[l] = fptr(grads["dense_s"][l])

    cdef Py_ssize_t _gather(self, const int64_t* rows, int B, uint64_t key) noexcept nogil:
        """Entries of the batch in CSR order with their hidden flags (hash + swap rule)."""
        cdef int i
        cdef int64_t r, p, p0, n, e0, t, nh
        cdef uint64_t thr = self.threshold
        cdef uint8_t hid
        self.eoff[0] = 0
        for i in range(B):
            r = rows[i]
            self.brow[i] = r
            self.eoff[i + 1] = self.eoff[i] + self.indptr[r + 1] - self.indptr[r]
        if self.side_dim > 0:
            for i in range(B):
                memcpy(self.sideb + <Py_ssize_t>i * self.side_dim,
                       self.side + <Py_ssize_t>rows[i] * self.side_dim, self.side_dim * sizeof(float))
        # hashing is cheap: a parallel region only pays off for big batches (same result either way)
        for i in prange(B, schedule='static', num_threads=self.nthreads if self.eoff[B] > 65536 else 1):
            r = rows[i]
            p0 = self.indptr[r]
            n = self.indptr[r + 1] - p0
            e0 = self.eoff[i]
            nh = 0
            for t in range(n):
                p = p0 + t
                hid = (cfn_splitmix64(key + <uint64_t>p) >> 40) < thr
                self.erow[e0 + t] = i
                self.ecol[e0 + t] = self.indices[p]
                self.evl[e0 + t] = self.data[p]
                self.ehid[e0 + t] = hid
                nh = nh + hid
            if n > 0 and nh == n:   # swap rule: all hidden -> all visible
                for t in range(n):
                    self.ehid[e0 + t] = 0
        return self.eoff[B]

    cdef int _sort_columns(self, Py_ssize_t ne) noexcept nogil:
        """Stable sort of the entries by column: a bitmap of the batch's columns gives the distinct
        columns in increasing order (rows of the weight matrices are then visited in address
        order), a counting sort over them the permutation.  O(ne + n_inputs / 64)."""
        cdef Py_ssize_t e
        cdef int nd = 0, s, c, wi
        cdef int nwords = (self.n_inputs + 63) >> 6
        cdef uint64_t word
        cdef uint64_t* bm = self.bitmap
        cdef int32_t* cnt = self.ccount
        cdef int32_t* slot = self.slot
        for e in range(ne):
            c = self.ecol[e]
            bm[c >> 6] |= (<uint64_t>1) << (c & 63)
            cnt[c] += 1
        self.seg[0] = 0
        for wi in range(nwords):
            word = bm[wi]
            if word == 0:
                continue
            bm[wi] = 0
            while word != 0:
                c = (wi << 6) + cfn_ctz64(word)
                word = word & (word - 1)
                self.dcol[nd] = c
                slot[c] = nd
                self.seg[nd + 1] = self.seg[nd] + cnt[c]
                cnt[c] = 0
                nd += 1
        # seg[s] serves as the fill pointer of segment s, then is restored
        for e in range(ne):
            s = slot[self.ecol[e]]
            self.perm[self.seg[s]] = <int32_t>e
            self.seg[s] += 1
        for s in range(nd - 1, 0, -1):
            self.seg[s] = self.seg[s - 1]
        if nd > 0:
            self.seg[0] = 0
        return nd

    cdef int _partition(self, Py_ssize_t ne, int nd, int B) noexcept nogil:
        """Groups of consecutive segments with ~equal entry counts (independent of the thread count)."""
        cdef int G, g, s = 0
        cdef Py_ssize_t target
        cdef int HL = self.w[self.n_layers - 1]
        if self.w[1] > HL:
            HL = self.w[1]      # the partials serve the input layer (H0) and the output layer (HL)
        cdef Py_ssize_t cap = self.dhp_cap // _group_stride(B, HL)
        if cap > MAX_GROUPS:
            cap = MAX_GROUPS
        if cap < 1:
            cap = 1
        G = <int>(ne // ENTRIES_PER_GROUP)
        if G > cap:
            G = cap
        if G < 1:
            G = 1
        self.gstart[0] = 0
        for g in range(1, G):
            target = (ne * g) // G
            while s < nd and self.seg[s] < target:
                s += 1
            self.gstart[g] = s
        self.gstart[G] = nd
        return G

    cdef void _encode_columns(self, int B, int G, float sc) noexcept nogil:
        """Input layer, column by column: each distinct input row of V_in is read once per batch
        and added into the group's partial z of the rows that see it; then z = sum of the
        partials in group order, scaled, plus bias and side terms, tanh.

        The previous batch's deferred input-layer update (sorted by column, like this batch's
        segments) is merged in: each group applies the pending rows of its column range, to the
        rows it loads anyway or on their own, so every pending row is applied exactly once."""
        cdef int H0 = self.w[1]
        cdef int sd = self.side_dim
        cdef int g, i, k, d, p
        cdef int32_t c
        cdef float* zp
        cdef float* z
        # pstart[g]: first pending column of group g's range [dcol[gstart[g]], dcol[gstart[g + 1]])
        self.pstart[0] = 0
        p = 0
        for g in range(1, G):
            c = self.dcol[self.gstart[g]] if self.gstart[g] < self.gstart[G] else 0x7fffffff
            while p < self.pend_nd and self.pend_dcol[p] < c:
                p += 1
            self.pstart[g] = p
        self.pstart[G] = self.pend_nd
        with parallel(num_threads=self.nthreads):
            for g in prange(G, schedule='dynamic', chunksize=1):
                zp = self.dhp + g * _group_stride(B, H0)
                memset(zp, 0, <Py_ssize_t>B * H0 * sizeof(float))
                self._encode_group(g, zp)
            # z = sum of the group partials (in group order), scaled, + bias + side terms, tanh
            for i in prange(B, schedule='static'):
                z = self.act[1] + <Py_ssize_t>i * H0
                memcpy(z, self.dhp + <Py_ssize_t>i * H0, H0 * sizeof(float))
                for g in range(1, G):
                    zp = self.dhp + g * _group_stride(B, H0) + <Py_ssize_t>i * H0
                    for k in range(H0):
                        z[k] += zp[k]
                for k in range(H0):
                    z[k] = z[k] * sc + self.p_bin[k]
                for d in range(sd):
                    cfn_axpy(self.sideb[<Py_ssize_t>i * sd + d], self.p_sin + <Py_ssize_t>d * H0, z, H0)
                cfn_tanh(z, H0)
        self.pend_nd = 0

    cdef void _encode_group(self, int g, float* zp) noexcept nogil:
        """Group g's input rows: the merge, in column order, of this batch's columns gstart[g] .. and the
        pending columns pstart[g] .. of the same range; each with its deferred contributions and its visible
        entries, then the rows in that order (cfn_enc_rows)."""
        cdef int H0 = self.w[1]
        cdef int s = self.gstart[g], send = self.gstart[g + 1]
        cdef int p = self.pstart[g], pend = self.pstart[g + 1]
        cdef int base = self.gstart[g] + self.pstart[g]      # group g's merged rows: disjoint across groups
        cdef int32_t* mcol = self.mcol + base
        cdef uint32_t* mseed = self.mseed + base
        cdef int32_t* poff = self.mpoff + base + g
        cdef int32_t* voff = self.mvoff + base + g
        cdef int k = 0, q, vq, pq
        cdef int32_t c, e
        cdef bint take_batch, take_pending
        vq = self.seg[s] if s < send else 0
        pq = self.pend_seg[p]
        for q in range(self.pend_seg[p], self.pend_seg[pend]):
            self.pdz[q] = self.pend_dz + <Py_ssize_t>self.pend_row[q] * H0
        while s < send or p < pend:
            take_batch = s < send and (p >= pend or self.dcol[s] <= self.pend_dcol[p])
            c = self.dcol[s] if take_batch else self.pend_dcol[p]
            take_pending = p < pend and self.pend_dcol[p] == c
            mcol[k] = c
            if self.bf16:
                mseed[k] = cfn_row_seed(self.pend_seed, c)
            poff[k] = pq
            voff[k] = vq
            if take_pending:
                pq = self.pend_seg[p + 1]
                p += 1
            if take_batch:
                for q in range(self.seg[s], self.seg[s + 1]):
                    e = self.perm[q]
                    if self.ehid[e] == 0:
                        self.vzp[vq] = zp + <Py_ssize_t>self.erow[e] * H0
                        self.vx[vq] = self.evl[e]
                        vq += 1
                s += 1
            k += 1
        poff[k] = pq
        voff[k] = vq
        cfn_enc_rows(self.p_win, self.q_win, H0, k, mcol, mseed, poff, <const float**>self.pdz, self.pend_coef, voff,
                     self.vzp, self.vx)

    cdef double _output_pass(self, int B, int G, float sc, float upd, float* dh) noexcept nogil:
        """Fused decoder + loss + delta + dh partials + output-layer update, group by group (parallel over
        groups); then dh = sum of the partials in group order, times (1 - h^2)."""
        cdef int nl = self.n_layers
        cdef int HL = self.w[nl - 1]
        cdef int g, i, j
        cdef float* v
        cdef float* dhp_g
        cdef double lossg
        with parallel(num_threads=self.nthreads):
            for g in prange(G, schedule='dynamic', chunksize=1):
                dhp_g = self.dhp + g * _group_stride(B, HL)
                memset(dhp_g, 0, <Py_ssize_t>B * HL * sizeof(float))
                self.lossp[g] = self._output_group(g, sc, upd, dhp_g)
            for i in prange(B, schedule='static'):
                dhp_g = dh + <Py_ssize_t>i * HL
                memcpy(dhp_g, self.dhp + <Py_ssize_t>i * HL, HL * sizeof(float))
                for g in range(1, G):
                    v = self.dhp + g * _group_stride(B, HL) + <Py_ssize_t>i * HL
                    for j in range(HL):
                        dhp_g[j] += v[j]
                self._hidden_backward(dhp_g, nl - 1, <Py_ssize_t>i * HL, HL)
        lossg = 0.0
        for g in range(G):
            lossg = lossg + self.lossp[g]
        return lossg

    cdef double _output_group(self, int g, float sc, float upd, float* dhp_g) noexcept nogil:
        """Group g's output rows (the batch columns gstart[g] .. gstart[g + 1] - 1), column by column
        (:meth:`_output_column`), with dh partials in ``dhp_g``.  Returns the loss."""
        cdef int nl = self.n_layers
        cdef int HL = self.w[nl - 1]
        cdef const float* h = self.act[nl - 1]
        cdef int s0 = self.gstart[g], s1 = self.gstart[g + 1]
        cdef int q, i, b
        cdef double loss = 0.0
        cdef bint train = self.g_wout == NULL
        cdef float f = upd if train else 1.0
        cdef int q0 = self.seg[s0], q1 = self.seg[s1]
        cdef const float** hp = <const float**>self.ehp
        cdef float** dp = self.edp
        if s1 <= s0:
            return 0.0
        for q in range(q0, q1):
            i = self.erow[self.perm[q]]
            hp[q] = h + <Py_ssize_t>i * HL
            dp[q] = dhp_g + <Py_ssize_t>i * HL
        for b in range(s0, s1):     # column by column: the row stays in L1 from its dots to its update
            if b + 1 < s1:
                self._prefetch_out_row(self.dcol[b + 1])
            loss = loss + self._output_column(b, sc, f, hp, dp)
        return loss

    cdef inline void _prefetch_out_row(self, int32_t c) noexcept nogil:
        cdef int HL = self.w[self.n_layers - 1]
        if self.bf16:
            cfn_prefetch(self.q_wout + <Py_ssize_t>c * HL, HL * sizeof(uint16_t))
        else:
            cfn_prefetch(self.p_wout + <Py_ssize_t>c * HL, HL * sizeof(float))

    cdef double _output_column(self, int s, float sc, float f, const float** hp, float** dp) noexcept nogil:
        """Batch column s: the outputs at its entries (dots with its row), the loss, the deltas, the bias and
        side row, then the dh partials and the row update (or the gradient rows).  Returns the loss."""
        cdef int HL = self.w[self.n_layers - 1]
        cdef int sd = self.side_dim
        cdef float alpha = self.alpha, beta = self.beta
        cdef int c = self.dcol[s]
        cdef int qa = self.seg[s]
        cdef int m = self.seg[s + 1] - qa
        cdef int q
        cdef int32_t e
        cdef float z, y, x, wt, r, dq, gb, bias
        cdef double loss = 0.0
        cdef bint train = self.g_wout == NULL
        cdef bint bf16 = self.bf16
        cdef float* vf = NULL if bf16 else self.p_wout + <Py_ssize_t>c * HL
        cdef uint16_t* vb = self.q_wout + <Py_ssize_t>c * HL if bf16 else NULL
        cfn_outdots(vf, vb, HL, m, hp + qa, self.eval_ + qa)
        bias = cfn_bf16_load1(self.q_bout + c) if bf16 else self.p_bout[c]
        for q in range(qa, qa + m):
            z = self.eval_[q] + bias
            if sd > 0:
                z = z + self._side_dot(self.sideb + <Py_ssize_t>self.erow[self.perm[q]] * sd, c)
            self.eval_[q] = sc * z
        cfn_tanh(self.eval_ + qa, m)
        gb = 0
        for q in range(qa, qa + m):
            e = self.perm[q]
            y = self.eval_[q]
            x = self.evl[e]
            wt = alpha if self.ehid[e] else beta
            r = y - x
            loss = loss + <double>wt * (<double>r * <double>r)
            dq = 2.0 * wt * r * (1.0 - y * y)
            self.eca[q] = dq * sc          # dh[i] += delta * W[c] = (delta sc) V[c]   (old weights)
            self.ecc[q] = f * dq           # V[c] += f delta h[i]   (or grad row += delta h[i])
            gb = gb + dq
        if not train:
            self.g_bout[c] = gb
        elif bf16:
            self.q_bout[c] = cfn_bf16_sr1(bias + f * gb, cfn_row_seed(self.seed_bout, c), 0)
        else:
            self.p_bout[c] = self.p_bout[c] + f * gb
        if sd > 0:
            self._side_row_update(c, m, qa, self.ecc + qa, train)
        if not train:
            cfn_segbwd(vf, self.g_wout + <Py_ssize_t>c * HL, HL, m, hp + qa, dp + qa, self.eca + qa, self.ecc + qa)
        else:
            # dh partials with the old row, then the row updated (and, bfloat16, rounded and stored)
            cfn_outupd(vf, vb, cfn_row_seed(self.seed_wout, c) if bf16 else 0, HL, m, hp + qa, dp + qa,
                       self.eca + qa, self.ecc + qa)
        return loss

    cdef inline float _side_dot(self, const float* side_row, int32_t c) noexcept nogil:
        """side_row . S_out[c] (before the scale)."""
        cdef int sd = self.side_dim
        cdef int d
        cdef float acc = 0
        if not self.bf16:
            return cfn_dot(side_row, self.p_sout + <Py_ssize_t>c * sd, sd)
        for d in range(sd):
            acc = acc + side_row[d] * cfn_bf16_load1(self.q_sout + <Py_ssize_t>c * sd + d)
        return acc

    cdef inline void _side_row_update(self, int32_t c, int m, int q0, const float* cc, bint train) noexcept nogil:
        """S_out[c] (or its gradient row) += sum over the column's m entries cc[j] side[row_j], in entry order."""
        cdef int sd = self.side_dim
        cdef int d, j
        cdef float acc
        cdef float* vs
        cdef uint32_t rs
        if self.bf16:
            rs = cfn_row_seed(self.seed_sout, c)
            for d in range(sd):
                acc = cfn_bf16_load1(self.q_sout + <Py_ssize_t>c * sd + d)
                for j in range(m):
                    acc = acc + cc[j] * self.sideb[<Py_ssize_t>self.erow[self.perm[q0 + j]] * sd + d]
                self.q_sout[<Py_ssize_t>c * sd + d] = cfn_bf16_sr1(acc, rs, <uint32_t>d)
            return
        vs = (self.p_sout if train else self.g_sout) + <Py_ssize_t>c * sd
        for j in range(m):
            acc = cc[j]
            for d in range(sd):
                vs[d] = vs[d] + acc * self.sideb[<Py_ssize_t>self.erow[self.perm[q0 + j]] * sd + d]

    cdef void _flush_pending(self) noexcept nogil:
        """Apply every deferred input-layer update now."""
        cdef int H0 = self.w[1]
        cdef int p, q
        if self.pend_nd == 0:
            return
        for q in range(self.pend_seg[0], self.pend_seg[self.pend_nd]):
            self.pdz[q] = self.pend_dz + <Py_ssize_t>self.pend_row[q] * H0
        with nogil, parallel(num_threads=self.nthreads):
            for p in prange(self.pend_nd, schedule='dynamic', chunksize=16):
                self._flush_row(p)
        self.pend_nd = 0

    cdef inline void _flush_row(self, int p) noexcept nogil:
        """Pending row p: its deferred contributions, in entry order (bfloat16: then rounded and stored)."""
        cdef uint32_t rs = cfn_row_seed(self.pend_seed, self.pend_dcol[p])
        cdef int32_t poff[2]
        cdef int32_t voff[2]
        poff[0] = self.pend_seg[p]
        poff[1] = self.pend_seg[p + 1]
        voff[0] = voff[1] = 0
        cfn_enc_rows(self.p_win, self.q_win, self.w[1], 1, self.pend_dcol + p, &rs, poff, <const float**>self.pdz,
                     self.pend_coef, voff, self.vzp, self.vx)

    cdef void _defer_input_pass(self, int B, int nd, const float* dz, float upd) noexcept nogil:
        """Record the input-layer update instead of applying it: the next batch's encoder applies it
        to the rows it loads anyway, the rest are flushed after it (same arithmetic, same order)."""
        cdef int H0 = self.w[1]
        cdef int s, q, np_ = 0, nq = 0
        cdef int32_t e
        memcpy(self.pend_dz, dz, <Py_ssize_t>B * H0 * sizeof(float))
        self.pend_seed = self.seed_win      # bfloat16: the rounding bits are this batch's
        self.pend_seg[0] = 0
        for s in range(nd):
            for q in range(self.seg[s], self.seg[s + 1]):
                e = self.perm[q]
                if self.ehid[e] == 0:
                    self.pend_row[nq] = self.erow[e]
                    self.pend_coef[nq] = upd * self.evl[e]
                    nq += 1
            if nq > self.pend_seg[np_]:
                self.pend_dcol[np_] = self.dcol[s]       # increasing: dcol is sorted
                np_ += 1
                self.pend_seg[np_] = nq
        self.pend_nd = np_

    cdef void _input_pass(self, int B, int nd, const float* dz, float upd) noexcept nogil:
        """Input weight rows of the distinct columns: row += f sum over visible entries x_k dz[row_k]
        (each row loaded and stored once)."""
        cdef int H0 = self.w[1]
        cdef int s, q, m
        cdef int32_t e
        cdef float* row
        cdef float f
        cdef bint train = self.g_win == NULL
        cdef const float** xp = NULL
        cdef float* cf = NULL
        with parallel(num_threads=self.nthreads):
            xp = <const float**>malloc((B + 1) * sizeof(float*))
            cf = <float*>malloc((B + 1) * sizeof(float))
            for s in prange(nd, schedule='dynamic', chunksize=16):
                if train:
                    row = self.p_win + <Py_ssize_t>self.dcol[s] * H0
                    f = upd
                else:
                    row = self.g_win + <Py_ssize_t>self.dcol[s] * H0
                    f = 1.0
                if s + 1 < nd:
                    cfn_prefetch((self.p_win if train else self.g_win) + <Py_ssize_t>self.dcol[s + 1] * H0,
                                 H0 * sizeof(float))
                m = 0
                for q in range(self.seg[s], self.seg[s + 1]):
                    e = self.perm[q]
                    if self.ehid[e] == 0:
                        xp[m] = dz + <Py_ssize_t>self.erow[e] * H0
                        cf[m] = f * self.evl[e]
                        m = m + 1
                if m > 0:
                    cfn_maxpy(row, H0, m, xp, cf)
            free(xp)
            free(cf)

    cdef void _drop(self, int l, int B, uint64_t dkey) noexcept nogil:
        """Dropout of hidden layer l (cfn_fast.corruption.dropout_multipliers): the multipliers into keep[l],
        the tanh outputs into hraw[l], and act[l] *= keep[l] (what layer l + 1 and the gradients take)."""
        cdef int H = self.w[l]
        cdef int i, k, j
        cdef uint64_t total = 0, offset = 0, base
        cdef uint64_t thr = self.drop_threshold
        cdef float scale = self.drop_scale
        cdef float* h
        cdef float* raw
        cdef float* kp
        for j in range(1, self.n_layers):
            total += <uint64_t>self.w[j]
            if j < l:
                offset += <uint64_t>self.w[j]
        for i in prange(B, schedule='static', num_threads=self.nthreads):
            base = dkey + <uint64_t>self.brow[i] * total + offset
            h = self.act[l] + <Py_ssize_t>i * H
            raw = self.hraw[l] + <Py_ssize_t>i * H
            kp = self.keep[l] + <Py_ssize_t>i * H
            for k in range(H):
                kp[k] = 0.0 if (cfn_splitmix64(base + <uint64_t>k) >> 40) < thr else scale
                raw[k] = h[k]
                h[k] = h[k] * kp[k]

    cdef inline void _hidden_backward(self, float* dh, int l, Py_ssize_t at, Py_ssize_t n) noexcept nogil:
        """dh *= D (dropout's multipliers), then (1 - h^2) with h the tanh outputs: n values of hidden layer l
        from flat index ``at``."""
        cdef Py_ssize_t k
        cdef const float* kp
        if not self.dropping:
            tanh_backward(dh, self.act[l] + at, n)
            return
        kp = self.keep[l] + at
        for k in range(n):
            dh[k] = dh[k] * kp[k]
        tanh_backward(dh, self.hraw[l] + at, n)

    cdef double _step(self, const int64_t* rows, int B, uint64_t key, double lr, double weight_decay,
                      bint train, bint defer) noexcept nogil:
        cdef int nl = self.n_layers
        cdef int sd = self.side_dim
        cdef int l, nd, G
        cdef Py_ssize_t ne
        cdef double loss
        cdef float shrink = <float>(1.0 - lr * weight_decay)   # the reference's float32 factors
        cdef float step = <float>(lr / B)
        cdef double scale_new = self.scale * <double>shrink
        cdef float sc = <float>self.scale
        cdef float upd = <float>(-<double>step / scale_new)
        cdef float* delta
        cdef float* other
        cdef float* tmp
        cdef int nt = self.nthreads
        cdef uint64_t round_base
        if self.bf16:
            # the rounding seeds of this batch's updates (cfn_fast.backends.bfloat16.array_seed)
            round_base = key + self.round_salt + 4 * <uint64_t>rows[0]
            self.seed_win = <uint32_t>cfn_splitmix64(round_base + 0)
            self.seed_wout = <uint32_t>cfn_splitmix64(round_base + 1)
            self.seed_bout = <uint32_t>cfn_splitmix64(round_base + 2)
            self.seed_sout = <uint32_t>cfn_splitmix64(round_base + 3)
            if train:
                defer = 1     # bfloat16 input rows are updated by the row kernel only (deferred, then flushed)
        self._batch_mark(1)
        self._tick(PH_GATHER)
        ne = self._gather(rows, B, key)
        self._tick(PH_SORT)
        nd = self._sort_columns(ne)
        G = self._partition(ne, nd, B)
        self.last_nd = nd
        self.last_G = G
        # forward
        self._tick(PH_ENCODE)
        self._encode_columns(B, G, sc)
        if self.dropping:
            self._drop(1, B, key + self.drop_salt)
        if nl > 2:
            self._tick(PH_DENSE_FWD)
        for l in range(1, nl - 1):
            dense_forward(self.p_dw[l], self.p_db[l], self.p_ds[l], self.act[l], self.sideb, self.act[l + 1],
                          B, self.w[l], self.w[l + 1], sd, nt)
            if self.dropping:
                self._drop(l + 1, B, key + self.drop_salt)
        # output layer (fused forward, loss, backward and update), then dh
        delta = self.dA
        other = self.dB
        self._tick(PH_OUTPUT)
        loss = self._output_pass(B, G, sc, upd, delta)
        # dense layers, top down: dh_prev with the old weights, then update
        if nl > 2:
            self._tick(PH_DENSE_BWD)
        for l in range(nl - 2, 0, -1):
            dense_backward_input(self.p_dw[l], delta, other, B, self.w[l], self.w[l + 1], nt)
            dense_update(self.p_dw[l], self.p_db[l], self.p_ds[l], delta, self.act[l], self.sideb, B,
                         self.w[l], self.w[l + 1], sd, shrink, step, self.g_dw[l], self.g_db[l], self.g_ds[l], nt)
            self._hidden_backward(other, l, 0, <Py_ssize_t>B * self.w[l])
            tmp = delta
            delta = other
            other = tmp
        # input layer: dense bias and side weight, sparse rows of the visible columns
        self._tick(PH_INPUT)
        dense_vector_update(self.p_bin, delta, B, self.w[1], shrink, step, self.g_bin, nt)
        if sd > 0:
            side_input_update(self.p_sin, delta, self.sideb, B, self.w[1], sd, shrink, step, self.g_sin, nt)
        if train and defer:
            self._defer_input_pass(B, nd, delta, upd)
        else:
            self._input_pass(B, nd, delta, upd)
        if train:
            self.scale = scale_new
            if self.scale < FOLD_BELOW:
                self._tick(PH_FOLD)
                self._flush_pending()
                self._fold(self.scale)
                self.scale = 1.0
        self._tick(-1)
        self._batch_mark(0)
        return loss

    # ----------------------------------------------------------------- inference
    def encode(self, indptr, indices, data, side, int chunk=256):
        """Last hidden layer of every CSR row (full, uncorrupted input)."""
        cdef int nl = self.n_layers
        cdef int sd = self.side_dim
        cdef int HL = self.w[nl - 1]
        cdef int l, B
        cdef Py_ssize_t r0, n
        indptr_a = np.ascontiguousarray(indptr, dtype=np.int64)
        indices_a = np.ascontiguousarray(indices, dtype=np.int32)
        data_a = np.ascontiguousarray(data, dtype=np.float32)
        side_a = np.ascontiguousarray(side, dtype=np.float32) if sd > 0 else None
        n = len(indptr_a) - 1
        codes = np.empty((n, HL), np.float32)
        if n == 0:
            return codes
        chunk = max(1, chunk)
        bufs = [None] + [np.empty((min(chunk, n), self.widths[l]), np.float32) for l in range(1, nl)]
        cdef float** a = <float**>malloc(nl * sizeof(float*))
        cdef const int64_t* ip = lptr(indptr_a)
        cdef const int32_t* ix = iptr(indices_a) if len(indices_a) else NULL
        cdef const float* dv = fptr(data_a) if len(data_a) else NULL
        cdef const float* sv = fptr(side_a) if sd > 0 else NULL
        cdef float* out = fptr(codes)
        cdef float sc = <float>self.scale
        try:
            for l in range(1, nl):
                a[l] = fptr(bufs[l])
            if nl == 2:
                a[1] = NULL
            with nogil:
                r0 = 0
                while r0 < n:
                    B = <int>(chunk if r0 + chunk <= n else n - r0)
                    if nl == 2:
                        a[1] = out + r0 * HL
                    sparse_encode(self.p_win, sc, self.p_bin, self.p_sin, ip + r0, ix, dv, NULL,
                                  sv + r0 * sd if sd > 0 else NULL, a[1], B, self.w[1], sd, self.nthreads)
                    for l in range(1, nl - 1):
                        dense_forward(self.p_dw[l], self.p_db[l], self.p_ds[l], a[l],
                                      sv + r0 * sd if sd > 0 else NULL, a[l + 1], B, self.w[l], self.w[l + 1],
                                      sd, self.nthreads)
                    if nl > 2:
                        memcpy(out + r0 * HL, a[nl - 1], <Py_ssize_t>B * HL * sizeof(float))
                    r0 += B
        finally:
            free(a)
        return codes

    def predict(self, const float[:, ::1] codes, const int64_t[::1] local, const int64_t[::1] rows,
                const int64_t[::1] cols, side):
        """tanh(W_out[cols[k]] . codes[local[k]] + b_out[cols[k]] + S_out[cols[k]] . side[rows[k]])."""
        cdef Py_ssize_t K = cols.shape[0], k
        cdef int nl = self.n_layers
        cdef int HL = self.w[nl - 1]
        cdef int sd = self.side_dim
        cdef float sc = <float>self.scale
        cdef float z
        out = np.empty(K, np.float32)
        if K == 0:
            return out
        side_a = np.ascontiguousarray(side, dtype=np.float32) if sd > 0 else None
        cdef const float* sv = fptr(side_a) if sd > 0 else NULL
        cdef float* o = fptr(out)
        cdef const float* cp = &codes[0, 0]
        with nogil:
            for k in prange(K, schedule='static', num_threads=self.nthreads):
                z = cfn_dot(cp + local[k] * HL, self.p_wout + cols[k] * HL, HL) + self.p_bout[cols[k]]
                if sd > 0:
                    z = z + cfn_dot(sv + rows[k] * sd, self.p_sout + cols[k] * sd, sd)
                o[k] = sc * z
            cfn_tanh(o, K)
        return out

    def decode(self, codes, side, cols):
        """The output layer on codes: ``tanh(sc (V_out[c] . codes[i] + b_out[c] + S_out[c] . side[i]))`` for every
        row ``i`` and output ``c`` (every output, or those of ``cols``), each value computed alone (decode_pairs).
        ``side`` None leaves the side terms out."""
        cdef int nl = self.n_layers
        cdef int HL = self.w[nl - 1]
        cdef int sd = self.side_dim
        codes_a = np.ascontiguousarray(codes, dtype=np.float32)
        if codes_a.ndim != 2 or codes_a.shape[1] != HL:
            raise ValueError(f"codes must have shape (n, {HL}), got {codes_a.shape}")
        cols_a = np.arange(self.w[nl], dtype=np.int64) if cols is None else \
            np.ascontiguousarray(cols, dtype=np.int64).reshape(-1)
        if len(cols_a) and (cols_a.min() < 0 or cols_a.max() >= self.w[nl]):
            raise IndexError(f"cols must lie in [0, {self.w[nl]})")
        cdef Py_ssize_t m = codes_a.shape[0], nc = cols_a.shape[0]
        out = np.empty((m, nc), np.float32)
        if m == 0 or nc == 0:
            return out
        side_a = None
        if sd > 0 and side is not None:
            side_a = np.ascontiguousarray(side, dtype=np.float32)
            if side_a.shape != (m, sd):
                raise ValueError(f"side must have shape ({m}, {sd}), got {side_a.shape}")
        cdef const float* xv = fptr(codes_a)
        cdef const int64_t* cv = lptr(cols_a)
        cdef const float* sv = fptr(side_a) if side_a is not None else NULL
        cdef float* o = fptr(out)
        cdef float sc = <float>self.scale
        with nogil:
            decode_pairs(xv, m, self.p_wout, cv, nc, HL, self.p_bout, sv, self.p_sout, sd, sc, o, self.nthreads)
        return out


cdef void scale_inplace(float* p, Py_ssize_t n, double s, int nt) noexcept nogil:
    cdef Py_ssize_t k
    if p == NULL:
        return
    for k in prange(n, schedule='static', num_threads=nt):
        p[k] = <float>(<double>p[k] * s)


ctypedef fused float_bits_t:
    uint16_t
    uint32_t


cdef object _largest_unsigned(const float_bits_t[::1] flat, float_bits_t sign_off, int nthreads):
    """The largest ``flat[i] & sign_off`` (the bits without the sign) as a Python int, 0 for none: chunks of 65,536
    in parallel, each chunk's largest kept, then the largest of those (the same whatever the threads)."""
    cdef Py_ssize_t n = flat.shape[0], nc, c, i, i0, i1
    cdef int CH = 1 << 16
    cdef float_bits_t m, b
    if n == 0:
        return 0
    nc = (n + CH - 1) // CH
    part = np.zeros(nc, np.uint32)
    cdef uint32_t[::1] pm = part
    with nogil:
        for c in prange(nc, schedule='static', num_threads=nthreads if nthreads > 0 else cfn_max_threads()):
            i0 = c * CH
            i1 = i0 + CH if i0 + CH < n else n
            m = 0
            for i in range(i0, i1):
                b = flat[i] & sign_off
                m = b if b > m else m
            pm[c] = m
    return int(part.max())


def max_abs_array(a, int nthreads=0):
    """max |a| of a float32 array (NaN if it holds a NaN); parallel, fixed-order result.  Compares the bits
    without the sign as unsigned integers (the order of |x| for finite values and infinity; every NaN is
    above), which vectorises whatever the compiler assumes about NaN."""
    cdef const uint32_t[::1] flat = np.ascontiguousarray(a).reshape(-1).view(np.uint32)
    top = _largest_unsigned(flat, <uint32_t>0x7FFFFFFF, nthreads)
    return float("nan") if top > 0x7F800000 else float(np.array([top], np.uint32).view(np.float32)[0])


def max_abs_bf16(a, int nthreads=0):
    """max |a| of bfloat16 bits (NaN if one is a NaN): the largest bits without the sign, as
    :func:`max_abs_array` compares them; parallel, no temporary array."""
    cdef const uint16_t[::1] flat = np.ascontiguousarray(a, np.uint16).reshape(-1)
    top = _largest_unsigned(flat, <uint16_t>0x7FFF, nthreads)
    return float("nan") if top > 0x7F80 else float(widen_bf16(np.array([top], np.uint16))[0])


def parallel_copy(dst, src, int nthreads=0):
    """dst[...] = src for two C-contiguous arrays of the same size and item size, in parallel chunks."""
    cdef uint8_t[::1] d = dst.reshape(-1).view(np.uint8)
    cdef const uint8_t[::1] s = src.reshape(-1).view(np.uint8)
    cdef Py_ssize_t n = d.shape[0], nc, c, i0, i1
    cdef Py_ssize_t CH = 1 << 20
    if n != s.shape[0]:
        raise ValueError("parallel_copy: sizes differ")
    if n == 0:
        return
    nc = (n + CH - 1) // CH
    with nogil:
        for c in prange(nc, schedule='static', num_threads=nthreads if nthreads > 0 else cfn_max_threads()):
            i0 = c * CH
            i1 = i0 + CH if i0 + CH < n else n
            memcpy(&d[i0], &s[i0], i1 - i0)


def widen_bf16(a):
    """float32 values of bfloat16 bits (exact)."""
    return (np.asarray(a, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_nearest_bf16(values):
    """bfloat16 bits of float32 values, rounded to nearest even (the kernels' rule for loads)."""
    src = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(src.shape, np.uint16)
    if src.size:
        cfn_bf16_round_nearest(fptr(src), hptr(out), src.size)
    return out


def round_stochastic_bf16(values, uint32_t seed):
    """bfloat16 bits of a (rows, cols) float32 array rounded stochastically with the kernels' per-element bits
    (row r's seed is derived from ``seed`` and r, element k's bits from the row seed and k)."""
    src = np.ascontiguousarray(values, dtype=np.float32)
    mat = src.reshape(src.shape[0], -1) if src.ndim else src.reshape(1, 1)
    out = np.empty(mat.shape, np.uint16)
    cdef const float[:, ::1] x = mat
    cdef uint16_t[:, ::1] o = out
    cdef Py_ssize_t r, k
    cdef uint32_t rs
    for r in range(x.shape[0]):
        rs = cfn_row_seed(seed, r)
        for k in range(x.shape[1]):
            o[r, k] = cfn_bf16_sr1(x[r, k], rs, <uint32_t>k)
    return out.reshape(src.shape)


cdef void scale_bf16_inplace(uint16_t* p, Py_ssize_t n, double s, int nt) noexcept nogil:
    """Fold a scale into bfloat16 bits: each value times s, rounded to nearest even."""
    cdef Py_ssize_t k
    if p == NULL:
        return
    for k in prange(n, schedule='static', num_threads=nt):
        p[k] = cfn_bf16_rn1(<float>(<double>cfn_bf16_load1(&p[k]) * s))


def scaled_transpose(a, double s):
    """float32 ``(s * a).T`` of a C-contiguous (n, m) float32 array, in tiles (no temporary)."""
    cdef Py_ssize_t n = a.shape[0], m = a.shape[1]
    out = np.empty((m, n), np.float32)
    if n == 0 or m == 0:
        return out
    cdef const float[:, ::1] src = a
    cdef float[:, ::1] dst = out
    cdef Py_ssize_t bi, i, j, i0, j0, i1, j1, nb = (n + 63) // 64
    with nogil:
        for bi in prange(nb, schedule='static'):
            i0 = bi * 64
            i1 = i0 + 64 if i0 + 64 < n else n
            j0 = 0
            while j0 < m:
                j1 = j0 + 64 if j0 + 64 < m else m
                for j in range(j0, j1):
                    for i in range(i0, i1):
                        dst[j, i] = <float>(<double>src[i, j] * s)
                j0 = j0 + 64
    return out


def scaled_values_into(dst, values, double s, int nthreads=0):
    """``dst[...] = float32(float64(v) * s)`` for the values ``v`` of ``values``: float32, or bfloat16 bits (uint16)
    widened (exact); C-contiguous arrays of one size.  The rounding of :func:`scaled_copy` and
    :func:`scaled_transpose`."""
    if dst.dtype != np.float32 or dst.size != values.size or not dst.flags.c_contiguous \
            or not values.flags.c_contiguous or values.dtype not in (np.float32, np.uint16):
        raise ValueError("scaled_values_into: a float32 destination and float32 or bfloat16 values of its size")
    if dst.size == 0:
        return
    cdef float[::1] out = dst.reshape(-1)
    cdef const float[::1] src
    cdef const uint16_t[::1] bits
    cdef Py_ssize_t k, n = out.shape[0]
    cdef int threads = nthreads if nthreads > 0 else cfn_max_threads()
    if values.dtype == np.uint16:
        bits = values.reshape(-1)
        with nogil:
            for k in prange(n, schedule='static', num_threads=threads):
                out[k] = <float>(<double>cfn_bf16_load1(&bits[k]) * s)
    else:
        src = values.reshape(-1)
        with nogil:
            for k in prange(n, schedule='static', num_threads=threads):
                out[k] = <float>(<double>src[k] * s)


def scaled_copy(a, double s):
    """float32 copy of ``a`` times ``s`` (rounded once, from float64)."""
    out = np.empty_like(a)
    if a.size == 0:
        return out
    cdef float[::1] src = a.reshape(-1)
    cdef float[::1] dst = out.reshape(-1)
    cdef Py_ssize_t k, n = src.shape[0]
    with nogil:
        for k in prange(n, schedule='static'):
            dst[k] = <float>(<double>src[k] * s)
    return out
