"""The CUDA engine without a GPU: kernels compile (nvcc, sm_80/sm_90) without register spills, the
module loads lazily, the host-side planning is the reference's maths, and the kernels themselves
run against the NumPy reference in host emulation (tests/cuda_emulator; bench/gpu_numeric_check.py --emulate).

On a machine with a GPU the last test also runs the real engine against the reference.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from children import child_env  # tests/children.py

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "kernels" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _env() -> dict[str, str]:
    """The environment of a child process: the package under test and tests/ (the emulator) on the path."""
    return child_env()


# ----------------------------------------------------------------------------- nvcc: errors and spills
@pytest.fixture(scope="module")
def nvcc_reports(tmp_path_factory) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """``nvcc -cubin -Xptxas -v`` of every .cu for every arch, compiled in parallel once."""
    if NVCC is None:
        pytest.skip("nvcc is not installed: the CUDA kernels cannot be compiled here")
    out = tmp_path_factory.mktemp("cubin")
    jobs = [(cu, arch) for cu in CU_FILES for arch in ARCHS]

    def compile_one(job):
        cu, arch = job
        cmd = [NVCC, "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v", "-I", str(CUDA_DIR),
               "-o", str(out / f"{cu.stem}.{arch}.cubin"), str(cu)]
        return job, subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return {(cu.name, arch): result for (cu, arch), result in pool.map(compile_one, jobs)}


def test_there_are_kernels():
    assert CU_FILES, "no kernels/cuda/*.cu files"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", [p.name for p in CU_FILES])
def test_nvcc_compiles_without_spills(nvcc_reports, cu, arch):
    result = nvcc_reports[(cu, arch)]
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"nvcc failed on {cu} for {arch}:\n{log[-4000:]}"
    assert "Function properties for" in log, f"no ptxas report for {cu} ({arch}):\n{log[-2000:]}"
    spills = re.findall(r"Function properties for (\w+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                        r"(\d+) bytes spill loads", log)
    assert spills, f"could not parse the ptxas report of {cu} ({arch})"
    bad = [(name, int(st), int(ld)) for name, _, st, ld in spills if int(st) or int(ld)]
    assert not bad, f"register spills in {cu} ({arch}): {bad}"
    assert "warning" not in log.lower(), f"compiler warnings in {cu} ({arch}):\n{log[-3000:]}"


def test_every_engine_kernel_is_defined():
    from cfn_fast.backends.cuda_module import KERNEL_NAMES, kernel_source, module_source
    source = kernel_source()
    for name in KERNEL_NAMES:
        assert re.search(rf'extern\s+"C"\s+__global__\s+void\s+(CFN_BOUNDS_\w*\s+)?{name}\s*\(', source), \
            f"kernel {name} not found"
    # one translation unit: the shared header enters exactly once (include guard), every .cu is included
    assert source.count("#define CFN_COMMON_CUH") == 1
    assert not re.search(r'^\s*#\s*include\s+"', source, re.M)
    assert re.findall(r'^#include "(\w+\.cu)"$', module_source(), re.M) == [p.name for p in CU_FILES]


def _ptxas_kernels(log: str) -> dict[str, dict[str, int]]:
    """``{kernel: {regs, smem, spill}}`` from a ptxas -v report (nvcc or NVRTC)."""
    out = {}
    for block in re.split(r"Compiling entry function '", log)[1:]:
        name = block.split("'", 1)[0]
        regs = re.search(r"Used (\d+) registers", block)
        smem = re.search(r"(\d+) bytes smem", block)
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", block)
        out[name] = dict(regs=int(regs.group(1)) if regs else -1, smem=int(smem.group(1)) if smem else 0,
                         spill=int(spill.group(1)) + int(spill.group(2)) if spill else 0)
    return out


def _min_blocks_promised(arch: str) -> dict[str, int]:
    """The minimum resident blocks each sparse kernel's __launch_bounds__ asks for on ``arch``."""
    source = (CUDA_DIR / "cfn_train.cu").read_text()
    sm90 = source.split("#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)", 1)[1]
    encode = re.search(r"CFN_BOUNDS_ENCODE __launch_bounds__\(CFN_MAX_THREADS, (\d)\)",
                       sm90 if arch == "sm_90" else sm90.split("#else", 1)[1])
    found = {"cfn_encode": int(encode.group(1))}
    for kernel, macro in (("cfn_output", "OUTPUT"), ("cfn_scatter_atomic", "ATOMIC")):
        found[kernel] = int(re.search(rf"CFN_BOUNDS_{macro} __launch_bounds__\(CFN_MAX_THREADS, (\d)\)",
                                      source).group(1))
    return found


def _nvrtc_with_cupys_flags(arch: str) -> str:
    """Compile the engine's module exactly as CuPy's RawModule does (cupy.cuda.compiler, NVRTC), for
    an explicit arch; returns the ptxas log.  Only CuPy's device query for the arch is bypassed."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (the test extra installs cupy-cuda13x)")
    from cupy.cuda import compiler
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"libnvrtc is not loadable ({type(exc).__name__}: {exc}); pip install nvidia-cuda-nvrtc")
    import io

    from cfn_fast.backends.cuda_module import COMPILE_OPTIONS, include_dir, module_options, module_source
    log = io.StringIO()
    original = compiler._get_arch_for_options_for_nvrtc
    compiler._get_arch_for_options_for_nvrtc = lambda a=None: (f"-arch={arch}", "cubin")
    try:
        # RawModule -> _compile_with_cache_cuda adds -ftz=true, compile_using_nvrtc the arch,
        # --device-as-default-execution-space (and --pch on new NVRTC): the same path here
        with include_dir() as directory:   # the RawModule's options: -std=c++17 -I<kernels/cuda>
            cubin, _ = compiler.compile_using_nvrtc(module_source(),
                                                    module_options(directory, COMPILE_OPTIONS)
                                                    + ("-ftz=true", "-Xptxas=-v"),
                                                    arch=arch[3:], log_stream=log)
    finally:
        compiler._get_arch_for_options_for_nvrtc = original
    assert len(cubin) > 0, f"no cubin from NVRTC (CuPy {cupy.__version__})"
    return log.getvalue()


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_the_module_with_cupys_flags(arch):
    """The exact source CuPy compiles (one translation unit) through CuPy's own NVRTC path: no errors,
    no spills, and every sparse kernel keeps the occupancy its __launch_bounds__ promise."""
    from cfn_fast.backends.cuda_backend import KERNEL_NAMES
    kernels = _ptxas_kernels(_nvrtc_with_cupys_flags(arch))
    assert set(KERNEL_NAMES) <= set(kernels), sorted(kernels)
    spills = {k: v["spill"] for k, v in kernels.items() if v["spill"]}
    assert not spills, f"register spills under NVRTC ({arch}): {spills}"
    for kernel, blocks in _min_blocks_promised(arch).items():
        assert kernels[kernel]["regs"] * 256 * blocks <= 65536, (kernel, kernels[kernel], blocks)


@pytest.fixture(scope="module")
def sm90_registers(nvcc_reports) -> dict[str, dict[str, int]]:
    result = nvcc_reports[("cfn_train.cu", "sm_90")]
    assert result.returncode == 0, result.stderr[-3000:]
    return _ptxas_kernels(result.stdout + result.stderr)


def test_occupancy_of_ptxas_registers_matches_the_launched_grid(sm90_registers):
    """ptxas's register and shared-memory counts (sm_90, 600 hidden units) give the resident blocks
    per SM the engine's grids are sized from: at least 2 blocks of 256 threads for every sparse kernel,
    the __launch_bounds__ minimum where one is set, and a grid of exactly one wave on 132 SMs."""
    from types import SimpleNamespace

    from cfn_fast.backends.cuda_backend import SPARSE_KERNELS, launch_plan, resident_blocks
    fake_kernels = {k: SimpleNamespace(attributes={"num_regs": sm90_registers[k]["regs"],
                                                   "shared_size_bytes": sm90_registers[k]["smem"]})
                    for k in SPARSE_KERNELS}
    fake_cp = SimpleNamespace(cuda=SimpleNamespace(Device=lambda: SimpleNamespace(
        attributes={"MultiProcessorCount": 132, "MaxRegistersPerMultiprocessor": 65536,
                    "MaxSharedMemoryPerMultiprocessor": 233472, "MaxThreadsPerMultiProcessor": 2048,
                    "MaxBlocksPerMultiprocessor": 32})))
    plan = launch_plan(fake_kernels, fake_cp, hidden=(600,))
    promised = _min_blocks_promised("sm_90")
    for kernel in SPARSE_KERNELS:
        p, regs = plan[kernel], sm90_registers[kernel]["regs"]
        # by hand: registers are allocated per warp in units of 256
        warps_by_regs = 65536 // (-(-regs * 32 // 256) * 256)
        by_smem = 233472 // (p["dynamic_smem"] + 1024) if p["dynamic_smem"] else 32
        expected = min(warps_by_regs // p["warps_per_block"], 2048 // (32 * p["warps_per_block"]), by_smem, 32)
        assert p["blocks_per_sm"] == expected == resident_blocks(regs, 32 * p["warps_per_block"], p["dynamic_smem"])
        assert p["grid"] == 132 * expected
        assert expected >= max(2, promised.get(kernel, 0)), (kernel, regs, p)


def test_kernels_at_the_real_launch_configuration_in_emulation(sm90_registers):
    """600 hidden units, 256-thread blocks, grids sized from ptxas's sm_90 registers on 132 SMs, rows
    covered by dozens of warps (the tree reduction), in the emulator with shuffled concurrent blocks."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the kernels cannot be emulated here")
    import json
    env = _env()
    env["CFN_EMU_KERNEL_REGS"] = json.dumps({k: v["regs"] for k, v in sm90_registers.items()})
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_numeric_check.py"), "--emulate", "--medium"],
                            capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert result.returncode == 0, (result.stdout[-4000:] + result.stderr[-4000:])
    assert " 0 failed" in result.stdout and "grid" in result.stdout


# ----------------------------------------------------------------------------- lazy loading
def test_import_does_not_load_cupy():
    code = ("import sys, cfn_fast, cfn_fast.backends, cfn_fast.backends.cuda_backend; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_resolve_cuda_explains_why_unavailable():
    code = """
import cfn_fast
from cfn_fast.backends import BackendUnavailable, resolve_backend
try:
    resolve_backend("cuda")
except BackendUnavailable as exc:
    print("UNAVAILABLE:", exc)
else:
    print("AVAILABLE")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    if "AVAILABLE" == result.stdout.strip():
        pytest.skip("a CUDA GPU is available here")
    message = result.stdout
    assert "UNAVAILABLE: backend 'cuda' is unavailable:" in message
    assert re.search(r"CuPy|GPU", message), message


# ----------------------------------------------------------------------------- host-side planning
def test_batch_sizes_and_capacity():
    from cfn_fast.backends.cuda_backend import batch_sizes, max_batch_nnz
    np.testing.assert_array_equal(batch_sizes(10, 4), [4, 4, 2])
    np.testing.assert_array_equal(batch_sizes(8, 4), [4, 4])
    assert batch_sizes(0, 4).size == 0
    counts = np.array([5, 1, 9, 3, 7])
    assert max_batch_nnz(counts, 2) == 16
    assert max_batch_nnz(counts, 9) == 25
    # the bound holds for every batch of an epoch order
    from cfn_fast.backends.base import epoch_order
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, 301)
    trainable = np.flatnonzero(counts > 0)
    order = epoch_order(3, 2, trainable)
    bound = max_batch_nnz(counts, 35)
    assert max(counts[order[s:s + 35]].sum() for s in range(0, len(order), 35)) <= bound


@pytest.mark.parametrize("lr, weight_decay, steps, chunk", [(0.07, 0.05, 305, 64), (0.5, 0.9, 45, 8),
                                                            (0.09, 0.025, 1997, 64), (0.3, 0.0, 10, 4)])
def test_plan_steps_is_exact_weight_decay(lr, weight_decay, steps, chunk):
    """W = s*V with the planned coefficients reproduces theta <- shrink*theta - (lr/B) g step by step
    (checked in float64 on a random gradient sequence touching random rows)."""
    from cfn_fast.backends.cuda_backend import NCOEF, batch_sizes, plan_steps
    sizes = batch_sizes(steps * 7 - 3, 7)
    plan = plan_steps(sizes, lr, weight_decay, scale=0.37, chunk=chunk, fold_below=1e-6)
    assert plan.coef.shape == (len(sizes), NCOEF) and plan.coef.dtype == np.float32
    covered = [t for t0, n, _ in plan.chunks for t in range(t0, t0 + n)]
    assert covered == list(range(len(sizes))) and all(n <= chunk for _, n, _ in plan.chunks)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(6, 3))
    v = ref / 0.37
    s = 0.37
    shrink = np.float64(np.float32(1 - lr * weight_decay))
    starts = {t0: fold for t0, _, fold in plan.chunks}
    for t, b in enumerate(sizes):
        if starts.get(t) is not None:                  # fold before this chunk
            assert starts[t] == pytest.approx(s, rel=1e-12)
            v, s = v * s, 1.0
        s_before, eta_lazy, eta_dense, shr = plan.coef[t].astype(np.float64)
        assert s_before == pytest.approx(s, rel=1e-6) and s_before >= 1e-6
        assert shr == shrink and eta_dense == np.float32(lr / b)
        g = np.zeros_like(ref)
        g[rng.integers(0, 6)] = rng.normal(size=3)
        ref = shrink * ref - np.float64(np.float32(lr / b)) * g
        v = v - eta_lazy * g
        s = s * shrink
        assert np.linalg.norm(s * v - ref) <= 1e-5 * np.linalg.norm(ref), f"step {t}"
    assert plan.end_scale == pytest.approx(s, rel=1e-9)


def test_plan_steps_rejects_sign_flipping_decay():
    from cfn_fast.backends.cuda_backend import plan_steps
    with pytest.raises(ValueError, match="lr \\* weight_decay"):
        plan_steps(np.array([5]), lr=2.0, weight_decay=0.5, scale=1.0)


def test_kernel_sources_found_from_the_repository():
    from cfn_fast.backends.cuda_module import kernel_files
    files = kernel_files()
    assert set(p.name for p in CU_FILES) <= set(files)


# ----------------------------------------------------------------------------- the kernels, emulated
def test_kernels_match_reference_in_host_emulation():
    """The real kernel source, compiled with g++ against a thread-per-lane CUDA shim, trained and
    evaluated against the NumPy reference (gradients, steps, epochs with graphs, inference)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the kernels cannot be emulated here")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_numeric_check.py"), "--emulate", "--quick"],
                            capture_output=True, text=True, env=_env(), timeout=600, cwd=ROOT)
    assert result.returncode == 0, (result.stdout[-4000:] + result.stderr[-4000:])
    assert "0 failed" in result.stdout


# ----------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_cuda_engine_matches_reference_on_gpu():
    from cfn_fast.backends import BackendUnavailable, resolve_backend
    try:
        resolve_backend("cuda")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    from cuda_emulator import run_checks
    rows = run_checks(emulate=False, quick=True, verbose=False)
    bad = [r for r in rows if not r[3]]
    assert not bad, bad[:10]
