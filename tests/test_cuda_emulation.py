"""What the host emulation of the CUDA kernels guarantees (tests/cuda_emulator), the CuPy API
the engine relies on, and the engine's device-memory plan -- all without a GPU.

The emulator itself is checked on purpose-built kernels: a misaligned 16-byte vector access is an
error (the host would not fault), blocks run in a shuffled order and several at a time (so results
that depend on block order or on inter-block races show), and the sm_90 code path with its 16-byte
vector atomics compiles and runs on the shim.
"""
from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from children import TESTS, child_env  # tests/children.py

ROOT = Path(__file__).resolve().parents[1]
#: the CUDA engine's modules: engine, launches, inference, kernel module, planning (it queries the device too)
CUDA_SOURCES = sorted((ROOT / "cfn_fast" / "backends").glob("cuda_*.py"))

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: no host emulation")


@pytest.fixture(scope="module")
def emu():
    """The emulator (tests/cuda_emulator), imported without installing its fake CuPy."""
    import cuda_emulator
    return cuda_emulator


def _common_header() -> str:
    return (ROOT / "kernels" / "cuda" / "cfn_common.cuh").read_text()


def _build(emu, tmp_path, body: str, arch: int = 0) -> dict:
    lib, params = emu.build_emulator(_common_header() + "\n" + body, tmp_path, arch)
    return {name: emu.FakeKernel(lib, name, p) for name, p in params.items()}


# ----------------------------------------------------------------------------- the emulator's checks
@needs_gxx
def test_misaligned_vector_access_is_an_error(emu, tmp_path):
    kernels = _build(emu, tmp_path, r'''
extern "C" __global__ void copy4(const float* src, float* dst, int offset) {
    if (threadIdx.x == 0) cfn_st4(dst, cfn_ld4(src + offset));
}''')
    src = emu.alloc(16, np.float32)
    src[...] = np.arange(16, dtype=np.float32)
    dst = emu.alloc(4, np.float32)
    kernels["copy4"]((1,), (32,), (src, dst, np.int32(4)))          # 16-byte aligned: fine
    np.testing.assert_array_equal(dst, [4, 5, 6, 7])
    with pytest.raises(emu.EmulationError, match="misaligned 16-byte vector access"):
        kernels["copy4"]((1,), (32,), (src, dst, np.int32(1)))      # 4-byte aligned only


@needs_gxx
def test_blocks_run_shuffled_and_concurrently(emu, tmp_path, monkeypatch):
    monkeypatch.setenv("CFN_EMU_CONCURRENT", "4")
    kernels = _build(emu, tmp_path, r'''
extern "C" __global__ void order(int* seen, int* counter, int* running, int* most) {
    if (threadIdx.x == 0) {
        seen[atomicAdd(counter, 1)] = blockIdx.x;
        const int now = atomicAdd(running, 1) + 1;
        int m = atomicAdd(most, 0);
        while (now > m && atomicCAS(most, m, now) != m) m = atomicAdd(most, 0);
    }
    __syncthreads();
    // keep the block alive a little so that the others of its group overlap with it
    for (int spin = 0; spin < 20; ++spin) __syncthreads();
    if (threadIdx.x == 0) atomicAdd(running, -1);
}''')
    n = 32
    seen, counter, running, most = (emu.alloc(s, np.int32) for s in (n, 1, 1, 1))
    for a in (seen, counter, running, most):
        a[...] = 0
    kernels["order"]((n,), (64,), (seen, counter, running, most))
    assert sorted(seen.tolist()) == list(range(n)), "every block ran exactly once"
    assert seen.tolist() != list(range(n)), "blocks ran in launch order: not shuffled"
    assert int(most[0]) >= 2, "no two blocks were ever running at the same time"


@needs_gxx
def test_sm90_vector_atomic_path_compiles_and_checks_alignment(emu, tmp_path):
    body = r'''
extern "C" __global__ void add4(float* p, int offset) {
    cfn_atomic_add4(p + offset, make_float4(1.f, 2.f, 3.f, 4.f));
}
extern "C" __global__ void arch(int* out) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    if (threadIdx.x == 0) out[0] = 900;
#else
    if (threadIdx.x == 0) out[0] = 0;
#endif
}'''
    kernels = _build(emu, tmp_path, body, arch=900)
    out = emu.alloc(1, np.int32)
    kernels["arch"]((1,), (32,), (out,))
    assert out[0] == 900, "the sm_90 branch was not the one compiled"
    p = emu.alloc(8, np.float32)
    p[...] = 0
    kernels["add4"]((3,), (32,), (p, np.int32(4)))                  # 3 blocks x 32 threads add (1, 2, 3, 4)
    np.testing.assert_array_equal(p[4:], 96 * np.array([1, 2, 3, 4], dtype=np.float32))
    with pytest.raises(emu.EmulationError, match="misaligned"):
        kernels["add4"]((1,), (32,), (p, np.int32(2)))


@needs_gxx
def test_sm90_kernels_match_reference_in_emulation(emu):
    """The engine's atomic scatter on sm_90's vector-atomic path, against the NumPy reference."""
    import subprocess
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_numeric_check.py"), "--emulate", "--arch",
                             "900", "--only", "1 hidden, side, atomic, graphs"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=child_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " 0 failed" in result.stdout


# ----------------------------------------------------------------------------- CuPy API the engine uses
def _cp_chains(path: Path) -> set[str]:
    """Every attribute chain ``cp.a.b`` read in a module (``cp`` = the CuPy module the engine holds)."""
    chains = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):                  # prefixes (cp.cuda of cp.cuda.Stream) too
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "cp":
                chains.add(".".join(reversed(parts)))
    return chains


#: methods the engine calls on CuPy objects it gets back (arrays, streams, graphs, kernels, events)
OBJECT_METHODS = [("ndarray", ("get", "set", "fill", "copy", "nbytes", "size", "T")),
                  ("cuda.Stream", ("begin_capture", "end_capture", "synchronize", "__enter__", "__exit__")),
                  ("cuda.graph.Graph", ("launch",)), ("RawModule", ("get_function",)),
                  ("RawKernel", ("attributes", "__call__")), ("cuda.Device", ("attributes", "synchronize")),
                  ("cuda.Event", ("record", "synchronize"))]


def test_every_cupy_api_the_engine_calls_exists():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install -e '.[test]' installs it)")
    assert len(CUDA_SOURCES) >= 5, CUDA_SOURCES
    chains = set().union(*(_cp_chains(path) for path in CUDA_SOURCES))
    assert {"zeros", "asarray", "RawModule", "cuda.Stream", "matmul"} <= chains, chains
    missing = []
    for chain in sorted(chains):
        obj = cupy
        for part in chain.split("."):
            if not hasattr(obj, part):
                missing.append(chain)
                break
            obj = getattr(obj, part)
    for owner, methods in OBJECT_METHODS:
        obj = cupy
        for part in owner.split("."):
            obj = getattr(obj, part)
        missing += [f"{owner}.{m}" for m in methods if not hasattr(obj, m)]
    for fn in ("get_elapsed_time", "runtime.memGetInfo", "runtime.getDeviceCount"):
        obj = cupy.cuda
        for part in fn.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(f"cuda.{fn}")
    assert not missing, f"CuPy {cupy.__version__} lacks: {missing}"


def test_cupy_installed_without_gpu_keeps_the_cpu_path():
    """With CuPy importable but no GPU, 'auto' must still pick the cpu engine (or numpy)."""
    import subprocess
    code = ("import sys, cfn_fast; from cfn_fast.backends import resolve_backend; "
            "assert 'cupy' not in sys.modules; print(resolve_backend('auto'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=child_env(), cwd=TESTS)
    assert result.returncode == 0, result.stderr
    from cfn_fast.backends import available_backends
    expected = "cuda" if "cuda" in available_backends() else ("cpu" if "cpu" in available_backends() else "numpy")
    assert result.stdout.strip() == expected


# ----------------------------------------------------------------------------- device memory plan
def test_memory_plan_fits_netflix_and_ml10m():
    """600 hidden units: Netflix (480,189 x 17,770, 100,480,507 ratings; 90% for training) in <= 8 GiB
    both ways, ML-10M I-CFN in <= 1 GiB (the targets of the GPU check)."""
    from cfn_fast.backends.cuda_backend import memory_plan
    from cfn_fast.data.synthetic import ML10M_SHAPE, NETFLIX_SHAPE
    users, items, ratings = NETFLIX_SHAPE
    train = int(round(ratings * 0.9))
    # I-CFN: samples are items, inputs users; the 35 most rated Netflix items have < 250k ratings each
    icfn = memory_plan(items, users, train, (600,), batch_size=35, batch_nnz=35 * 250_000, side_dim=16)
    ucfn = memory_plan(users, items, train, (600,), batch_size=35, batch_nnz=35 * 20_000, side_dim=12)
    for plan in (icfn, ucfn):
        assert plan["total"] == sum(v for k, v in plan.items() if k != "total")
        assert plan["total"] <= 8 << 30, {k: round(v / 2**30, 2) for k, v in plan.items()}
    # I-CFN's parameters: two 480,189 x 600 float32 matrices, plus one snapshot of them
    assert icfn["parameters"] >= 2 * users * 600 * 4 and icfn["snapshot"] == icfn["parameters"]
    assert icfn["total"] > 5 << 30                                   # the plan is not vacuous
    u10, i10, r10 = ML10M_SHAPE
    ml10m = memory_plan(i10, u10, int(r10 * 0.9), (600,), batch_size=35, side_dim=16)
    assert ml10m["total"] <= 1 << 30


@needs_gxx
def test_memory_plan_matches_the_engine_buffers(emu, monkeypatch):
    """The plan counts what the engine allocates (emulated device arrays, no snapshot taken)."""
    from cfn_fast.backends.base import TrainConfig
    from cfn_fast.backends.cuda_backend import max_batch_nnz, memory_plan
    from cfn_fast.network import init_layers
    cp = emu.fake_cupy(sms=2)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    from cfn_fast.backends import cuda_backend
    samples, side = emu.random_problem(np.random.default_rng(0), 60, 90, 0.2, 3)
    counts = np.diff(samples.indptr)
    for hidden, scatter in (((12,), "segment"), ((8, 6), "atomic")):
        cfg = TrainConfig(alpha=1.0, beta=0.5, mask_ratio=0.25, weight_decay=0.01, batch_size=7, seed=0)
        engine = cuda_backend.CudaEngine(init_layers(90, hidden, 3, 0), cfg, samples, side, scatter=scatter,
                                         blocks_per_sm=4, block_threads=256)
        plan = memory_plan(60, 90, samples.nnz, hidden, batch_size=7, batch_nnz=max_batch_nnz(counts, 7),
                           side_dim=3, scatter=scatter, snapshot=False, n_sm=2, blocks_per_sm=4)
        used = engine.device_bytes()
        assert abs(used - plan["total"]) <= 0.05 * plan["total"] + 4096, (used, plan)


# ----------------------------------------------------------------------------- per-epoch entry tables
@needs_gxx
@pytest.mark.parametrize("mask_ratio", [0.0, 0.3, 0.97])
def test_epoch_entry_tables_match_the_reference_batches(emu, monkeypatch, mask_ratio):
    """cfn_epoch_tables lays out every entry of the epoch once, batch after batch in epoch order:
    its column, value, batch row and hidden flag after the swap rule are the reference's
    (corruption.hidden_entries on the same key), so the step kernels need no search of the CSR."""
    from cfn_fast.backends.base import TrainConfig, epoch_order
    from cfn_fast.corruption import epoch_key, hidden_entries, mask_threshold, splitmix64
    from cfn_fast.network import init_layers
    cp = emu.fake_cupy(sms=2)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    from cfn_fast.backends import cuda_backend
    samples, side = emu.random_problem(np.random.default_rng(1), 41, 30, 0.25, 0)
    batch = 6
    cfg = TrainConfig(alpha=1.0, beta=0.5, mask_ratio=mask_ratio, weight_decay=0.0, batch_size=batch, seed=3)
    engine = cuda_backend.CudaEngine(init_layers(30, (8,), 0, 0), cfg, samples, side, block_threads=64,
                                     blocks_per_sm=2)
    epoch = 2
    order = epoch_order(cfg.seed, epoch, engine.trainable)
    coef = np.zeros((-(-len(order) // batch), 4), dtype=np.float32)
    engine._upload_batch_inputs(order, coef, epoch)
    counts = np.diff(samples.indptr)[order]
    nnz = int(counts.sum())
    entries = np.concatenate([np.arange(samples.indptr[s], samples.indptr[s + 1]) for s in order])
    row = np.repeat(np.arange(len(order)) % batch, counts)
    hidden = hidden_entries(samples.indptr, order, epoch_key(cfg.seed, epoch), mask_threshold(mask_ratio))
    assert hidden.shape == (nnz,)
    # the swap rule, row by row: every entry of the row drawn hidden (the reference's raw draw)
    key, threshold = epoch_key(cfg.seed, epoch), mask_threshold(mask_ratio)
    with np.errstate(over="ignore"):
        raw = (splitmix64(np.uint64(key) + entries.astype(np.uint64)) >> np.uint64(40)) < np.uint64(threshold)
    position = np.repeat(np.arange(len(order)), counts)
    swapped = (np.bincount(position, weights=raw, minlength=len(order)) == counts) & (counts > 0)
    np.testing.assert_array_equal(engine.d_pswap.get()[:len(order)], swapped.astype(np.int32))
    if mask_ratio > 0.9:
        assert swapped.any() and not swapped.all()        # the swap rule is exercised both ways
    np.testing.assert_array_equal(engine.d_ecol.get()[:nnz], samples.indices[entries])
    np.testing.assert_array_equal(engine.d_ex.get()[:nnz], samples.data[entries].astype(np.float32))
    np.testing.assert_array_equal(engine.d_erh.get()[:nnz], 2 * row + hidden.astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(counts)])
    np.testing.assert_array_equal(engine.d_estart.get()[:len(order) + 1], starts)


@needs_gxx
@pytest.mark.parametrize("side_dim", [0, 3])
def test_fused_activation_and_delta_give_the_same_bits(emu, monkeypatch, side_dim):
    """cfn_encode with the activation fused and cfn_output with the delta and batch loss fused
    (training epochs: the last warp of a row, found with a fenced counter, applies cfn_hidden_act's /
    cfn_hidden_delta's expression; the last warp of all sums the loss) give the same bits as the
    separate launches, for rows spread over many warps of concurrently running, shuffled blocks."""
    from cfn_fast.backends.base import TrainConfig, epoch_order
    from cfn_fast.backends.cuda_backend import plan_steps
    from cfn_fast.network import init_layers
    cp = emu.fake_cupy(sms=3)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    from cfn_fast.backends import cuda_backend
    samples, side = emu.random_problem(np.random.default_rng(4), 19, 40, 0.4, side_dim)
    cfg = TrainConfig(alpha=1.0, beta=0.5, mask_ratio=0.25, weight_decay=0.01, batch_size=5, seed=7)
    results = []
    for fuse in (False, True):
        engine = cuda_backend.CudaEngine(init_layers(40, (10,), side_dim, 0), cfg, samples, side,
                                         scatter="segment", graphs=False, block_threads=64, blocks_per_sm=2,
                                         min_per_warp=2)
        order = epoch_order(cfg.seed, 1, engine.trainable)
        plan = plan_steps(cuda_backend.batch_sizes(len(order), 5), 0.05, cfg.weight_decay, 1.0)
        engine._upload_batch_inputs(order, plan.coef, 1)
        h1 = []
        for t in range(3):
            engine._launch_step(engine._params, len(order), 5, fuse=fuse)
            h1 += [engine.d_h[1].get().copy(), engine.d_delta[1].get().copy(), engine.d_loss.get().copy()]
        assert engine._tw_enc > 1 and engine.d_bh.get()[1] > 2 * 2 * engine._min_per_warp
        results.append((h1, [a.get().copy() for a in engine._params.arrays()]))
    (h_sep, p_sep), (h_fused, p_fused) = results
    assert np.abs(h_sep[0]).max() > 0
    for a, b in zip(h_sep + p_sep, h_fused + p_fused, strict=True):
        np.testing.assert_array_equal(a, b)
