"""The CUDA shim of the host emulation: C++ compiled with g++ around the real kernel source.

``EMU_HEADER`` goes before the kernels (CUDA types, builtins, warp collectives and barriers, each
GPU thread an OS thread); ``EMU_RUNTIME`` after them (block scheduling: shuffled, several at a
time; error reporting).  See :mod:`cuda_emulator` for what the emulation checks.
"""
from __future__ import annotations

__all__ = ["EMU_HEADER", "EMU_RUNTIME"]

EMU_HEADER = r"""
// CUDA shim for running cfn_fast's kernels on the host (one OS thread per GPU thread).
#include <cstdint>
#include <cstring>
#include <cmath>
#include <thread>
#include <mutex>
#include <condition_variable>
#include <vector>
#include <memory>
#include <atomic>
#include <string>
#include <functional>
#include <algorithm>
#include <random>
#include <cstdlib>
#define CFN_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct alignas(16) float4 { float x, y, z, w; };   // as on the device: 16-byte vector type
struct float2 { float x, y; };
struct dim3 { unsigned x, y, z; };
inline float4 make_float4(float x, float y, float z, float w) { float4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
void* cfn_emu_dynamic_smem();
unsigned long long cfn_emu_exchange(unsigned long long v, unsigned mask, int site);
const unsigned long long* cfn_emu_values();
void cfn_emu_syncthreads(int site);
void cfn_emu_atomic_lock();
void cfn_emu_atomic_unlock();
void cfn_emu_check_aligned16(const void* p, int site);
#define __syncthreads() cfn_emu_syncthreads(__LINE__)
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class T> inline unsigned long long cfn_emu_bits(T v) { unsigned long long b = 0; std::memcpy(&b, &v, sizeof(T)); return b; }
template <class T> inline T cfn_emu_from(unsigned long long b) { T v; std::memcpy(&v, &b, sizeof(T)); return v; }
// every collective carries its call site: lanes meeting at different collectives is an error
template <class T> inline T cfn_emu_shfl(unsigned mask, T v, int src, int site) {
    cfn_emu_exchange(cfn_emu_bits(v), mask, site); return cfn_emu_from<T>(cfn_emu_values()[src & 31]); }
template <class T> inline T cfn_emu_shfl_xor(unsigned mask, T v, int o, int site) {
    cfn_emu_exchange(cfn_emu_bits(v), mask, site); return cfn_emu_from<T>(cfn_emu_values()[(threadIdx.x & 31) ^ o]); }
template <class T> inline T cfn_emu_shfl_up(unsigned mask, T v, int d, int site) {
    cfn_emu_exchange(cfn_emu_bits(v), mask, site); int lane = threadIdx.x & 31;
    return lane >= d ? cfn_emu_from<T>(cfn_emu_values()[lane - d]) : v; }
inline unsigned cfn_emu_ballot(unsigned mask, int pred, int site) {
    cfn_emu_exchange(pred ? 1ull : 0ull, mask, site); const unsigned long long* v = cfn_emu_values();
    unsigned r = 0; for (int i = 0; i < 32; ++i) if (v[i]) r |= 1u << i; return r; }
#define __shfl_sync(m, v, s) cfn_emu_shfl(m, v, s, __LINE__)
#define __shfl_xor_sync(m, v, o) cfn_emu_shfl_xor(m, v, o, __LINE__)
#define __shfl_up_sync(m, v, d) cfn_emu_shfl_up(m, v, d, __LINE__)
#define __ballot_sync(m, p) cfn_emu_ballot(m, p, __LINE__)
#define __any_sync(m, p) (cfn_emu_ballot(m, p, __LINE__) != 0u)
#define __all_sync(m, p) (cfn_emu_ballot(m, p, __LINE__) == 0xffffffffu)
#define __syncwarp(...) cfn_emu_exchange(0, 0xffffffffu, __LINE__)
inline int __ffs(unsigned x) { return x ? __builtin_ctz(x) + 1 : 0; }
inline int __ffs(int x) { return __ffs((unsigned)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T atomicAdd(T* p, T v) { cfn_emu_atomic_lock(); T o = *p; *p = o + v; cfn_emu_atomic_unlock(); return o; }
inline int atomicExch(int* p, int v) { cfn_emu_atomic_lock(); int o = *p; *p = v; cfn_emu_atomic_unlock(); return o; }
inline int atomicCAS(int* p, int c, int v) { cfn_emu_atomic_lock(); int o = *p; if (o == c) *p = v; cfn_emu_atomic_unlock(); return o; }
// sm_90's 16-byte vector atomic (compiled with --arch 900): needs a 16-byte aligned address
inline float4 atomicAdd(float4* p, float4 v) {
    cfn_emu_check_aligned16(p, __LINE__); cfn_emu_atomic_lock(); float4 o = *p;
    p->x = o.x + v.x; p->y = o.y + v.y; p->z = o.z + v.z; p->w = o.w + v.w; cfn_emu_atomic_unlock(); return o; }
"""

EMU_RUNTIME = r"""
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
namespace {
struct Abort {};
struct Barrier {
    std::mutex m; std::condition_variable cv; int arrived = 0; long gen = 0; int exited = 0;
    unsigned long long vals[2][32]; int site[2];
};
// one running block: its warps' and its own barrier, its dynamic shared memory (16-byte aligned)
struct Block {
    std::vector<std::unique_ptr<Barrier>> warps;
    Barrier block;
    std::vector<unsigned char> smem;
    unsigned char* smem_base = nullptr;
};
std::vector<Block*> g_running;
std::mutex g_atomic, g_err_m, g_running_m;
std::atomic<bool> g_poison(false);
std::string g_error;
thread_local const unsigned long long* t_vals = nullptr;
thread_local Block* t_block = nullptr;
unsigned long long g_launch = 0;

void poison_all() {
    g_poison = true;
    std::lock_guard<std::mutex> lk(g_running_m);
    for (Block* b : g_running) {
        for (auto& w : b->warps) { std::lock_guard<std::mutex> l2(w->m); w->cv.notify_all(); }
        std::lock_guard<std::mutex> l3(b->block.m); b->block.cv.notify_all();
    }
}
[[noreturn]] void fail(const std::string& msg) {
    { std::lock_guard<std::mutex> lk(g_err_m);
      if (g_error.empty()) g_error = msg + " (block " + std::to_string(blockIdx.x) + ", thread " + std::to_string(threadIdx.x) + ")"; }
    poison_all();
    throw Abort();
}
// all `count` members arrive; values deposited in vals[gen & 1]
const unsigned long long* arrive(Barrier& b, int count, int slot, unsigned long long v, int site, const char* what) {
    std::unique_lock<std::mutex> lk(b.m);
    if (g_poison) throw Abort();
    if (b.exited) { lk.unlock(); fail(std::string(what) + " reached after a thread of the group exited"); }
    long g = b.gen;
    if (slot >= 0) b.vals[g & 1][slot] = v;
    if (b.arrived == 0) b.site[g & 1] = site;
    else if (b.site[g & 1] != site) {
        lk.unlock();
        fail(std::string(what) + ": threads met at different call sites (lines " + std::to_string(b.site[g & 1])
             + " and " + std::to_string(site) + ")");
    }
    if (++b.arrived == count) { b.arrived = 0; b.gen++; b.cv.notify_all(); }
    else {
        b.cv.wait(lk, [&] { return b.gen != g || g_poison.load() || b.exited; });
        if (g_poison) throw Abort();
        if (b.gen == g) { lk.unlock(); fail(std::string(what) + ": another thread of the group exited instead of arriving"); }
    }
    return b.vals[g & 1];
}
void thread_exit() {
    Barrier& w = *t_block->warps[threadIdx.x >> 5];
    { std::lock_guard<std::mutex> lk(w.m); w.exited++; w.cv.notify_all(); }
    { std::lock_guard<std::mutex> lk(t_block->block.m); t_block->block.exited++; t_block->block.cv.notify_all(); }
}
int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return (v && *v) ? std::atoi(v) : fallback;
}
}  // namespace

void* cfn_emu_dynamic_smem() { return t_block->smem_base; }
unsigned long long cfn_emu_exchange(unsigned long long v, unsigned mask, int site) {
    if (mask != 0xffffffffu) fail("warp collective with a partial mask");
    t_vals = arrive(*t_block->warps[threadIdx.x >> 5], 32, threadIdx.x & 31, v, site, "warp collective");
    return 0;
}
const unsigned long long* cfn_emu_values() { return t_vals; }
void cfn_emu_syncthreads(int site) { arrive(t_block->block, (int)blockDim.x, -1, 0, site, "__syncthreads"); }
void cfn_emu_atomic_lock() { g_atomic.lock(); }
void cfn_emu_atomic_unlock() { g_atomic.unlock(); }
void cfn_emu_check_aligned16(const void* p, int site) {
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
        fail("misaligned 16-byte vector access at line " + std::to_string(site));
}

extern "C" const char* cfn_emu_error() { return g_error.c_str(); }

// Blocks run in a shuffled order (seed CFN_EMU_SEED, a new order every launch) and CFN_EMU_CONCURRENT
// of them at a time (default 4; threads of different blocks interleave freely), so a kernel whose
// result depends on block order, or whose blocks race on the same data, shows it.  Static
// __shared__ variables are one object per process: only single-block kernels may use them.
int cfn_emu_launch(unsigned gx, unsigned bx, unsigned long long smem, const std::function<void()>& body) {
    g_error.clear();
    g_poison = false;
    if (gx == 0 || bx == 0 || bx > 1024 || bx % 32) { g_error = "bad launch configuration"; return 1; }
    blockDim = dim3{bx, 1, 1};
    gridDim = dim3{gx, 1, 1};
    std::vector<unsigned> order(gx);
    for (unsigned b = 0; b < gx; ++b) order[b] = b;
    std::mt19937_64 rng((unsigned long long)env_int("CFN_EMU_SEED", 1) * 0x9E3779B97F4A7C15ULL + (++g_launch));
    std::shuffle(order.begin(), order.end(), rng);
    const unsigned together = (unsigned)std::max(1, env_int("CFN_EMU_CONCURRENT", 4));
    for (unsigned first = 0; first < gx && !g_poison; first += together) {
        const unsigned n = std::min(together, gx - first);
        std::vector<std::unique_ptr<Block>> blocks;
        for (unsigned i = 0; i < n; ++i) {
            std::unique_ptr<Block> blk(new Block());
            for (unsigned w = 0; w < bx / 32; ++w) blk->warps.emplace_back(new Barrier());
            blk->smem.assign((size_t)smem + 32, 0xFF);          // uninitialised shared memory reads as NaN
            std::uintptr_t a = reinterpret_cast<std::uintptr_t>(blk->smem.data());
            blk->smem_base = blk->smem.data() + ((16 - a % 16) % 16);
            blocks.push_back(std::move(blk));
        }
        { std::lock_guard<std::mutex> lk(g_running_m); g_running.clear();
          for (auto& blk : blocks) g_running.push_back(blk.get()); }
        std::vector<std::thread> threads;
        threads.reserve((size_t)n * bx);
        for (unsigned i = 0; i < n; ++i) {
            Block* blk = blocks[i].get();
            const unsigned b = order[first + i];
            for (unsigned t = 0; t < bx; ++t) {
                threads.emplace_back([=, &body] {
                    threadIdx = dim3{t, 0, 0};
                    blockIdx = dim3{b, 0, 0};
                    t_block = blk;
                    try { body(); } catch (Abort&) {} catch (...) {
                        { std::lock_guard<std::mutex> lk(g_err_m); if (g_error.empty()) g_error = "C++ exception"; }
                        poison_all(); }
                    thread_exit();
                });
            }
        }
        for (auto& th : threads) th.join();
        { std::lock_guard<std::mutex> lk(g_running_m); g_running.clear(); }
    }
    return g_poison ? 1 : 0;
}
"""
