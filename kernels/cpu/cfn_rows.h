/* Row kernels of the CPU training step (included by cfn_cpu.pyx after its SIMD vocabulary).

   Each call handles ONE weight row of a column segment, with the SIMD primitives of cfn_cpu.pyx (maxpy,
   saxpy, dots, segbwd: one pass over the row per entry, the row staying in L1 in between).  A row is
   float32 (rb == NULL) or bfloat16 bits (rb != NULL; cfn_fast/backends/bfloat16.py is the specification):
   a bfloat16 row is swept once per call, each vector widened exactly, the same float32 operations done in
   registers, and an updated vector stored back with stochastic rounding keyed by the row's seed rs and each
   value's index; the kernels go on with the rounded values.

   encol(row; pending dz[p], cp[p]; visible z[j], x[j])
       row += sum_p cp[p] dz[p]            (the previous batch's deferred input update, when np > 0)
       z[j] += x[j] row                    (this batch's encoder, with the updated row)
   outdots(row; h[j]) -> out[j] = row . h[j]
   outupd(row; h[j], dh[j], a[j], c[j])
       dh[j] += a[j] row                   (old values)
       row += sum_j c[j] h[j]

   Every sum runs in a fixed order: results do not depend on the thread count.  A float32 row takes exactly
   the operations it took before bfloat16 existed. */

static inline uint32_t cfn_fmix32(uint32_t h) {
    h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    return h;
}
/* the seed of row r of an array whose seed (for this mini-batch) is seed */
static inline uint32_t cfn_row_seed(uint32_t seed, int64_t r) {
    return cfn_fmix32(seed ^ ((uint32_t)r * 0x9E3779B1u));
}
static inline float cfn_bf16_load1(const uint16_t *p) {
    uint32_t b = (uint32_t)(*p) << 16; float f; memcpy(&f, &b, 4); return f;
}
/* element k of a row with seed rs, rounded stochastically */
static inline uint16_t cfn_bf16_sr1(float x, uint32_t rs, uint32_t k) {
    uint32_t b; memcpy(&b, &x, 4);
    return (uint16_t)((b + (cfn_fmix32(rs + k) >> 16)) >> 16);
}
static inline uint16_t cfn_bf16_rn1(float x) {
    uint32_t b; memcpy(&b, &x, 4);
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

/* the vector bf16 codecs: widen W values; round W values (elements k0 .. k0 + W - 1 of the row) and
   store them, returning the rounded values */
static inline float cfn_ldb_generic(const uint16_t *p) { return cfn_bf16_load1(p); }
static inline float cfn_stb_generic(uint16_t *p, float v, uint32_t rs, uint32_t k0) {
    *p = cfn_bf16_sr1(v, rs, k0);
    return cfn_bf16_load1(p);
}
#ifdef CFN_X86
A5 static inline __m512 cfn_ldb_avx512(const uint16_t *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
A5 static inline __m512i cfn_fmix32_avx512(__m512i h) {
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x85EBCA6Bu));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0xC2B2AE35u));
    return _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
}
A5 static inline __m512 cfn_stb_avx512(uint16_t *p, __m512 v, uint32_t rs, uint32_t k0) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i r = _mm512_srli_epi32(cfn_fmix32_avx512(_mm512_add_epi32(_mm512_set1_epi32((int)(rs + k0)), lane)), 16);
    __m512i b = _mm512_srli_epi32(_mm512_add_epi32(_mm512_castps_si512(v), r), 16);
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(b));
    return _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
}
A2 static inline __m256 cfn_ldb_avx2(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
A2 static inline __m256i cfn_fmix32_avx2(__m256i h) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x85EBCA6Bu));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0xC2B2AE35u));
    return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}
A2 static inline __m256 cfn_stb_avx2(uint16_t *p, __m256 v, uint32_t rs, uint32_t k0) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i r = _mm256_srli_epi32(cfn_fmix32_avx2(_mm256_add_epi32(_mm256_set1_epi32((int)(rs + k0)), lane)), 16);
    __m256i b = _mm256_srli_epi32(_mm256_add_epi32(_mm256_castps_si256(v), r), 16);
    /* every lane is <= 0xFFFF: unsigned saturation packs exactly */
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
}
#endif

#define CFN_DEFINE_ROWS(SFX, ATTR, VT, W, MT, ZERO, LD, ST, SET1, FMA, ADD, HSUM, MK, MLD, MST)           \
/* bfloat16 rows: one sweep per row (widen, the float32 operations, round and store in registers; no    \
   separate widening and rounding passes over the row) */                                                                        \
/* chunk i of a bfloat16 row (a whole vector, or the tail i < n < i + W, zero-padded) */                         \
ATTR static inline VT cfn_rld_##SFX(const uint16_t *rb, ptrdiff_t i, ptrdiff_t n) {                     \
    if (i + W <= n) return cfn_ldb_##SFX(rb + i);                                                        \
    float t[W]; for (ptrdiff_t k = 0; k < W; k++) t[k] = i + k < n ? cfn_bf16_load1(rb + i + k) : 0.0f;  \
    return LD(t);                                                                                        \
}                                                                                                        \
ATTR static inline VT cfn_rst_##SFX(uint16_t *rb, uint32_t rs, ptrdiff_t i, ptrdiff_t n, VT v) {         \
    if (i + W <= n) return cfn_stb_##SFX(rb + i, v, rs, (uint32_t)i);                                    \
    float t[W]; ST(t, v);                                                                                \
    for (ptrdiff_t k = 0; k < W; k++) {                                                                  \
        if (i + k < n) { rb[i + k] = cfn_bf16_sr1(t[k], rs, (uint32_t)(i + k));                          \
                         t[k] = cfn_bf16_load1(rb + i + k); }                                            \
        else t[k] = 0.0f;                                                                                \
    }                                                                                                    \
    return LD(t);                                                                                        \
}                                                                                                        \
ATTR static inline void cfn_encol_b16_##SFX(uint16_t *rb, uint32_t rs, ptrdiff_t n, int np,            \
                                 const float *const *dz, const float *cp, int nv, float *const *z,       \
                                 const float *xv) {                                                      \
    for (ptrdiff_t i = 0; i < n; i += W) {                                                               \
        int full = i + W <= n; MT mk = MK(full ? W : n - i);                                             \
        VT v = cfn_rld_##SFX(rb, i, n);                                                                  \
        if (np > 0) {                                                                                    \
            for (int p = 0; p < np; p++)                                                                 \
                v = FMA(SET1(cp[p]), full ? LD(dz[p] + i) : MLD(mk, dz[p] + i), v);                      \
            v = cfn_rst_##SFX(rb, rs, i, n, v);                                                          \
        }                                                                                                \
        if (full) for (int j = 0; j < nv; j++) ST(z[j] + i, FMA(SET1(xv[j]), v, LD(z[j] + i)));          \
        else for (int j = 0; j < nv; j++) MST(z[j] + i, mk, FMA(SET1(xv[j]), v, MLD(mk, z[j] + i)));    \
    }                                                                                                    \
}                                                                                                        \
/* dots of one row with q <= 4 rows h[0..q-1]; independent FMA chains: 4 for one row, 2 each for two */ \
ATTR static void cfn_rowdots_b16_##SFX(const uint16_t *rb, ptrdiff_t n, int q,                         \
                                   const float *const *h, float *out) {                                  \
    VT s0 = ZERO, s1 = ZERO, s2 = ZERO, s3 = ZERO;                                                       \
    ptrdiff_t i = 0;                                                                                     \
    if (q == 1) {                                                                                        \
        const float *h0 = h[0];                                                                          \
        for (; i + 2 * W <= n; i += 2 * W) {                                                             \
            s0 = FMA(cfn_rld_##SFX(rb, i, n), LD(h0 + i), s0);                                       \
            s1 = FMA(cfn_rld_##SFX(rb, i + W, n), LD(h0 + i + W), s1); }                             \
        if (i < n) { VT x = cfn_rld_##SFX(rb, i, n);                                                 \
            s2 = FMA(x, i + W <= n ? LD(h0 + i) : MLD(MK(n - i), h0 + i), s2); i += W; }                 \
        if (i < n) s3 = FMA(cfn_rld_##SFX(rb, i, n), MLD(MK(n - i), h0 + i), s3);                    \
        out[0] = HSUM(ADD(ADD(s0, s1), ADD(s2, s3)));                                                    \
        return;                                                                                          \
    }                                                                                                    \
    if (q == 2) {                                                                                        \
        const float *h0 = h[0], *h1 = h[1];                                                              \
        for (; i + 2 * W <= n; i += 2 * W) {                                                             \
            VT x = cfn_rld_##SFX(rb, i, n), y = cfn_rld_##SFX(rb, i + W, n);                     \
            s0 = FMA(x, LD(h0 + i), s0); s1 = FMA(x, LD(h1 + i), s1);                                    \
            s2 = FMA(y, LD(h0 + i + W), s2); s3 = FMA(y, LD(h1 + i + W), s3); }                          \
        for (; i < n; i += W) { VT x = cfn_rld_##SFX(rb, i, n);                                      \
            if (i + W <= n) { s0 = FMA(x, LD(h0 + i), s0); s1 = FMA(x, LD(h1 + i), s1); }                \
            else { MT mk = MK(n - i); s0 = FMA(x, MLD(mk, h0 + i), s0); s1 = FMA(x, MLD(mk, h1 + i), s1); } } \
        out[0] = HSUM(ADD(s0, s2)); out[1] = HSUM(ADD(s1, s3));                                          \
        return;                                                                                          \
    }                                                                                                    \
    const float *h0 = h[0], *h1 = h[1], *h2 = h[2], *h3 = h[q == 4 ? 3 : 2];                             \
    for (; i < n; i += W) { VT x = cfn_rld_##SFX(rb, i, n);                                          \
        if (i + W <= n) { s0 = FMA(x, LD(h0 + i), s0); s1 = FMA(x, LD(h1 + i), s1);                      \
                          s2 = FMA(x, LD(h2 + i), s2); s3 = FMA(x, LD(h3 + i), s3); }                    \
        else { MT mk = MK(n - i); s0 = FMA(x, MLD(mk, h0 + i), s0); s1 = FMA(x, MLD(mk, h1 + i), s1);    \
               s2 = FMA(x, MLD(mk, h2 + i), s2); s3 = FMA(x, MLD(mk, h3 + i), s3); } }                   \
    out[0] = HSUM(s0); out[1] = HSUM(s1); out[2] = HSUM(s2);                                             \
    if (q == 4) out[3] = HSUM(s3);                                                                       \
}                                                                                                        \
ATTR static void cfn_outdots_b16_##SFX(const uint16_t *rb, ptrdiff_t n, int m,             \
                                   const float *const *h, float *out) {                                  \
    for (int j = 0; j < m; j += 4) cfn_rowdots_b16_##SFX(rb, n, m - j < 4 ? m - j : 4, h + j, out + j); \
}                                                                                                        \
ATTR static inline void cfn_outupd_b16_##SFX(uint16_t *rb, uint32_t rs, ptrdiff_t n, int m,           \
                                  const float *const *h, float *const *dh, const float *a,              \
                                  const float *c) {                                                      \
    for (ptrdiff_t i = 0; i < n; i += W) {                                                               \
        VT v = cfn_rld_##SFX(rb, i, n), acc = v;                                                     \
        if (i + W <= n) {                                                                                \
            for (int j = 0; j < m; j++) {                                                                \
                ST(dh[j] + i, FMA(SET1(a[j]), v, LD(dh[j] + i)));                                        \
                acc = FMA(SET1(c[j]), LD(h[j] + i), acc); }                                              \
        } else {                                                                                         \
            MT mk = MK(n - i);                                                                           \
            for (int j = 0; j < m; j++) {                                                                \
                MST(dh[j] + i, mk, FMA(SET1(a[j]), v, MLD(mk, dh[j] + i)));                              \
                acc = FMA(SET1(c[j]), MLD(mk, h[j] + i), acc); }                                         \
        }                                                                                                \
        cfn_rst_##SFX(rb, rs, i, n, acc);                                                                \
    }                                                                                                    \
}                                                                                                        \
/* one input row: row += sum_p cp[p] dz[p] (the deferred update, when np > 0), then z[j] += xv[j] row */  \
ATTR static void cfn_encol_##SFX(float *rf, uint16_t *rb, uint32_t rs, ptrdiff_t n, int np,             \
                                 const float *const *dz, const float *cp, int nv, float *const *z,       \
                                 const float *xv) {                                      \
    if (rb) { cfn_encol_b16_##SFX(rb, rs, n, np, dz, cp, nv, z, xv); return; }                            \
    if (np > 0) cfn_maxpy_##SFX(rf, n, np, dz, cp);                                                      \
    if (nv > 0) cfn_saxpy_##SFX(rf, n, nv, z, xv);                                                       \
}                                                                                                        \
/* the encoder of a group's rows (col[s] of the array at bf or bb, n per row), row after row: row s has the \
   pending entries poff[s] .. poff[s + 1] - 1 of dz/cp and the visible ones voff[s] .. of z/xv; the next  \
   row is prefetched meanwhile (when cfn_cpu.set_prefetch is on) */                                                          \
ATTR static void cfn_enc_rows_##SFX(float *bf, uint16_t *bb, ptrdiff_t n, int ncol, const int32_t *col,   \
                                    const uint32_t *rseed, const int32_t *poff, const float *const *dz,   \
                                    const float *cp, const int32_t *voff, float *const *z,               \
                                    const float *xv) {                                   \
    ptrdiff_t esz = bb ? 2 : 4;                                                                          \
    const char *base = (const char *)(bb ? (void *)bb : (void *)bf);                                     \
    for (int s = 0; s < ncol; s++) {                                                                     \
        if (s + 1 < ncol) cfn_prefetch(base + (ptrdiff_t)col[s + 1] * n * esz, n * esz);                  \
        ptrdiff_t off = (ptrdiff_t)col[s] * n;                                                           \
        cfn_encol_##SFX(bb ? NULL : bf + off, bb ? bb + off : NULL, bb ? rseed[s] : 0, n,                 \
                        poff[s + 1] - poff[s], dz + poff[s], cp + poff[s],                               \
                        voff[s + 1] - voff[s], z + voff[s], xv + voff[s]);                      \
    }                                                                                                    \
}                                                                                                        \
/* one output row: out[j] = row . h[j] */                                                               \
ATTR static void cfn_outdots_##SFX(const float *rf, const uint16_t *rb, ptrdiff_t n, int m,             \
                                   const float *const *h, float *out) {                  \
    if (rb) cfn_outdots_b16_##SFX(rb, n, m, h, out);                                                     \
    else cfn_dots_##SFX(rf, h, m, n, out);                                                               \
}                                                                                                        \
/* its update: dh[j] += a[j] row (old values), then row += sum_j c[j] h[j] (bfloat16: rounded, stored) */   \
ATTR static void cfn_outupd_##SFX(float *rf, uint16_t *rb, uint32_t rs, ptrdiff_t n, int m,             \
                                  const float *const *h, float *const *dh, const float *a,              \
                                  const float *c) {                                      \
    if (rb) cfn_outupd_b16_##SFX(rb, rs, n, m, h, dh, a, c);                                             \
    else cfn_segbwd_##SFX(rf, rf, n, m, h, dh, a, c);                                                    \
}

CFN_DEFINE_ROWS(generic, , float, 1, int, 0.0f, G_LD, G_ST, G_ID, G_FMA, G_ADD, G_ID, G_MK, G_MLD, G_MST)
#ifdef CFN_X86
CFN_DEFINE_ROWS(avx512, A5, __m512, 16, __mmask16, _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_storeu_ps,
                _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_reduce_add_ps, Z_MK, Z_MLD, Z_MST)
CFN_DEFINE_ROWS(avx2, A2, __m256, 8, __m256i, _mm256_setzero_ps(), _mm256_loadu_ps, _mm256_storeu_ps,
                _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, cfn_hsum256, Y_MK, Y_MLD, Y_MST)
#endif

typedef void (*cfn_enc_rows_t)(float *, uint16_t *, ptrdiff_t, int, const int32_t *, const uint32_t *, const int32_t *,
                               const float *const *, const float *, const int32_t *, float *const *, const float *);
typedef void (*cfn_outdots_t)(const float *, const uint16_t *, ptrdiff_t, int, const float *const *, float *);
typedef void (*cfn_outupd_t)(float *, uint16_t *, uint32_t, ptrdiff_t, int, const float *const *, float *const *,
                             const float *, const float *);
static cfn_enc_rows_t cfn_enc_rows_p = cfn_enc_rows_generic;
static cfn_outdots_t cfn_outdots_p = cfn_outdots_generic;
static cfn_outupd_t cfn_outupd_p = cfn_outupd_generic;
#define CFN_ROWS_USE(SFX) do { cfn_enc_rows_p = cfn_enc_rows_##SFX; cfn_outdots_p = cfn_outdots_##SFX;               \
    cfn_outupd_p = cfn_outupd_##SFX; } while (0)
static void cfn_rows_use(int level) {
    CFN_ROWS_USE(generic);
#ifdef CFN_X86
    if (level == 1) CFN_ROWS_USE(avx2);
    if (level == 2) CFN_ROWS_USE(avx512);
#else
    (void)level;
#endif
}
#define cfn_enc_rows(bf, bb, n, ncol, col, rseed, poff, dz, cp, voff, z, xv) \
    cfn_enc_rows_p((bf), (bb), (n), (ncol), (col), (rseed), (poff), (dz), (cp), (voff), (z), (xv))
#define cfn_outdots(rf, rb, n, m, h, out) cfn_outdots_p((rf), (rb), (n), (m), (h), (out))
#define cfn_outupd(rf, rb, rs, n, m, h, dh, a, c) \
    cfn_outupd_p((rf), (rb), (rs), (n), (m), (h), (dh), (a), (c))

/* bf16 conversions of whole arrays (load, fold, export) */
static void cfn_bf16_round_nearest(const float *x, uint16_t *out, ptrdiff_t n) {
    for (ptrdiff_t k = 0; k < n; k++) out[k] = cfn_bf16_rn1(x[k]);
}
