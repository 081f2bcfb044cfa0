// cfn_shard.cu -- the kernels of the split training step of a sharded CFN (cfn_fast.backends.cuda_shard).
//
// A shard owns a contiguous range of the inputs (cfn_fast/backends/shard_base.py).  Its step reuses the
// training kernels of cfn_train.cu (cfn_batch_setup, cfn_encode, cfn_hidden_act, cfn_output,
// cfn_hidden_delta, cfn_bias_side, cfn_scatter_segment) on the shard's own entries, and adds:
//
//   cfn_shard_tables    the batch's entry tables (as cfn_epoch_tables) from the shard's CSR, each entry's
//                       masking draw keyed by its position in the WHOLE training CSR and the swap rule
//                       decided over the sample's whole row, so the hidden flags are the unsharded ones
//   cfn_shard_rows      a block the shards sum (B x H, unpadded): the row totals of cfn_encode's or
//                       cfn_output's warp partials times the lazy scale, and the shard's batch loss
//   cfn_shard_block_in  a summed block back into the padded (B x Hp) layout, times (1 - h^2) for the
//                       code gradient, flagging NaN / infinite values
#include "cfn_common.cuh"

// ------------------------------------------------------------------------------------------
// cfn_shard_tables  <<<any, 32*k>>>   (once per step, before cfn_batch_setup)
// Contract: for every position i < n_order of the batch (one warp per position, grid-stride), with
// s = order[i], its batch row r = i % batch_size, its local entries at q = indptr[s] + j, j < count(s),
// and its whole row's global CSR positions row_starts[s] .. row_starts[s + 1]:
//   ecol[estart[i] + j] = indices[q];  ex[estart[i] + j] = data[q];
//   erh[estart[i] + j]  = 2 r + (hidden(positions[q]) XOR swap_i)
// where hidden(pos) is the masking draw of the step's key (cfn_is_hidden) and swap_i = 1 when every
// entry of the whole row is drawn hidden (0 without masking or for an empty row); pswap[i] = swap_i.
// The swap rule costs one hash per entry of the row in every shard instead of a third exchange.
extern "C" __global__ void
cfn_shard_tables(const int* __restrict__ order, int n_order, int batch_size, const long long* __restrict__ estart,
                 const long long* __restrict__ indptr, const int* __restrict__ indices,
                 const float* __restrict__ data, const long long* __restrict__ positions,
                 const long long* __restrict__ row_starts, const unsigned long long* __restrict__ key_ptr,
                 unsigned int threshold, int* __restrict__ ecol, float* __restrict__ ex, int* __restrict__ erh,
                 int* __restrict__ pswap) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    const unsigned long long key = *key_ptr;
    const long long total_warps = (long long)gridDim.x * wpb;
    for (long long i = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); i < n_order; i += total_warps) {
        const int s = order[i];                                  // warp-uniform loop
        const long long gbeg = row_starts[s];
        const long long gcnt = row_starts[s + 1] - gbeg;
        // swap rule over the whole row: look for one visible entry
        int sw = 0;
        if (threshold > 0 && gcnt > 0) {
            sw = 1;
            for (long long g = 0; g < gcnt; g += 32) {
                const long long j = g + lane;
                const int vis = (j < gcnt) && !cfn_is_hidden(key, gbeg + j, threshold);
                if (__any_sync(CFN_FULL, vis)) { sw = 0; break; }
            }
        }
        if (lane == 0) pswap[i] = sw;
        const long long beg = indptr[s];
        const int cnt = (int)(indptr[s + 1] - beg);
        const long long dst = estart[i];
        const int r2 = 2 * (int)(i % batch_size);
        for (int j = lane; j < cnt; j += 32) {
            const long long q = beg + j;
            const int h = threshold ? cfn_is_hidden(key, positions[q], threshold) : 0;
            ecol[dst + j] = indices[q];
            ex[dst + j] = data[q];
            erh[dst + j] = r2 + (h ^ sw);
        }
    }
}

// ------------------------------------------------------------------------------------------
// cfn_shard_rows  <<<any, any>>>   (grid-stride over rows x hdim)
// Contract: for r < bh[0], i < hdim:  out[r * hdim + i] = s * cfn_row_total(part, boff, r, per, hp, i)
// with s = coef[bh[2]].s (the lazy scale of the layer the partials were taken of) and per from bh[1],
// total_warps and min_per_warp exactly as in the kernel that wrote the partials (cfn_encode: the
// shard's first-layer pre-activations; cfn_output: its part of the gradient reaching the last code).
// out is the unpadded rows x hdim block the shards sum.  When reduce_loss, block 0 adds the batch
// loss, the sum of lpart over cfn_output's active warps in a fixed order, to *loss (as cfn_hidden_delta).
extern "C" __global__ void
cfn_shard_rows(const int* __restrict__ bh, const float* __restrict__ coef, const float* __restrict__ part,
               const int* __restrict__ boff, int total_warps, int min_per_warp, int hdim, int hp,
               float* __restrict__ out, int reduce_loss, const double* __restrict__ lpart, double* loss) {
    const int nrows = bh[0], nnz = bh[1];
    const float sc = coef[bh[2] * CFN_NCOEF];
    const int per = cfn_per_warp(nnz, total_warps, min_per_warp);
    if (reduce_loss && blockIdx.x == 0 && threadIdx.x < 32) {      // one full warp
        const int active = (int)cfn_lmin((long long)total_warps, ((long long)nnz + per - 1) / per);
        double v = 0.0;
        for (int w = threadIdx.x; w < active; w += 32) v += lpart[w];
        v = cfn_warp_sum_d(v);
        if (threadIdx.x == 0) *loss += v;
    }
    const long long n = (long long)nrows * hdim;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(idx / hdim), i = (int)(idx % hdim);
        out[idx] = sc * cfn_row_total(part, boff, r, per, hp, i);
    }
}

// ------------------------------------------------------------------------------------------
// cfn_shard_block_in  <<<any, any>>>   (grid-stride over rows x hp)
// Contract: for r < bh[0], i < hp:  dst[r * hp + i] = src[r * hdim + i] (use_h = 0: the summed
// pre-activations) or src[r * hdim + i] * (1 - h[r * hp + i]^2) (use_h = 1: the summed code gradient
// to the last layer's deltas, the reference's order: (1 - h*h) first), 0 on the padding i >= hdim;
// *bad = 1 when a value of src is NaN or infinite (x - x is not 0 exactly for those).
extern "C" __global__ void
cfn_shard_block_in(const int* __restrict__ bh, const float* __restrict__ src, int hdim, int hp,
                   const float* __restrict__ h, int use_h, float* __restrict__ dst, int* bad) {
    const long long n = (long long)bh[0] * hp;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(idx / hp), i = (int)(idx % hp);
        float v = 0.f;
        if (i < hdim) {
            v = src[(long long)r * hdim + i];
            if (v - v != 0.f) *bad = 1;
            if (use_h) {
                const float hv = h[idx];
                v = v * (1.f - hv * hv);
            }
        }
        dst[idx] = v;
    }
}
