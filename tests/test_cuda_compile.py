"""The CUDA engine without a GPU: kernels compile (nvcc, sm_80/sm_90) without register spills, the
module loads lazily, the host-side planning is the reference's maths, and the kernels themselves
run against the NumPy reference in host emulation (bench/gpu_numeric_check.py --emulate).

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

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "kernels" / "cuda"
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
ARCHS = ("sm_80", "sm_90")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


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
    from cfn_fast.backends.cuda_backend import KERNEL_NAMES, kernel_source
    source = kernel_source()
    for name in KERNEL_NAMES:
        assert re.search(rf'extern\s+"C"\s+__global__\s+void\s+(CFN_BOUNDS_\w*\s+)?{name}\s*\(', source), f"kernel {name} not found"
    # the shared header is inlined exactly once, so the single RawModule needs no include path
    assert source.count("#define CFN_COMMON_CUH") == 1
    assert not re.search(r'^\s*#\s*include\s+"', source, re.M)


def test_nvrtc_compiles_the_module_when_available():
    """The exact source CuPy compiles (one translation unit), through NVRTC, for sm_80 and sm_90."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # no CuPy or no libnvrtc here
        pytest.skip(f"NVRTC is not available ({type(exc).__name__})")
    from cfn_fast.backends.cuda_backend import _COMPILE_OPTIONS, kernel_source
    source = kernel_source()
    for arch in ARCHS:
        prog = nvrtc.createProgram(source, "cfn_fast.cu", (), ())
        try:
            nvrtc.compileProgram(prog, list(_COMPILE_OPTIONS) + [f"-arch={arch}", "-Xptxas=-v"])
            log = nvrtc.getProgramLog(prog)
            assert len(nvrtc.getCUBIN(prog)) > 0
        except Exception as exc:
            pytest.fail(f"NVRTC failed for {arch}: {exc}\n{nvrtc.getProgramLog(prog)[-3000:]}")
        finally:
            nvrtc.destroyProgram(prog)
        spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
        assert spills and not any(int(a) or int(b) for a, b in spills), f"spills under NVRTC ({arch}):\n{log}"


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
    from cfn_fast.backends.cuda_backend import _kernel_files
    files = _kernel_files()
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
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_numeric_check
    finally:
        sys.path.pop(0)
    rows = gpu_numeric_check.run_checks(emulate=False, quick=True, verbose=False)
    bad = [r for r in rows if not r[3]]
    assert not bad, bad[:10]
