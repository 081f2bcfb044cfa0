// cfn_infer.cu -- inference kernels of the CUDA engine (encoding reuses cfn_encode and
// cfn_hidden_act of cfn_train.cu with threshold 0, i.e. the full uncorrupted input).
#include "cfn_common.cuh"

// ------------------------------------------------------------------------------------------
// cfn_predict_pairs  <<<blocks, 32*wpb>>>
// Contract: one warp per pair p < npairs (grid-stride), r = prow[p] (row of codes and pside),
// c = pcol[p] (output unit):
//   out[p] = tanh(scale * (codes[r, :] . wout[c, :] + pside[r, :] . sout[c, :] + bout[c]))
// codes is rows x hp (last hidden layer, padding 0), wout n_outputs x hp, sout n_outputs x sdim
// (W = scale * V as in training).  pside may be a dummy when sdim = 0.
extern "C" __global__ void
cfn_predict_pairs(const float* __restrict__ codes, int hp, const int* __restrict__ prow,
                  const int* __restrict__ pcol, long long npairs, const float* __restrict__ wout,
                  const float* __restrict__ bout, const float* __restrict__ sout, const float* __restrict__ pside,
                  int sdim, float scale, float* __restrict__ out) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    const long long total_warps = (long long)gridDim.x * wpb;
    for (long long p = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); p < npairs; p += total_warps) {
        const int r = prow[p], c = pcol[p];
        const float* hr = codes + (long long)r * hp;
        const float* w = wout + (long long)c * hp;
        float part = 0.f;
        for (int k = lane * 4; k < hp; k += 128) part += cfn_dot4(cfn_ld4(hr + k), cfn_ldg4(w + k));
        if (sdim > 0) {
            const float* sr = pside + (long long)r * sdim;
            const float* so = sout + (long long)c * sdim;
            for (int q = lane; q < sdim; q += 32) part += sr[q] * so[q];
        }
        const float tot = cfn_warp_sum(part);
        if (lane == 0) out[p] = tanhf(scale * (tot + bout[c]));
    }
}
