// cfn_common.cuh -- helpers shared by the CUDA kernels of cfn_fast (included by every .cu file).
//
// The Python loader (cfn_fast/backends/cuda_module.py) compiles ONE cupy.RawModule whose source
// #includes every .cu file, with -I<this folder>; the include guard keeps this header to one copy.
// nvcc (tests/test_cuda_compile.py) compiles each .cu on its own and finds the header next to it.  Everything here is plain CUDA C++ that NVRTC
// accepts without any system header.
//
// Conventions used by all kernels
//   * float32 everywhere except the loss accumulator (double) and CSR positions (long long).
//   * Hidden widths are padded to a multiple of 4 (Hp) so that every row of a (rows x Hp)
//     matrix starts 16-byte aligned and is read as float4; padded columns hold 0 and stay 0.
//   * The known entries of a whole epoch are laid out once per epoch by cfn_epoch_tables, batch
//     after batch in epoch order: ecol (input column), ex (value), erh (2 * batch row + hidden
//     flag after the swap rule).  The step kernels read entry e of the current batch at
//     ecol[*ebase + e] etc. and never touch the CSR.
//   * A "batch" is described by device arrays written by cfn_batch_setup (training) or by the
//     host (inference):  bh[0] = rows in the batch, bh[1] = known entries (nnz) in the batch,
//     bh[2] = row of the per-step coefficient table, bh[3] = stamp of the batch (segment mode);
//     *ebase = position of the batch's first entry in the entry tables; brow[r] = sample (CSR
//     row) of batch row r; boff[r] = local offset of row r's first entry (boff[rows] = nnz).
//   * Per-step coefficients coef[4*t + i]: 0 = scale s of the lazily decayed matrices before
//     the step, 1 = eta_lazy (lr/B / s_after; -1 for raw gradients), 2 = eta_dense (lr/B; -1
//     for raw gradients), 3 = shrink (1 - lr*lambda; 1 for raw gradients).
//   * Warp collectives (__shfl_sync, __ballot_sync) are only ever reached by all 32 lanes of a
//     warp (warp-uniform control flow); lane-dependent loops contain no collective.
#ifndef CFN_COMMON_CUH
#define CFN_COMMON_CUH

#define CFN_FULL 0xffffffffu
#define CFN_NCOEF 4
#define CFN_MAX_THREADS 256   // largest block of every kernel (cuda_backend checks block_threads against it)

#ifdef CFN_EMULATE
// host emulation (bench/gpu_numeric_check.py --emulate) provides the dynamic shared memory and
// checks that every 16-byte vector access is 16-byte aligned (the host would not fault)
#define CFN_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(cfn_emu_dynamic_smem())
#define CFN_ALIGNED16(p) cfn_emu_check_aligned16((const void*)(p), __LINE__)
#else
#define CFN_DYN_SMEM(T, name) extern __shared__ T name[]
#define CFN_ALIGNED16(p) ((void)0)
#endif

// SplitMix64 finaliser, bit-identical to cfn_fast.corruption.splitmix64 (wrapping uint64).
__device__ __forceinline__ unsigned long long cfn_splitmix64(unsigned long long x) {
    unsigned long long z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Masking draw of the known entry at global CSR position pos: hidden when the top 24 bits of
// splitmix64(key + pos) are below threshold (threshold 0: never hidden).
__device__ __forceinline__ int cfn_is_hidden(unsigned long long key, long long pos, unsigned int threshold) {
    return (unsigned int)(cfn_splitmix64(key + (unsigned long long)pos) >> 40) < threshold;
}

__device__ __forceinline__ float cfn_warp_sum(float v) {
    v += __shfl_xor_sync(CFN_FULL, v, 16);
    v += __shfl_xor_sync(CFN_FULL, v, 8);
    v += __shfl_xor_sync(CFN_FULL, v, 4);
    v += __shfl_xor_sync(CFN_FULL, v, 2);
    v += __shfl_xor_sync(CFN_FULL, v, 1);
    return v;
}

__device__ __forceinline__ double cfn_warp_sum_d(double v) {
    v += __shfl_xor_sync(CFN_FULL, v, 16);
    v += __shfl_xor_sync(CFN_FULL, v, 8);
    v += __shfl_xor_sync(CFN_FULL, v, 4);
    v += __shfl_xor_sync(CFN_FULL, v, 2);
    v += __shfl_xor_sync(CFN_FULL, v, 1);
    return v;
}

__device__ __forceinline__ int cfn_imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ long long cfn_lmin(long long a, long long b) { return a < b ? a : b; }

__device__ __forceinline__ float4 cfn_ld4(const float* p) {
    CFN_ALIGNED16(p);
    return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 cfn_ldg4(const float* p) {
    CFN_ALIGNED16(p);
    return __ldg(reinterpret_cast<const float4*>(p));
}
__device__ __forceinline__ void cfn_st4(float* p, float4 v) {
    CFN_ALIGNED16(p);
    *reinterpret_cast<float4*>(p) = v;
}
__device__ __forceinline__ float4 cfn_zero4() { return make_float4(0.f, 0.f, 0.f, 0.f); }
__device__ __forceinline__ float4 cfn_axpy4(float a, float4 x, float4 y) {   // y + a*x
    return make_float4(y.x + a * x.x, y.y + a * x.y, y.z + a * x.z, y.w + a * x.w);
}
__device__ __forceinline__ float cfn_dot4(float4 a, float4 b) {
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// p[0..3] += v with device-scope atomics (one 16-byte vector atomic on sm_90+).
__device__ __forceinline__ void cfn_atomic_add4(float* p, float4 v) {
    CFN_ALIGNED16(p);
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    atomicAdd(reinterpret_cast<float4*>(p), v);
#else
    atomicAdd(p, v.x);
    atomicAdd(p + 1, v.y);
    atomicAdd(p + 2, v.z);
    atomicAdd(p + 3, v.w);
#endif
}

// Work split of the sparse kernels: the batch's nnz local entries are cut into contiguous
// ranges of `per` entries, range w going to global warp w (warps past the last range idle).
__device__ __forceinline__ int cfn_per_warp(int nnz, int total_warps, int min_per_warp) {
    int per = (int)(((long long)nnz + total_warps - 1) / total_warps);
    return per < min_per_warp ? min_per_warp : per;
}

// The range [e0, e1) of global warp gw; false when the warp has none.
__device__ __forceinline__ bool cfn_warp_range(int nnz, int per, long long gw, int* e0, int* e1) {
    long long b = gw * per;
    if (b >= nnz) return false;
    *e0 = (int)b;
    *e1 = (int)cfn_lmin((long long)nnz, b + per);
    return true;
}

// Deterministic row sums without atomics.  Each warp writes one partial row for every batch row
// r its range touches, into slot (gw + r) of a partial buffer with (total_warps + rows) rows:
// slots are unique and increase with (gw, r).  The full row r is then the sum of slots gw + r for
// the warps gw = boff[r]/per .. (boff[r+1]-1)/per that cover its entries.
// Returns that sum for column i (0 for a row without entries), in a fixed order: the slots are
// taken 8 at a time (8 independent loads in flight instead of one dependent load per slot, for
// long rows covered by hundreds of warps), each group summed as a pairwise tree, the group sums
// added in warp order.  The same bits on every run.
// FromL2: load through L2 only (__ldcg), for partials written by other warps of the SAME kernel
// (the fused activation / delta): neither L1 nor the read-only cache is coherent within a kernel.
template <bool FromL2>
__device__ __forceinline__ float cfn_part_load(const float* p) {
#ifdef CFN_EMULATE
    return *p;
#else
    return FromL2 ? __ldcg(p) : *p;
#endif
}

__device__ __forceinline__ double cfn_load_l2(const double* p) {
#ifdef CFN_EMULATE
    return *p;
#else
    return __ldcg(p);
#endif
}

template <bool FromL2 = false>
__device__ __forceinline__ float cfn_row_total(const float* __restrict__ part, const int* __restrict__ boff, int r,
                                               int per, int hp, int i) {
    const int b0 = boff[r], b1 = boff[r + 1];
    if (b1 <= b0) return 0.f;
    const int w0 = b0 / per, w1 = (b1 - 1) / per;
    const float* p = part + ((size_t)w0 + r) * hp + i;
    const int n = w1 - w0 + 1;
    float total = 0.f;
    int w = 0;
    for (; w + 8 <= n; w += 8) {
        float v[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) v[q] = cfn_part_load<FromL2>(p + (size_t)(w + q) * hp);
        total += ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    }
    for (; w < n; ++w) total += cfn_part_load<FromL2>(p + (size_t)w * hp);
    return total;
}

// Fused kernels: true (in every lane) for the last warp to finish batch row r.  Each warp that holds
// entries of r counts itself in rowdone[r] after a fence; the row's warps are w0..w1 of the partial
// layout (see cfn_row_total).  Warp-uniform; the caller skips rows without entries.
__device__ __forceinline__ bool cfn_last_warp_of_row(int* rowdone, int r, int b0, int b1, int per, int lane) {
    int last = 0;
    if (lane == 0) last = atomicAdd(rowdone + r, 1) == (b1 - 1) / per - b0 / per;
    return __shfl_sync(CFN_FULL, last, 0) != 0;
}

// One lane's view of local entry e of the batch, read straight from the epoch's entry tables
// (cfn_epoch_tables writes them once per epoch, batch after batch in epoch order; the batch's
// first entry is at *ebase): no binary search over the batch offsets and no row -> indptr ->
// indices chain in the step kernels.  erh[k] = 2 * (batch row) + (hidden after the swap rule).
struct CfnEntry {
    int row;
    int col;
    float x;
    int hidden;
};

__device__ __forceinline__ CfnEntry cfn_entry(const int* __restrict__ ecol, const float* __restrict__ ex,
                                              const int* __restrict__ erh, int e) {
    CfnEntry en;
    const int rh = erh[e];
    en.row = rh >> 1;
    en.hidden = rh & 1;
    en.col = ecol[e];
    en.x = ex[e];
    return en;
}

// Batch row of local entry e (0 <= e < nnz) from the entry tables.
__device__ __forceinline__ int cfn_entry_row(const int* __restrict__ erh, int e) { return erh[e] >> 1; }

#endif  // CFN_COMMON_CUH
