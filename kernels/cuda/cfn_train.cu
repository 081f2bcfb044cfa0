// cfn_train.cu -- the CUDA kernels of one CFN training step (cfn_fast.backends.cuda_backend).
//
// One SGD step on a mini-batch of B samples is this fixed sequence of launches, none of which
// depends on host data, so a run of steps can be captured once into a CUDA graph and replayed
// (the host uploads the epoch's sample order and per-step coefficients once per epoch):
//
//   (once per epoch)   cfn_epoch_tables: every entry's column, value, batch row and hidden flag,
//                      batch after batch, so no step kernel searches the batch or walks the CSR
//   cfn_batch_setup    1 block      which samples, where the batch's entries start
//   cfn_encode         many warps   per-warp partial rows of  sum_k x_k Win^T[col_k]  (visible k)
//   cfn_hidden_act     small        h1 = tanh(s * (row sums of the partials) + b_in + side S_in^T)
//                      (in training epochs fused into cfn_encode: the last warp of each row applies it)
//   (dense hidden layers: cuBLAS + cfn_hidden_act / cfn_hidden_delta / cfn_bias_side, eager mode)
//   cfn_output         many warps   y_k, loss, delta_k, partial rows of sum_k delta_k Wout[col_k]
//   cfn_hidden_delta   small        delta1 = s * (row sums) (1 - h1^2); the batch loss
//                      (in training epochs fused into cfn_output: the last warp of each row / of all)
//   cfn_scatter_atomic | cfn_scatter_segment
//                                   Wout, bout, Sout, Win^T rows of the touched columns; b_in, S_in
//
// All sums have a fixed order (warp partials are reduced in warp order, never with float
// atomics), so with the segment scatter a run gives the same bits every time.
//
// Parameters of the two big sparse layers live as W = s * V (V in device memory, s a host
// scalar passed through the coefficient table), so weight decay of every parameter costs
// nothing per step: s_new = (1 - lr*lambda) * s and a touched row moves by -(lr/B) g / s_new.
// The maths is the NumPy reference's (cfn_fast/backends/numpy_backend.py), op for op:
//   h0 = X o (K and not H);  h_l = tanh(h_{l-1} W_l^T + side V_l^T + b_l);  y = h_L
//   loss = alpha sum_H (y - x)^2 + beta sum_{K\H} (y - x)^2
//   theta <- (1 - lr*lambda) theta - (lr/B) dloss/dtheta          for every parameter
#include "cfn_common.cuh"

// The sparse kernels are launched with at most CFN_MAX_THREADS threads per block, and their grids
// are sized from the occupancy of the compiled kernel (cuda_backend.resident_blocks: registers and
// shared memory as ptxas reports them), never a guess.  The minimum resident blocks below are the
// most each kernel reaches on sm_90 WITHOUT spills (checked by tests/test_cuda_compile.py): asking
// cfn_output or cfn_scatter_segment for 3 makes ptxas spill, and __launch_bounds__ with no minimum
// lets it trade occupancy for registers.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
#define CFN_BOUNDS_ENCODE __launch_bounds__(CFN_MAX_THREADS, 3)
#else
#define CFN_BOUNDS_ENCODE __launch_bounds__(CFN_MAX_THREADS, 2)   // 3 spills on sm_80
#endif
#define CFN_BOUNDS_OUTPUT __launch_bounds__(CFN_MAX_THREADS, 2)
#define CFN_BOUNDS_ATOMIC __launch_bounds__(CFN_MAX_THREADS, 3)
#define CFN_BOUNDS_SEGMENT

#define CFN_RT 5   // register tiles of 128 floats: rows of up to 640 hidden units stay in registers (600 in the paper)

// acc[0:hp) += sum_q a[q] * w[q][0:hp) for NE gathered rows: every tile is loaded before the first
// FMA (one memory latency per call).  NE = 2 halves the latency chain of a warp but needs ~130
// registers (one 256-thread block per SM on sm_90), so the kernels use NE = 1.
template <int NE>
__device__ __forceinline__ void cfn_axpy_rows(float* acc, const float* const* w, const float* a, int hp, int lane) {
    float4 v[NE][CFN_RT];
#pragma unroll
    for (int q = 0; q < NE; ++q) {
#pragma unroll
        for (int t = 0; t < CFN_RT; ++t) {
            const int c = t * 128 + lane * 4;
            if (c < hp) v[q][t] = cfn_ldg4(w[q] + c);
        }
    }
#pragma unroll
    for (int t = 0; t < CFN_RT; ++t) {
        const int c = t * 128 + lane * 4;
        if (c < hp) {
            float4 s = cfn_ld4(acc + c);
#pragma unroll
            for (int q = 0; q < NE; ++q) s = cfn_axpy4(a[q], v[q][t], s);
            cfn_st4(acc + c, s);
        }
    }
    for (int c = CFN_RT * 128 + lane * 4; c < hp; c += 128) {
        float4 s = cfn_ld4(acc + c);
#pragma unroll
        for (int q = 0; q < NE; ++q) s = cfn_axpy4(a[q], cfn_ldg4(w[q] + c), s);
        cfn_st4(acc + c, s);
    }
}

// Partial row of warp gw for batch row r: slot (gw + r) of a (total_warps + rows) x hp buffer.
__device__ __forceinline__ float* cfn_slot(float* part, long long gw, int r, int hp) {
    return part + ((size_t)gw + r) * hp;
}

// Store the warp's shared accumulator row into slot (gw, r) and clear it.
__device__ __forceinline__ void cfn_store_row(float* acc, float* dst, int hp, int lane) {
    for (int c = lane * 4; c < hp; c += 128) {
        cfn_st4(dst + c, cfn_ld4(acc + c));
        cfn_st4(acc + c, cfn_zero4());
    }
}

__device__ __forceinline__ void cfn_zero_row(float* dst, int hp, int lane) {
    for (int c = lane * 4; c < hp; c += 128) cfn_st4(dst + c, cfn_zero4());
}

// The warp's accumulator moves from row *rcur to row rnext (> *rcur): store it, and write zero
// partials for the rows in between (rows of the range whose entries added nothing).
__device__ __forceinline__ void cfn_advance_row(float* acc, float* part, long long gw, int* rcur, int rnext, int hp,
                                                int lane) {
    cfn_store_row(acc, cfn_slot(part, gw, *rcur, hp), hp, lane);
    for (int r = *rcur + 1; r < rnext; ++r) cfn_zero_row(cfn_slot(part, gw, r, hp), hp, lane);
    *rcur = rnext;
}

// One SGD step (or raw gradient) of a dense bias and side weight from the deltas of its units:
//   bias[i] <- shrink*bias[i] - eta * sum_r d[r, i];  sidew[i, q] <- shrink*sidew[i, q] - eta * sum_r d[r, i] side[brow[r], q]
// grid-stride over units i < hdim (sums in row order: deterministic).  No warp collectives.
__device__ __forceinline__ void cfn_bias_side_step(int nrows, const float* __restrict__ cf, const float* d, int hdim,
                                                   int hp, const int* __restrict__ brow,
                                                   const float* __restrict__ side, int sdim, float* bias,
                                                   float* sidew) {
    const float eta = cf[2], shrink = cf[3];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < hdim; i += gridDim.x * blockDim.x) {
        float gb = 0.f;
        for (int r = 0; r < nrows; ++r) gb += d[(size_t)r * hp + i];
        bias[i] = shrink * bias[i] - eta * gb;
        for (int q = 0; q < sdim; ++q) {
            float g = 0.f;
            for (int r = 0; r < nrows; ++r) g += d[(size_t)r * hp + i] * side[(long long)brow[r] * sdim + q];
            sidew[(long long)i * sdim + q] = shrink * sidew[(long long)i * sdim + q] - eta * g;
        }
    }
}

// tanh(sc * z + bias[i] + side[brow[r], :] . sidew[i, :]) -- the activation of unit i of batch row r
// (cfn_hidden_act, and cfn_encode when it fuses the activation: the same expression, the same bits).
__device__ __forceinline__ float cfn_act_value(float sc, float z, int i, int r, const float* __restrict__ bias,
                                               const float* __restrict__ sidew, const float* __restrict__ side,
                                               const int* __restrict__ brow, int sdim) {
    float v = sc * z + bias[i];
    if (sdim > 0) {
        const float* sr = side + (long long)brow[r] * sdim;
        const float* vr = sidew + (long long)i * sdim;
        float sv = 0.f;
        for (int q = 0; q < sdim; ++q) sv += sr[q] * vr[q];
        v += sv;
    }
    return tanhf(v);
}

// ------------------------------------------------------------------------------------------
// cfn_epoch_tables  <<<any, 32*k>>>   (once per epoch, outside the per-step graphs)
// Contract: for every position i < n_order of the epoch's sample order (one warp per position,
// grid-stride), with s = order[i], its batch row r = i % batch_size and its entries at CSR
// positions pos = indptr[s] + j, j < count(s):
//   ecol[estart[i] + j] = indices[pos];  ex[estart[i] + j] = data[pos];
//   erh[estart[i] + j]  = 2 r + (hidden(pos) XOR swap_i)
// where estart (host: exclusive prefix sum of the counts in order, estart[n_order] = total)
// lays the batches out one after another, hidden(pos) is the masking draw of the epoch key and
// swap_i = 1 when every known entry of s is hidden (the swap rule; 0 without masking or for an
// empty row); pswap[i] = swap_i.  The step kernels then read their entries with no search.
extern "C" __global__ void
cfn_epoch_tables(const int* __restrict__ order, int n_order, int batch_size, const long long* __restrict__ estart,
                 const long long* __restrict__ indptr, const int* __restrict__ indices,
                 const float* __restrict__ data, const unsigned long long* __restrict__ key_ptr,
                 unsigned int threshold, int* __restrict__ ecol, float* __restrict__ ex, int* __restrict__ erh,
                 int* __restrict__ pswap) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    const unsigned long long key = *key_ptr;
    const long long total_warps = (long long)gridDim.x * wpb;
    for (long long i = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); i < n_order; i += total_warps) {
        const int s = order[i];                                  // warp-uniform loop
        const long long beg = indptr[s];
        const int cnt = (int)(indptr[s + 1] - beg);
        // swap rule: look for one visible entry (expected after ~1/(1 - mask_ratio) draws)
        int sw = 0;
        if (threshold > 0 && cnt > 0) {
            sw = 1;
            for (int g = 0; g < cnt; g += 32) {
                const int j = g + lane;
                const int vis = (j < cnt) && !cfn_is_hidden(key, beg + j, threshold);
                if (__any_sync(CFN_FULL, vis)) { sw = 0; break; }
            }
        }
        if (lane == 0) pswap[i] = sw;
        const long long dst = estart[i];
        const int r2 = 2 * (int)(i % batch_size);
        for (int j = lane; j < cnt; j += 32) {
            const long long pos = beg + j;
            const int h = threshold ? cfn_is_hidden(key, pos, threshold) : 0;
            ecol[dst + j] = indices[pos];
            ex[dst + j] = data[pos];
            erh[dst + j] = r2 + (h ^ sw);
        }
    }
}

// ------------------------------------------------------------------------------------------
// cfn_batch_setup  <<<1, any>>>
// Contract: reads the step counter t = ctl[0]; batch rows are the positions start = t*batch_size
// ... of the epoch order (at most batch_size, fewer at the end of order).  Writes brow[r] =
// order[start + r], boff[r] = estart[start + r] - estart[start] (boff[rows] = nnz), *ebase =
// estart[start], bh = {rows, nnz, t, stamp}; then ctl[0] = t + 1, ctl[1] = stamp (a fresh
// positive tag per batch), *ntouched = 0, rowdone[0 .. rows] = rowdone_out[0 .. rows] = 0.  Single block, so reading and advancing the counter
// is safe.  (The entries themselves were laid out by cfn_epoch_tables.)
extern "C" __global__ void
cfn_batch_setup(const int* __restrict__ order, int n_order, int batch_size, const long long* __restrict__ estart,
                int* ctl, int* bh, int* brow, int* boff, long long* ebase, int* ntouched, int* rowdone,
                int* rowdone_out) {
    const int tid = threadIdx.x;
    const int t = ctl[0];
    const long long start = (long long)t * batch_size;
    const long long left = (long long)n_order - start;
    const int bt = (int)(left < 0 ? 0 : cfn_lmin(left, (long long)batch_size));
    const long long first = bt > 0 ? estart[start] : 0;
    for (int r = tid; r <= bt; r += blockDim.x) {
        if (r < bt) brow[r] = order[start + r];
        rowdone[r] = 0;
        rowdone_out[r] = 0;                                      // r == bt: cfn_output's count of all warps
        boff[r] = bt > 0 ? (int)(estart[start + r] - first) : 0;
    }
    __syncthreads();                                             // every thread has read ctl[0]
    if (tid == 0) {
        int stamp = ctl[1] + 1;
        if (stamp <= 0) stamp = 1;
        *ebase = first;
        bh[0] = bt;
        bh[1] = bt > 0 ? (int)(estart[start + bt] - first) : 0;
        bh[2] = t;
        bh[3] = stamp;
        ctl[1] = stamp;
        ctl[0] = t + 1;
        *ntouched = 0;
    }
}

// ------------------------------------------------------------------------------------------
// cfn_encode  <<<blocks, 32*wpb, wpb*hp*4 bytes>>>   (total_warps = blocks*wpb)
// Contract: the batch's nnz entries are cut into ranges of per = cfn_per_warp(nnz, total_warps,
// min_per_warp) entries, one per warp (load balance across long and short rows).  Warp gw writes,
// for every batch row r its range touches, the partial row
//   part[gw + r, :] = sum over the visible known entries k of row r in its range of x_k * win_t[col_k, :]
// (win_t = V_in^T, n_inputs x hp, unscaled; rows of the range without visible entries get 0).
// cfn_hidden_act sums the partials of each row in warp order (cfn_row_total): no atomics, the
// same bits on every run.  Accumulation happens in the warp's private shared-memory row.
// Entry tables built with threshold = 0 give the uncorrupted input (inference).
// fuse = 1 (training epochs, where every batch row has entries; rowdone zeroed by cfn_batch_setup):
// also hout = cfn_hidden_act's output for this layer (coef, bias, sidew, side, brow, sdim, h as
// there), so the step needs no separate activation launch.  fuse = 0: the other arguments are unused.
extern "C" __global__ void CFN_BOUNDS_ENCODE
cfn_encode(const long long* __restrict__ ebase, const int* __restrict__ ecol_all, const float* __restrict__ ex_all,
           const int* __restrict__ erh_all, const int* __restrict__ bh,
           const float* __restrict__ win_t, int hp, float* __restrict__ part, int min_per_warp, int fuse,
           int* __restrict__ rowdone, const int* __restrict__ boff, const float* __restrict__ coef,
           const float* __restrict__ bias, const float* __restrict__ sidew, const float* __restrict__ side,
           const int* __restrict__ brow, int sdim, int h, float* __restrict__ hout) {
    CFN_DYN_SMEM(float4, cfn_smem);
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int nnz = bh[1];
    const long long gw = (long long)blockIdx.x * wpb + wib;
    const int per = cfn_per_warp(nnz, gridDim.x * wpb, min_per_warp);
    int e0, e1;
    if (!cfn_warp_range(nnz, per, gw, &e0, &e1))
        return;                                                  // warp-uniform exit
    const long long eb = *ebase;
    const int* ecol = ecol_all + eb;
    const float* ex = ex_all + eb;
    const int* erh = erh_all + eb;
    float* acc = reinterpret_cast<float*>(cfn_smem) + (size_t)wib * hp;
    for (int c = lane * 4; c < hp; c += 128) cfn_st4(acc + c, cfn_zero4());
    const int rlast = cfn_entry_row(erh, e1 - 1);
    const int rfirst = cfn_entry_row(erh, e0);
    int rcur = rfirst;
    for (int g = e0; g < e1; g += 32) {
        const int e = g + lane;
        int rr = 0, col = 0, vis = 0;
        float x = 0.f;
        if (e < e1) {
            const CfnEntry en = cfn_entry(ecol, ex, erh, e);
            rr = en.row;
            col = en.col;
            x = en.x;
            vis = !en.hidden && x != 0.f;                        // a zero input adds nothing
        }
        unsigned m = __ballot_sync(CFN_FULL, vis);
        while (m) {                                              // m is warp-uniform
            const int j = __ffs(m) - 1;
            m &= m - 1;
            const int rj = __shfl_sync(CFN_FULL, rr, j);
            const float* w[1] = {win_t + (long long)__shfl_sync(CFN_FULL, col, j) * hp};
            const float a[1] = {__shfl_sync(CFN_FULL, x, j)};
            if (rj != rcur) cfn_advance_row(acc, part, gw, &rcur, rj, hp, lane);
            cfn_axpy_rows<1>(acc, w, a, hp, lane);
        }
    }
    cfn_store_row(acc, cfn_slot(part, gw, rcur, hp), hp, lane);
    for (int r = rcur + 1; r <= rlast; ++r) cfn_zero_row(cfn_slot(part, gw, r, hp), hp, lane);
    if (!fuse) return;
    // Fused activation (every row of the batch has entries): the last warp to finish a row --
    // counted in rowdone[r] after a fence -- sums its partials in the fixed warp order
    // (cfn_row_total) and writes hout[r, :] exactly as cfn_hidden_act would.  Which warp does it
    // varies; the order of the sum does not, so the bits are the same on every run.
    __threadfence();                                             // this lane's partials are visible...
    __syncwarp();                                                // ...and so are every other lane's
    const float sc = coef[bh[2] * CFN_NCOEF];
    for (int r = rfirst; r <= rlast; ++r) {                      // warp-uniform
        const int b0 = boff[r], b1 = boff[r + 1];
        if (b1 <= b0) continue;
        if (!cfn_last_warp_of_row(rowdone, r, b0, b1, per, lane)) continue;
        __threadfence();
        for (int i = lane; i < hp; i += 32)
            hout[(size_t)r * hp + i] =
                i < h ? cfn_act_value(sc, cfn_row_total<true>(part, boff, r, per, hp, i), i, r, bias, sidew, side, brow, sdim)
                      : 0.f;
    }
}

// ------------------------------------------------------------------------------------------
// cfn_hidden_act  <<<any, any>>>   (grid-stride over rows x hp)
// Contract: for r < bh[0], i < h:  hout[r, i] = tanh(sc * z_ri + bias[i] + side[brow[r], :] . sidew[i, :])
// with z_ri = cfn_row_total(z, boff, r, per, hp, i) when `sparse` (z holds cfn_encode's warp
// partials; per from bh[1], total_warps and min_per_warp exactly as in cfn_encode), else
// z_ri = z[r, i] (a dense layer's product); sc = coef[bh[2]].s when use_scale, else 1.
// hout[r, i] = 0 for the padding i in [h, hp).  side/sidew may be dummies when sdim = 0.
extern "C" __global__ void
cfn_hidden_act(const int* __restrict__ bh, const float* __restrict__ coef, int use_scale,
               const float* __restrict__ z, int sparse, const int* __restrict__ boff, int total_warps,
               int min_per_warp, const float* __restrict__ bias, const float* __restrict__ sidew,
               const float* __restrict__ side, const int* __restrict__ brow, int sdim, int h, int hp,
               float* __restrict__ hout) {
    const int nrows = bh[0];
    const float sc = use_scale ? coef[bh[2] * CFN_NCOEF] : 1.f;
    const int per = cfn_per_warp(bh[1], total_warps, min_per_warp);
    const long long n = (long long)nrows * hp;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(idx / hp), i = (int)(idx % hp);
        float out = 0.f;
        if (i < h) {
            const float zi = sparse ? cfn_row_total(z, boff, r, per, hp, i) : z[idx];
            out = cfn_act_value(sc, zi, i, r, bias, sidew, side, brow, sdim);
        }
        hout[idx] = out;
    }
}

// ------------------------------------------------------------------------------------------
// cfn_output  <<<blocks, 32*wpb, wpb*hp*4 bytes>>>   (total_warps = blocks*wpb)
// Contract: for every known entry k = (r, c, x) of the batch (hidden or visible):
//   y_k = tanh(s * (hlast[r] . wout[c] + side[brow[r]] . sout[c] + bout[c]))   (W = s*V)
//   w_k = alpha if hidden else beta;  delta_k = 2 w_k (y_k - x)(1 - y_k^2)
// Warp ranges as in cfn_encode; warp gw writes
//   part[gw + r, :] = sum over entries k of row r in its range of delta_k * wout[c_k, :]   (unscaled)
//   lpart[gw]       = sum over its entries of w_k (y_k - x)^2                               (double)
// (cfn_hidden_delta reduces both in a fixed order).
// mode 0 (atomic scatter): edelta[k_local] = delta_k.
// mode 1 (segment scatter): tdelta[c*tld + r] = delta_k, tx[c*tld + r] = x if visible, and the
//   first entry of each column c in this batch (stamp[c] != bh[3]) appends c to touched.
extern "C" __global__ void CFN_BOUNDS_OUTPUT
cfn_output(const long long* __restrict__ ebase, const int* __restrict__ ecol_all, const float* __restrict__ ex_all,
           const int* __restrict__ erh_all, const int* __restrict__ bh, const int* __restrict__ brow,
           const float* __restrict__ coef, const float* __restrict__ hlast, int hp,
           const float* __restrict__ wout, const float* __restrict__ bout, const float* __restrict__ sout,
           const float* __restrict__ side, int sdim, float alpha, float beta,
           float* __restrict__ part, double* __restrict__ lpart, int mode, float* __restrict__ edelta,
           float* __restrict__ tdelta, float* __restrict__ tx, int tld, int* stamp, int* touched, int* ntouched,
           int min_per_warp, int fuse, int* __restrict__ rowdone, const int* __restrict__ boff,
           float* __restrict__ dout, int hdim, double* loss) {
    CFN_DYN_SMEM(float4, cfn_smem);
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int nnz = bh[1], tag = bh[3];
    const long long gw = (long long)blockIdx.x * wpb + wib;
    const int per = cfn_per_warp(nnz, gridDim.x * wpb, min_per_warp);
    int e0, e1;
    if (!cfn_warp_range(nnz, per, gw, &e0, &e1))
        return;
    const long long eb = *ebase;
    const int* ecol = ecol_all + eb;
    const float* ex = ex_all + eb;
    const int* erh = erh_all + eb;
    const float s = coef[bh[2] * CFN_NCOEF];
    float* acc = reinterpret_cast<float*>(cfn_smem) + (size_t)wib * hp;
    for (int c = lane * 4; c < hp; c += 128) cfn_st4(acc + c, cfn_zero4());
    const int rfirst = cfn_entry_row(erh, e0);
    int rcur = rfirst;
    double lsum = 0.0;
    for (int g = e0; g < e1; g += 32) {
        const int e = g + lane;
        int rr = 0, col = 0, hid = 0;
        float x = 0.f;
        if (e < e1) {
            const CfnEntry en = cfn_entry(ecol, ex, erh, e);
            rr = en.row;
            col = en.col;
            x = en.x;
            hid = en.hidden;
        }
        unsigned m = __ballot_sync(CFN_FULL, e < e1);
        float dmine = 0.f;
        while (m) {
            const int j = __ffs(m) - 1;
            m &= m - 1;
            const int rj = __shfl_sync(CFN_FULL, rr, j);
            const int cj = __shfl_sync(CFN_FULL, col, j);
            const float xj = __shfl_sync(CFN_FULL, x, j);
            const int hj = __shfl_sync(CFN_FULL, hid, j);
            if (rj != rcur) cfn_advance_row(acc, part, gw, &rcur, rj, hp, lane);
            const float* w = wout + (long long)cj * hp;
            const float* hr = hlast + (size_t)rj * hp;
            float4 v[CFN_RT];
            float dot = 0.f;
#pragma unroll
            for (int t = 0; t < CFN_RT; ++t) {
                const int c = t * 128 + lane * 4;
                if (c < hp) v[t] = cfn_ldg4(w + c);
            }
#pragma unroll
            for (int t = 0; t < CFN_RT; ++t) {
                const int c = t * 128 + lane * 4;
                if (c < hp) dot += cfn_dot4(v[t], cfn_ld4(hr + c));
            }
            for (int c = CFN_RT * 128 + lane * 4; c < hp; c += 128) dot += cfn_dot4(cfn_ldg4(w + c), cfn_ld4(hr + c));
            if (sdim > 0) {
                const float* sr = side + (long long)brow[rj] * sdim;
                const float* so = sout + (long long)cj * sdim;
                for (int q = lane; q < sdim; q += 32) dot += sr[q] * so[q];
            }
            const float tot = cfn_warp_sum(dot);
            const float y = tanhf(s * (tot + bout[cj]));
            const float wk = hj ? alpha : beta;
            const float res = y - xj;
            const float d = (2.f * wk * res) * (1.f - y * y);
#pragma unroll
            for (int t = 0; t < CFN_RT; ++t) {
                const int c = t * 128 + lane * 4;
                if (c < hp) cfn_st4(acc + c, cfn_axpy4(d, v[t], cfn_ld4(acc + c)));
            }
            for (int c = CFN_RT * 128 + lane * 4; c < hp; c += 128)
                cfn_st4(acc + c, cfn_axpy4(d, cfn_ldg4(w + c), cfn_ld4(acc + c)));
            if (lane == 0) lsum += (double)wk * (double)res * (double)res;
            if (lane == j) dmine = d;                            // each lane keeps its own entry's delta
        }
        // Bookkeeping of the scatter, one entry per lane after the loop (no lane-0 atomics inside
        // it for the next shuffle to wait on): the deltas, and in segment mode the columns touched
        // for the first time in this batch, appended with ONE atomicAdd per warp (ballot + popc).
        if (mode == 0) {
            if (e < e1) edelta[e] = dmine;
        } else {
            int fresh = 0;
            if (e < e1) {
                const long long ti = (long long)col * tld + rr;
                tdelta[ti] = dmine;
                if (!hid) tx[ti] = x;
                fresh = atomicExch(stamp + col, tag) != tag;     // exactly one entry per column wins
            }
            const unsigned fm = __ballot_sync(CFN_FULL, fresh);
            int base = 0;
            if (lane == 0 && fm) base = atomicAdd(ntouched, __popc(fm));
            base = __shfl_sync(CFN_FULL, base, 0);
            if (fresh) touched[base + __popc(fm & ((1u << lane) - 1u))] = col;
        }
    }
    cfn_store_row(acc, cfn_slot(part, gw, rcur, hp), hp, lane);
    const int rlast = cfn_entry_row(erh, e1 - 1);
    for (int r = rcur + 1; r <= rlast; ++r) cfn_zero_row(cfn_slot(part, gw, r, hp), hp, lane);
    if (lane == 0) lpart[gw] = lsum;
    if (!fuse) return;
    // Fused cfn_hidden_delta (every row of the batch has entries; rowdone[0 .. rows] zeroed by
    // cfn_batch_setup, rowdone[rows] counting all warps): the last warp to finish a row computes
    // its deltas, the last warp of all the batch loss, both in the fixed orders of
    // cfn_hidden_delta -- the same bits.
    __threadfence();                                             // this lane's partials are visible...
    __syncwarp();                                                // ...and so are every other lane's
    const int nrows = bh[0];
    for (int r = rfirst; r <= rlast; ++r) {                      // warp-uniform
        const int b0 = boff[r], b1 = boff[r + 1];
        if (b1 <= b0) continue;
        if (!cfn_last_warp_of_row(rowdone, r, b0, b1, per, lane)) continue;
        __threadfence();
        for (int i = lane; i < hp; i += 32) {
            float d = 0.f;
            if (i < hdim) {
                const float hv = hlast[(size_t)r * hp + i];
                d = (s * cfn_row_total<true>(part, boff, r, per, hp, i)) * (1.f - hv * hv);
            }
            dout[(size_t)r * hp + i] = d;
        }
    }
    const int active = (int)cfn_lmin((long long)gridDim.x * wpb, ((long long)nnz + per - 1) / per);
    int last = 0;
    if (lane == 0) last = atomicAdd(rowdone + nrows, 1) == active - 1;
    if (__shfl_sync(CFN_FULL, last, 0)) {
        __threadfence();
        double v = 0.0;
        for (int w = lane; w < active; w += 32) v += cfn_load_l2(lpart + w);
        v = cfn_warp_sum_d(v);
        if (lane == 0) *loss += v;
    }
}

// ------------------------------------------------------------------------------------------
// cfn_hidden_delta  <<<any, any>>>   (grid-stride over rows x hp)
// Contract: for r < bh[0], i < hdim:  dout[r, i] = sc * a_ri * (1 - h[r, i]^2), where
// a_ri = cfn_row_total(acc, boff, r, per, hp, i) when `sparse` (acc holds cfn_output's warp
// partials; per from bh[1], total_warps, min_per_warp as in cfn_output), else acc[r, i] (a dense
// layer's product); sc = coef.s when use_scale (the layer above is lazily scaled), else 1;
// dout = 0 on the padding i >= hdim.
// When lpart is used (reduce_loss), block 0 adds the batch loss, the sum of lpart over the
// active warps of cfn_output in a fixed order, to *loss.
extern "C" __global__ void
cfn_hidden_delta(const int* __restrict__ bh, const float* __restrict__ coef, int use_scale,
                 const float* __restrict__ acc, int sparse, const int* __restrict__ boff, int total_warps,
                 int min_per_warp, const float* __restrict__ h, float* __restrict__ dout, int hdim, int hp,
                 int reduce_loss, const double* __restrict__ lpart, double* loss) {
    const int nrows = bh[0], nnz = bh[1];
    const float sc = use_scale ? coef[bh[2] * CFN_NCOEF] : 1.f;
    const int per = cfn_per_warp(nnz, total_warps, min_per_warp);
    if (reduce_loss && blockIdx.x == 0 && threadIdx.x < 32) {      // one full warp
        const int active = (int)cfn_lmin((long long)total_warps, ((long long)nnz + per - 1) / per);
        double v = 0.0;
        for (int w = threadIdx.x; w < active; w += 32) v += lpart[w];
        v = cfn_warp_sum_d(v);
        if (threadIdx.x == 0) *loss += v;
    }
    const long long n = (long long)nrows * hp;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(idx / hp), i = (int)(idx % hp);
        float d = 0.f;
        if (i < hdim) {
            const float a = sparse ? cfn_row_total(acc, boff, r, per, hp, i) : acc[idx];
            const float hv = h[idx];
            d = (sc * a) * (1.f - hv * hv);
        }
        dout[idx] = d;
    }
}

// ------------------------------------------------------------------------------------------
// cfn_bias_side  <<<any, any>>>
// Contract: one SGD step (coef: eta_dense, shrink; raw gradient with eta = -1, shrink = 1 on
// zeroed targets) of a dense layer's bias and side weight from the deltas d (rows x hp) of its
// units: bias[i] <- shrink*bias[i] - eta*sum_r d[r, i], sidew[i, :] likewise with d[r, i]*side[brow[r], :].
extern "C" __global__ void
cfn_bias_side(const int* __restrict__ bh, const float* __restrict__ coef, const float* __restrict__ d, int hdim,
              int hp, const int* __restrict__ brow, const float* __restrict__ side, int sdim, float* bias,
              float* sidew) {
    cfn_bias_side_step(bh[0], coef + bh[2] * CFN_NCOEF, d, hdim, hp, brow, side, sdim, bias, sidew);
}

// ------------------------------------------------------------------------------------------
// cfn_scatter_atomic  <<<blocks, 32*wpb>>>
// Contract (eta = coef.eta_lazy; every known entry k = (r, c, x) with delta_k = edelta[k]):
//   wout_t[c, :] -= eta * delta_k * hlast[r, :];  bout_t[c] -= eta * delta_k;
//   sout_t[c, :] -= eta * delta_k * side[brow[r], :];
//   win_t[c, :]  -= eta * x * d1[r, :]            visible entries only
// with device-scope float atomics (16-byte vector atomics on sm_90): fast, but the order of the
// additions varies from run to run (not bit-reproducible).  In training the targets are the
// lazily scaled V arrays (eta = lr/B / s_new); for raw gradients zeroed buffers and eta = -1.
// Also takes the step of the first layer's dense bias and side weight (cfn_bias_side_step on d1).
extern "C" __global__ void CFN_BOUNDS_ATOMIC
cfn_scatter_atomic(const long long* __restrict__ ebase, const int* __restrict__ ecol_all,
                   const float* __restrict__ ex_all, const int* __restrict__ erh_all, const int* __restrict__ bh,
                   const int* __restrict__ brow, const float* __restrict__ coef, const float* __restrict__ hlast, int hpl,
                   const float* __restrict__ d1, int h1, int hp1, const float* __restrict__ edelta,
                   const float* __restrict__ side, int sdim, float* wout_t, float* bout_t, float* sout_t,
                   float* win_t, float* bin_t, float* sin_t, int min_per_warp) {
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int nrows = bh[0], nnz = bh[1];
    const float* cf = coef + bh[2] * CFN_NCOEF;
    cfn_bias_side_step(nrows, cf, d1, h1, hp1, brow, side, sdim, bin_t, sin_t);
    int e0, e1;
    if (!cfn_warp_range(nnz, cfn_per_warp(nnz, gridDim.x * wpb, min_per_warp), (long long)blockIdx.x * wpb + wib,
                        &e0, &e1))
        return;
    const float eta = cf[1];
    const long long eb = *ebase;
    const int* ecol = ecol_all + eb;
    const float* ex = ex_all + eb;
    const int* erh = erh_all + eb;
    for (int g = e0; g < e1; g += 32) {
        const int e = g + lane;
        int rr = 0, col = 0, hid = 1;
        float x = 0.f, dl = 0.f;
        if (e < e1) {
            const CfnEntry en = cfn_entry(ecol, ex, erh, e);
            rr = en.row;
            col = en.col;
            x = en.x;
            hid = en.hidden;
            dl = edelta[e];
        }
        unsigned m = __ballot_sync(CFN_FULL, e < e1);
        while (m) {
            const int j = __ffs(m) - 1;
            m &= m - 1;
            const int rj = __shfl_sync(CFN_FULL, rr, j);
            const int cj = __shfl_sync(CFN_FULL, col, j);
            const float xj = __shfl_sync(CFN_FULL, x, j);
            const int hj = __shfl_sync(CFN_FULL, hid, j);
            const float a = -eta * __shfl_sync(CFN_FULL, dl, j);
            if (a != 0.f) {
                float* w = wout_t + (long long)cj * hpl;
                const float* hr = hlast + (size_t)rj * hpl;
                for (int c = lane * 4; c < hpl; c += 128) {
                    const float4 hv = cfn_ld4(hr + c);
                    cfn_atomic_add4(w + c, make_float4(a * hv.x, a * hv.y, a * hv.z, a * hv.w));
                }
                if (lane == 0) atomicAdd(bout_t + cj, a);
                if (sdim > 0) {
                    const float* sr = side + (long long)brow[rj] * sdim;
                    for (int q = lane; q < sdim; q += 32) atomicAdd(sout_t + (long long)cj * sdim + q, a * sr[q]);
                }
            }
            const float b = -eta * xj;
            if (!hj && b != 0.f) {
                float* w = win_t + (long long)cj * hp1;
                const float* dr = d1 + (size_t)rj * hp1;
                for (int c = lane * 4; c < hp1; c += 128) {
                    const float4 dv = cfn_ld4(dr + c);
                    cfn_atomic_add4(w + c, make_float4(b * dv.x, b * dv.y, b * dv.z, b * dv.w));
                }
            }
        }
    }
}

// w[0:hp) -= eta * sum over the set bits j of mask of coef_j * rows[j*hp .. ]  (coef_j = shuffle of
// the lane value v from lane j).  The gradient tiles are summed in registers first, then every
// tile of w is loaded before the first store: one memory latency per row instead of one per tile.
__device__ __forceinline__ void cfn_segment_update(float* w, const float* __restrict__ rows, int hp, unsigned mask,
                                                   float v, float eta, int lane) {
    float4 g[CFN_RT];
#pragma unroll
    for (int t = 0; t < CFN_RT; ++t) g[t] = cfn_zero4();
    unsigned mm = mask;
    while (mm) {                                                 // warp-uniform
        const int j = __ffs(mm) - 1;
        mm &= mm - 1;
        const float cj = __shfl_sync(CFN_FULL, v, j);
        const float* row = rows + (size_t)j * hp;
#pragma unroll
        for (int t = 0; t < CFN_RT; ++t) {
            const int c = t * 128 + lane * 4;
            if (c < hp) g[t] = cfn_axpy4(cj, cfn_ld4(row + c), g[t]);
        }
    }
    float4 cur[CFN_RT];
#pragma unroll
    for (int t = 0; t < CFN_RT; ++t) {
        const int c = t * 128 + lane * 4;
        if (c < hp) cur[t] = cfn_ld4(w + c);
    }
#pragma unroll
    for (int t = 0; t < CFN_RT; ++t) {
        const int c = t * 128 + lane * 4;
        if (c < hp) cfn_st4(w + c, cfn_axpy4(-eta, g[t], cur[t]));
    }
    for (int cb = CFN_RT * 128; cb < hp; cb += 128) {               // widths beyond the register tiles
        const int c = cb + lane * 4;
        float4 gt = cfn_zero4();
        unsigned m2 = mask;
        while (m2) {
            const int j = __ffs(m2) - 1;
            m2 &= m2 - 1;
            const float cj = __shfl_sync(CFN_FULL, v, j);
            if (c < hp) gt = cfn_axpy4(cj, cfn_ld4(rows + (size_t)j * hp + c), gt);
        }
        if (c < hp) cfn_st4(w + c, cfn_axpy4(-eta, gt, cfn_ld4(w + c)));
    }
}

// ------------------------------------------------------------------------------------------
// cfn_scatter_segment  <<<blocks, 32*wpb>>>
// Contract: the same updates as cfn_scatter_atomic, without atomics and in a fixed order: one
// warp owns each touched column c (touched[0 .. *ntouched)), reads its segment of the batch
// from the column-bucketed tables tdelta[c*tld + r], tx[c*tld + r] (r < bh[0], ascending), sums
// the contributions of the segment and updates the rows of c once; then clears the tables'
// segment.  Deterministic (no float atomics): the same bits on every run.
// Also takes the step of the first layer's dense bias and side weight (cfn_bias_side_step on d1).
extern "C" __global__ void CFN_BOUNDS_SEGMENT
cfn_scatter_segment(const int* __restrict__ bh, const int* __restrict__ brow, const float* __restrict__ coef,
                    const float* __restrict__ hlast, int hpl, const float* __restrict__ d1, int h1, int hp1,
                    const float* __restrict__ side, int sdim, float* tdelta, float* tx, int tld,
                    const int* __restrict__ touched, const int* __restrict__ ntouched,
                    float* wout_t, float* bout_t, float* sout_t, float* win_t, float* bin_t, float* sin_t) {
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int nrows = bh[0];
    const int n = *ntouched;
    const float* cf = coef + bh[2] * CFN_NCOEF;
    cfn_bias_side_step(nrows, cf, d1, h1, hp1, brow, side, sdim, bin_t, sin_t);
    const float eta = cf[1];
    const int total_warps = gridDim.x * wpb;
    for (int slot = blockIdx.x * wpb + wib; slot < n; slot += total_warps) {   // warp-uniform
        const int c = touched[slot];
        float* td = tdelta + (long long)c * tld;
        float* tv = tx + (long long)c * tld;
        for (int rb = 0; rb < nrows; rb += 32) {
            const int r = rb + lane;
            const float dr = r < nrows ? td[r] : 0.f;
            const float xr = r < nrows ? tv[r] : 0.f;
            const unsigned md = __ballot_sync(CFN_FULL, dr != 0.f);
            const unsigned mx = __ballot_sync(CFN_FULL, xr != 0.f);
            if (md) {
                // output layer row c:  -= eta * sum_r delta_r * hlast[r]
                cfn_segment_update(wout_t + (long long)c * hpl, hlast + (size_t)rb * hpl, hpl, md, dr, eta, lane);
                const float db = cfn_warp_sum(dr);
                if (lane == 0) bout_t[c] -= eta * db;
                for (int qb = 0; qb < sdim; qb += 32) {
                    const int q = qb + lane;
                    float gs = 0.f;
                    unsigned mm = md;
                    while (mm) {
                        const int j = __ffs(mm) - 1;
                        mm &= mm - 1;
                        const float dj = __shfl_sync(CFN_FULL, dr, j);
                        if (q < sdim) gs += dj * side[(long long)brow[rb + j] * sdim + q];
                    }
                    if (q < sdim) sout_t[(long long)c * sdim + q] -= eta * gs;
                }
            }
            if (mx) {
                // input layer row c:  -= eta * sum_r x_r * d1[r]   (visible entries)
                cfn_segment_update(win_t + (long long)c * hp1, d1 + (size_t)rb * hp1, hp1, mx, xr, eta, lane);
            }
            if (r < nrows) {
                td[r] = 0.f;
                tv[r] = 0.f;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// cfn_scale  <<<any, any>>>
// Contract: a[i] *= s for i < n (folds the lazy scale into V; also used by inference helpers).
extern "C" __global__ void
cfn_scale(float* a, long long n, float s) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        a[i] *= s;
}
