"""CUDA engine vs the NumPy reference on fresh random data: gradients, SGD steps, epochs, inference.

    python bench/gpu_numeric_check.py              # on a GPU (CuPy)
    python bench/gpu_numeric_check.py --emulate    # no GPU: the same kernels, compiled for the host

Every output of every check must satisfy ||cuda - ref|| / ||ref|| < 1e-4 (the loss to 1e-5);
exit status 1 otherwise.

``--emulate`` runs the *real* kernel source (kernels/cuda/*.cu, exactly what CuPy compiles) on the
CPU: g++ builds it against a small CUDA shim that runs every GPU thread as an OS thread, with warp
collectives (__shfl_sync, __ballot_sync, ...) and __syncthreads as barriers, so divergent
collectives deadlock-detect as errors.  A fake ``cupy`` module stands in for CuPy: its arrays are
NumPy arrays with guard bytes (out-of-bounds writes are reported), its RawKernel checks that every
argument has exactly the C type of the kernel parameter (np.int32 for ``int``, float32 arrays for
``float*``, ...), and stream capture records kernel launches only (anything else inside a capture
is an error) and replays them from the graph, with their arguments frozen, as CUDA graphs do.
It is slow (threads, not a GPU): use tiny problems.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import weakref
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-5


# ============================================================================ host emulation of the kernels
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

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:(?:__launch_bounds__\([^)]*\)|CFN_BOUNDS_\w*)\s+)?(\w+)\s*\(([^)]*)\)\s*\{',
                        re.S)
_SCALAR = {"int": np.int32, "unsigned int": np.uint32, "long long": np.int64, "unsigned long long": np.uint64,
           "float": np.float32, "double": np.float64}


def _parse_params(params: str) -> list[tuple[str, str, bool]]:
    """``[(c_type_for_cast, base_type, is_pointer)]`` of a kernel's parameter list."""
    out = []
    for raw in params.split(","):
        text = " ".join(raw.replace("__restrict__", " ").split())
        pointer = "*" in text
        decl = text.rsplit("*", 1)[0] + "*" if pointer else " ".join(text.split()[:-1])
        base = decl.replace("const", " ").replace("*", " ")
        base = " ".join(base.split())
        if base not in _SCALAR:
            raise ValueError(f"unsupported kernel parameter type in {raw!r}")
        out.append((decl, base, pointer))
    return out


def build_emulator(source: str, workdir: Path, arch: int = 0) -> tuple[ctypes.CDLL, dict[str, list]]:
    """Compile the kernel source for the host; returns the library and each kernel's parameters.

    ``arch`` (e.g. 900) defines ``__CUDA_ARCH__`` so that the code paths of that architecture are
    the ones compiled (sm_90's vector atomics run on the shim's ``atomicAdd(float4*, float4)``).
    """
    kernels = {m.group(1): _parse_params(m.group(2)) for m in _SIGNATURE.finditer(source)}
    wrappers = []
    for name, params in kernels.items():
        args = ", ".join(f"*({decl}*)a[{i}]" for i, (decl, _, _) in enumerate(params))
        wrappers.append(f'extern "C" int emu_{name}(unsigned gx, unsigned bx, unsigned long long smem, void** a) {{\n'
                        f'    return cfn_emu_launch(gx, bx, smem, [a] {{ {name}({args}); }});\n}}')
    arch_line = f"#define __CUDA_ARCH__ {int(arch)}\n" if arch else ""
    text = (arch_line + EMU_HEADER + "\nint cfn_emu_launch(unsigned, unsigned, unsigned long long, const std::function<void()>&);\n"
            + source + "\n" + EMU_RUNTIME + "\n" + "\n".join(wrappers) + "\n")
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    lib_path = workdir / f"cfn_emu_{digest}.so"
    if not lib_path.exists():
        src = workdir / f"cfn_emu_{digest}.cpp"
        src.write_text(text)
        tmp = lib_path.with_name(f".{lib_path.name}.{os.getpid()}")
        cmd = ["g++", "-std=c++17", "-O1", "-g", "-pthread", "-fPIC", "-shared", "-w", str(src), "-o", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("host compilation of the CUDA kernels failed:\n" + result.stderr[-6000:])
        os.replace(tmp, lib_path)                       # atomic: parallel builds never see half a library
    lib = ctypes.CDLL(str(lib_path))
    lib.cfn_emu_error.restype = ctypes.c_char_p
    for name in kernels:
        fn = getattr(lib, f"emu_{name}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p)]
    return lib, kernels


class EmulationError(RuntimeError):
    pass


class _State:
    capture: list | None = None
    guarded: list = []          # (weakref to buffer, pad) of guarded allocations
    launches = 0


class FakeArray(np.ndarray):
    """A device array of the fake CuPy: a NumPy array with .get()/.set()."""

    def get(self, stream=None, out=None):
        _no_capture("ndarray.get")
        return np.array(self, copy=True)

    def set(self, arr, stream=None):
        _no_capture("ndarray.set")
        arr = np.asarray(arr)
        if not self.flags.c_contiguous:
            raise EmulationError("set() on a non-contiguous device array")
        if arr.dtype != self.dtype or arr.shape != self.shape:
            raise EmulationError(f"set(): {arr.dtype}{arr.shape} into {self.dtype}{self.shape}")
        np.ndarray.__setitem__(self, Ellipsis, arr)

    def fill(self, value):
        _no_capture("ndarray.fill")
        np.ndarray.fill(self, value)

    def copy(self, order="C"):
        _no_capture("ndarray.copy")
        out = _alloc(self.shape, self.dtype)
        np.copyto(out, self)
        return out


_PAD = 4096
_CANARY = 0xA5


def _alloc(shape, dtype) -> FakeArray:
    shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 2 * _PAD + 256, dtype=np.uint8)
    skip = (-raw.ctypes.data) % 256                    # CuPy's pool hands out 256-byte aligned blocks
    buf = raw[skip:skip + nbytes + 2 * _PAD]
    buf[:_PAD] = _CANARY
    buf[_PAD + nbytes:] = _CANARY
    arr = buf[_PAD:_PAD + nbytes].view(dtype).reshape(shape).view(FakeArray)
    _State.guarded.append((weakref.ref(raw), (skip, nbytes)))
    return arr


def check_guards() -> None:
    alive = []
    for ref, (skip, nbytes) in _State.guarded:
        raw = ref()
        if raw is None:
            continue
        alive.append((ref, (skip, nbytes)))
        buf = raw[skip:skip + nbytes + 2 * _PAD]
        if not (np.all(buf[:_PAD] == _CANARY) and np.all(buf[_PAD + nbytes:] == _CANARY)):
            raise EmulationError(f"out-of-bounds write next to a device array of {nbytes} bytes")
    _State.guarded = alive


def _no_capture(what: str) -> None:
    if _State.capture is not None:
        raise EmulationError(f"{what} inside a CUDA graph capture (only kernel launches may be captured)")


#: registers per thread of each kernel, as ptxas reports them for the emulated device (tests set it
#: from ``nvcc -Xptxas -v``; env CFN_EMU_KERNEL_REGS as JSON); the engine sizes its grids from them
KERNEL_REGS: dict[str, int] = {}
DEFAULT_REGS = 64


class FakeKernel:
    def __init__(self, lib, name: str, params: list) -> None:
        self.name, self.params = name, params
        self._fn = getattr(lib, f"emu_{name}")
        self._lib = lib
        self.max_dynamic_shared_size_bytes = 48 * 1024
        regs = KERNEL_REGS.get(name) or json.loads(os.environ.get("CFN_EMU_KERNEL_REGS", "{}")).get(name, DEFAULT_REGS)
        self.attributes = {"num_regs": int(regs), "shared_size_bytes": 0, "local_size_bytes": 0,
                           "max_threads_per_block": 1024}
        self.num_regs = int(regs)

    def __call__(self, grid, block, args, *, shared_mem=0):
        if not (isinstance(grid, tuple) and isinstance(block, tuple)):
            raise EmulationError(f"{self.name}: grid and block must be tuples")
        if len(grid) != 1 or len(block) != 1 or any(type(v) is not int for v in grid + block):
            raise EmulationError(f"{self.name}: only 1-D grids/blocks of Python ints are used, got {grid} {block}")
        if not 1 <= grid[0] <= 2 ** 31 - 1 or not 1 <= block[0] <= 1024:
            raise EmulationError(f"{self.name}: bad launch {grid} x {block}")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise EmulationError(f"{self.name}: {shared_mem} bytes of dynamic shared memory without opt-in")
        if len(args) != len(self.params):
            raise EmulationError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        keep, slots = [], (ctypes.c_void_p * len(args))()
        for i, (arg, (decl, base, pointer)) in enumerate(zip(args, self.params, strict=True)):
            if pointer:
                if not isinstance(arg, FakeArray):
                    raise EmulationError(f"{self.name} argument {i} ({decl}) must be a device array, got {type(arg)}")
                if arg.dtype != np.dtype(_SCALAR[base]):
                    raise EmulationError(f"{self.name} argument {i} ({decl}) got a {arg.dtype} array")
                if not arg.flags.c_contiguous:
                    raise EmulationError(f"{self.name} argument {i} ({decl}) is not contiguous")
                value = ctypes.c_void_p(arg.ctypes.data)
                keep.append(arg)
            else:
                if type(arg) is not _SCALAR[base]:
                    raise EmulationError(f"{self.name} argument {i} ({decl}) must be {_SCALAR[base].__name__}, "
                                         f"got {type(arg).__name__}")
                value = np.ctypeslib.as_ctypes_type(_SCALAR[base])(arg)
            keep.append(value)
            slots[i] = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        record = (self, grid[0], block[0], int(shared_mem), slots, keep)
        if _State.capture is not None:
            _State.capture.append(record)
        else:
            _run(record)


def _run(record) -> None:
    kernel, gx, bx, smem, slots, _keep = record
    _State.launches += 1
    if kernel._fn(gx, bx, smem, slots) != 0:
        raise EmulationError(f"{kernel.name}: {kernel._lib.cfn_emu_error().decode()}")
    check_guards()


class FakeGraph:
    def __init__(self, records: list) -> None:
        self.records = records

    def launch(self, stream=None):
        _no_capture("Graph.launch")
        for record in self.records:
            _run(record)

    def upload(self, stream=None):
        pass


class FakeStream:
    _current: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.non_blocking = non_blocking
        self.ptr = id(self)

    def __enter__(self):
        FakeStream._current.append(self)
        return self

    def __exit__(self, *exc):
        FakeStream._current.pop()

    def begin_capture(self, mode=None):
        if not self.non_blocking:
            raise EmulationError("capture on a blocking stream")
        if _State.capture is not None:
            raise EmulationError("nested capture")
        if not FakeStream._current or FakeStream._current[-1] is not self:
            raise EmulationError("begin_capture on a stream that is not the current stream")
        _State.capture = []

    def end_capture(self):
        if _State.capture is None:
            raise EmulationError("end_capture without begin_capture")
        graph, _State.capture = FakeGraph(_State.capture), None
        return graph

    def synchronize(self):
        _no_capture("Stream.synchronize")


class FakeModule:
    _cache: dict = {}

    def __init__(self, code=None, *, options=(), name_expressions=None, **kwargs):
        self.code, self.options = code, options

    def get_function(self, name):
        key = hashlib.sha1(self.code.encode()).hexdigest()
        if key not in FakeModule._cache:
            workdir = Path(os.environ.get("CFN_EMU_DIR", tempfile.gettempdir())) / "cfn_fast_emu"
            workdir.mkdir(parents=True, exist_ok=True)
            FakeModule._cache[key] = build_emulator(self.code, workdir, int(os.environ.get("CFN_EMU_ARCH", "0")))
        lib, kernels = FakeModule._cache[key]
        if name not in kernels:
            raise EmulationError(f"no kernel named {name!r} in the module")
        return FakeKernel(lib, name, kernels[name])


def _wrap(fn):
    def call(*args, **kwargs):
        _no_capture(fn.__name__)
        args = [np.asarray(a) if isinstance(a, FakeArray) else a for a in args]
        out = kwargs.get("out")
        if out is not None:
            fn(*args, **kwargs)
            return out
        result = fn(*args, **kwargs)
        return result.view(FakeArray) if isinstance(result, np.ndarray) else result
    return call


def fake_cupy(sms: int = 1) -> types.ModuleType:
    """A stand-in ``cupy`` module backed by NumPy and the host-compiled kernels."""
    cp = types.ModuleType("cupy")
    cp.__version__ = "emulated"
    cp.ndarray = FakeArray

    def asarray(a, dtype=None):
        _no_capture("cupy.asarray")
        if isinstance(a, FakeArray) and (dtype is None or a.dtype == dtype):
            return a
        a = np.asarray(a, dtype=dtype)
        out = _alloc(a.shape, a.dtype)
        np.copyto(out, a)
        return out

    def zeros(shape, dtype=np.float64):
        _no_capture("cupy.zeros")
        out = _alloc(shape, dtype)
        np.ndarray.fill(out, 0)
        return out

    def empty(shape, dtype=np.float64):
        _no_capture("cupy.empty")
        out = _alloc(shape, dtype)
        np.ndarray.fill(out, np.nan if np.dtype(dtype).kind == "f" else 0x5A)
        return out

    cp.asarray = asarray
    cp.zeros = zeros
    cp.empty = empty
    cp.zeros_like = lambda a, dtype=None: zeros(a.shape, dtype or a.dtype)
    cp.ascontiguousarray = lambda a: asarray(np.ascontiguousarray(a))
    cp.matmul = _wrap(np.matmul)
    cp.tanh = _wrap(np.tanh)
    cp.copyto = _wrap(np.copyto)
    cp.max = _wrap(np.max)
    cp.min = _wrap(np.min)
    cp.float32, cp.int32, cp.int64, cp.uint64, cp.float64 = np.float32, np.int32, np.int64, np.uint64, np.float64
    cp.RawModule = FakeModule
    cuda = types.SimpleNamespace()
    cuda.Stream = FakeStream
    cuda.Graph = FakeGraph

    class Device:
        id = 0
        attributes = {"MultiProcessorCount": sms, "MaxRegistersPerMultiprocessor": 65536,    # sm_90
                      "MaxSharedMemoryPerMultiprocessor": 233472, "MaxThreadsPerMultiProcessor": 2048,
                      "MaxBlocksPerMultiprocessor": 32}

        def __init__(self, device=None):
            pass

        def synchronize(self):
            pass

    class Event:
        t = 0.0

        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cuda.Device = Device
    cuda.Event = Event
    cuda.get_elapsed_time = lambda a, b: (b.t - a.t) * 1e3
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (0, 0),
                                         runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0,
                                         getDeviceProperties=lambda i: {"name": b"emulated",
                                                                         "multiProcessorCount": sms,
                                                                         "totalGlobalMem": 0, "major": 0,
                                                                         "minor": 0})
    cp.cuda = cuda

    class Pool:
        def used_bytes(self):
            return 0

        total_bytes = used_bytes

        def free_all_blocks(self):
            pass

    pool = Pool()
    cp.get_default_memory_pool = lambda: pool
    cp.get_default_pinned_memory_pool = lambda: pool
    return cp


def install_fake_cupy(sms: int = 1) -> types.ModuleType:
    cp = fake_cupy(sms)
    sys.modules["cupy"] = cp
    return cp


# ============================================================================ the comparison
def relative_error(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None and b is None:
        return 0.0
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    ref = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (ref if ref > 0 else 1.0))


def layer_errors(got, ref) -> list[tuple[str, float]]:
    out = []
    for index, (g, r) in enumerate(zip(got, ref, strict=True)):
        out.append((f"L{index}.weight", relative_error(g.weight, r.weight)))
        out.append((f"L{index}.bias", relative_error(g.bias, r.bias)))
        if g.side_weight is not None or r.side_weight is not None:
            out.append((f"L{index}.side", relative_error(g.side_weight, r.side_weight)))
    return out


def random_problem(rng: np.random.Generator, n_samples: int, n_inputs: int, density: float, side_dim: int):
    """A samples x inputs CSR of centred unit ratings (every row known at least once, some long rows)."""
    mask = rng.random((n_samples, n_inputs)) < density
    mask[np.arange(n_samples), rng.integers(0, n_inputs, n_samples)] = True
    mask[0, :] = True                                  # one full row (swap rule, long segments)
    mask[1, :] = False
    mask[1, 3] = True                                  # a one-entry row (swap rule)
    values = rng.choice(np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), size=(n_samples, n_inputs))
    dense = np.where(mask, values - 0.1 * rng.random((n_samples, n_inputs)), 0.0).astype(np.float32)
    dense[2, 5] = 0.0
    samples = sp.csr_matrix(dense)
    # keep explicit zeros as known values, like the real preprocessing
    rows, cols = np.nonzero(mask)
    samples = sp.csr_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape, dtype=np.float32)
    samples.sort_indices()
    side = rng.random((n_samples, side_dim)).astype(np.float32) if side_dim else None
    return samples, side


def run_checks(emulate: bool, quick: bool, verbose: bool = True, reference: str = "numpy",
               only: tuple[str, ...] | None = None, medium: bool = False) -> list[tuple[str, str, float, bool]]:
    """Run every configuration; returns rows (config, quantity, relative error, ok).

    ``reference`` is the engine the CUDA engine is compared with: "numpy" (the specification) or
    "cpu" (the Cython engine, itself tested against the specification).  ``only``: the names of
    the configurations to run (default: all, or the first three when ``quick``).  ``medium``: one
    case at the engine's real launch configuration (256-thread blocks, grids from the kernels'
    occupancy on the device's SMs, 600 hidden units, batches of 35 with rows covered by many warps).
    """
    from cfn_fast.backends.base import TrainConfig, epoch_order
    if reference == "cpu":
        from cfn_fast.backends.cpu_backend import CpuEngine as NumpyEngine
    else:
        from cfn_fast.backends.numpy_backend import NumpyEngine
    from cfn_fast.network import init_layers
    from cfn_fast.backends import cuda_backend, cuda_plan

    rng = np.random.default_rng(12345)
    defaults = (cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW)  # read by cuda_plan.plan_steps
    if emulate:
        sizes = dict(n_samples=23, n_inputs=37, density=0.3)
        engine_kw = dict(block_threads=64, blocks_per_sm=2, min_per_warp=8)
    else:
        sizes = dict(n_samples=300, n_inputs=420, density=0.08)
        engine_kw = {}
    configs = [
        # (name, hidden, side_dim, scatter, graphs, batch, mask)
        ("1 hidden, side, segment, graphs", (9,), 3, "segment", True, 5, 0.25),
        ("graphs of 2 steps, folds", (8,), 2, "segment", True, 3, 0.3),
        ("1 hidden, no side, atomic, eager", (6,), 0, "atomic", False, 4, 0.6),
        ("2 hidden, side, segment, eager", (7, 5), 2, "segment", False, 5, 0.25),
        ("2 hidden, no side, atomic", (5, 6), 0, "atomic", True, 6, 0.95),
        ("1 hidden, side, atomic, graphs", (9,), 3, "atomic", True, 5, 0.25),
        ("1 hidden, no side, segment, eager", (6,), 0, "segment", False, 7, 0.9),
        ("650 hidden (beyond the register tiles), side, atomic", (650,), 2, "atomic", True, 4, 0.25),
        ("batch 35 (rows beyond one warp), side, segment", (6,), 2, "segment", True, 35, 0.25),
        ("batch 70 (setup scan in chunks), atomic", (5,), 0, "atomic", True, 70, 0.4),
    ]
    if not emulate:
        configs += [("wide 1 hidden, side, segment, graphs", (600,), 16, "segment", True, 35, 0.25),
                    ("wide 1 hidden, side, atomic, graphs", (1100,), 4, "atomic", True, 35, 0.25),
                    ("wide 2 hidden, side, segment", (300, 200), 5, "segment", False, 35, 0.25)]
    if medium:
        sizes = dict(n_samples=80, n_inputs=400, density=0.06)
        engine_kw = {}
        configs = [("medium: 600 hidden, side, segment, graphs, real launch configuration", (600,), 4, "segment",
                    True, 35, 0.25)]
    if only is not None:
        configs = [c for c in configs if c[0] in only]
    elif quick:
        configs = configs[:3]
    rows_out: list[tuple[str, str, float, bool]] = []

    def record(config: str, what: str, err: float, tol: float = TOLERANCE) -> None:
        ok = bool(np.isfinite(err) and err < tol)
        rows_out.append((config, what, err, ok))
        if verbose:
            print(f"  {'ok ' if ok else 'BAD'} {what:<32} {err:.2e}", flush=True)

    for name, hidden, side_dim, scatter, graphs, batch, mask in configs:
        if verbose:
            print(f"[{name}]", flush=True)
        # "graphs of 2 steps, folds": several graphs and a remainder graph per epoch, and the lazy
        # scale folded at most chunk boundaries
        cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW = (2, 0.995) if "folds" in name else defaults
        problem = dict(sizes)
        if batch > problem["n_samples"] // 2:          # room for several batches
            problem.update(n_samples=int(2.3 * batch), density=min(problem["density"], 0.15))
        samples, side = random_problem(rng, side_dim=side_dim, **problem)
        layers = init_layers(samples.shape[1], hidden, side_dim, seed=int(rng.integers(1000)))
        cfg = TrainConfig(alpha=1.1, beta=0.6, mask_ratio=mask, weight_decay=0.05, batch_size=batch, seed=7)
        ref = NumpyEngine(layers, cfg, samples, side)
        cu = cuda_backend.CudaEngine(layers, cfg, samples, side, scatter=scatter, graphs=graphs, **engine_kw)
        if not engine_kw:                              # the real launch configuration: at most one wave
            plan = cuda_backend.launch_plan(cu._kernels, cu._cp, hidden)
            for kernel, grid in (("cfn_encode", cu._grid_enc), ("cfn_output", cu._grid_out),
                                 ("cfn_scatter_segment", cu._grid_seg)):
                record(name, f"{kernel} grid {grid} <= one wave {plan[kernel]['grid']}",
                       0.0 if 1 <= grid <= plan[kernel]["grid"] else 1.0)
        record(name, "get_layers round trip", max(e for _, e in layer_errors(cu.get_layers(), layers)), 1e-7)
        # gradients of a few batches (epoch 3's corruption)
        order = epoch_order(cfg.seed, 3, ref.trainable)
        for b, batch_rows in enumerate([order[:batch], np.array([0, 1, 2]), order[-3:]][: 2 if quick else 3]):
            loss_r, g_r = ref.gradients(batch_rows, 3)
            loss_c, g_c = cu.gradients(batch_rows, 3)
            record(name, f"gradients[{b}] loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
            for what, err in layer_errors(g_c, g_r):
                record(name, f"gradients[{b}] {what}", err)
        # one SGD step
        lr = 0.07
        loss_r = ref.sgd_step(order[:batch], 2, lr)
        loss_c = cu.sgd_step(order[:batch], 2, lr)
        record(name, "sgd_step loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
        for what, err in layer_errors(cu.get_layers(), ref.get_layers()):
            record(name, f"sgd_step {what}", err)
        # whole epochs (graphs replay from the second chunk on), snapshot / restore
        before = cu.get_layers()
        snap = cu.snapshot()
        for epoch in (1, 2):
            loss_r = ref.train_epoch(epoch, lr / (1 + 0.3 * epoch))
            loss_c = cu.train_epoch(epoch, lr / (1 + 0.3 * epoch))
            record(name, f"epoch {epoch} loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
        for what, err in layer_errors(cu.get_layers(), ref.get_layers()):
            record(name, f"2 epochs {what}", err)
        ref_max = max(float(np.max(np.abs(a))) for layer in ref.get_layers() for a in layer.arrays())
        record(name, "max_abs_param", relative_error(cu.max_abs_param(), ref_max))
        # inference on the trained parameters
        rows_q = rng.integers(0, samples.shape[0], 40)
        cols_q = rng.integers(0, samples.shape[1], 40)
        record(name, "predict_entries", relative_error(cu.predict_entries(samples, side, rows_q, cols_q),
                                                       ref.predict_entries(samples, side, rows_q, cols_q)))
        other = samples[::2].copy()
        other_side = None if side is None else side[::2].copy()
        record(name, "encode (other inputs)", relative_error(cu.encode(other, other_side),
                                                             ref.encode(other, other_side)))
        codes = ref.encode(other, other_side)
        record(name, "decode", relative_error(cu.decode(codes, other_side, np.array([0, 5, 2])),
                                              ref.decode(codes, other_side, np.array([0, 5, 2]))))
        cu.restore(snap)
        record(name, "restore(snapshot)", max(e for _, e in layer_errors(cu.get_layers(), before)), 1e-7)
        if emulate:
            check_guards()
    cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW = defaults
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="run the kernels on the host (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    parser.add_argument("--medium", action="store_true",
                        help="one 600-hidden case at the real launch configuration (with --emulate: 132 SMs)")
    parser.add_argument("--arch", type=int, default=0, help="with --emulate: compile the code paths of this "
                        "__CUDA_ARCH__ (e.g. 900: sm_90's vector atomics)")
    parser.add_argument("--only", default="", help="configuration names separated by semicolons")
    parser.add_argument("--reference", default="numpy", choices=("numpy", "cpu"))
    args = parser.parse_args(argv)
    if args.emulate:
        if args.arch:
            os.environ["CFN_EMU_ARCH"] = str(args.arch)
        install_fake_cupy(sms=132 if args.medium else 1)
    else:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"device: {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}, "
              f"CuPy {cupy.__version__}")
    start = time.perf_counter()
    only = tuple(x.strip() for x in args.only.split(";") if x.strip()) or None
    rows = run_checks(args.emulate, args.quick, only=only, medium=args.medium, reference=args.reference)
    bad = [r for r in rows if not r[3]]
    worst = max(rows, key=lambda r: r[2])
    print(f"\n{len(rows)} checks, {len(bad)} failed, worst {worst[2]:.2e} ({worst[0]}: {worst[1]}), "
          f"{time.perf_counter() - start:.1f}s{' (emulated)' if args.emulate else ''}")
    for config, what, err, _ in bad:
        print(f"FAILED  {config}: {what} = {err:.3e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
