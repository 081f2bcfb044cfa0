"""The suite's pytest plugin (hooks, options, fixtures), loaded by the suite's ``conftest.py``.

Options: ``--cfn-quick`` (fewer rounds), ``--cfn-slow`` (ML-10M shape on the cpu backend too).
Machine info (CPU model, cores, threads, SIMD path, GPU, CuPy / CUDA versions and the memory
bandwidth of a STREAM-like triad, measured once per run) goes into the JSON's ``machine_info``.

What ran is recorded for ``cfn bench suite`` (:mod:`.runner`), which sets ``CFN_BENCH_OUTCOMES`` to
a file: the cfn_fast it imported and the backends that work there, the cases passed, skipped (with
backend and reason) and failed (with the one-line error), and the exit status.  ``CFN_BENCH_PACKAGE``
names the cfn_fast folder the parent imported: the suite refuses to measure another one (a checkout
shadowing the installed wheel).  ``CFN_BENCH_SMOKE=1`` (``cfn bench suite --smoke``): tiny data, one
round per case (:mod:`.workloads`).
"""
from __future__ import annotations

import importlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cfn_fast
from cfn_fast.backends import BACKENDS, BackendUnavailable, available_backends, resolve_backend

from . import workloads as W
from .stored import this_machine

__all__ = ["backend", "machine_bandwidth", "pytest_addoption", "pytest_benchmark_update_machine_info",
           "pytest_collection_modifyitems", "pytest_collectreport", "pytest_configure", "pytest_runtest_logreport",
           "pytest_sessionfinish", "quick", "record", "require", "slow", "triad_bandwidth"]

PACKAGE = Path(cfn_fast.__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cfn_fast benchmark suite")
    group.addoption("--cfn-quick", action="store_true", help="fewer rounds per case (a few minutes in all)")
    group.addoption("--cfn-slow", action="store_true", help="also the ML-10M shape on the cpu backend")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "macro: whole training runs")
    config.addinivalue_line("markers", "micro: one stage of the training step or of inference")
    expected = os.environ.get("CFN_BENCH_PACKAGE")
    if expected and Path(expected).resolve() != PACKAGE:
        problem = (f"the benchmark suite imported cfn_fast from {PACKAGE}, not the one being benchmarked "
                   f"({Path(expected).resolve()}): something on the path shadows it")
        _OUTCOMES["error"] = problem
        _write_outcomes(None)
        raise pytest.UsageError(problem)
    if os.environ.get("CFN_BENCH_EMULATE_CUDA") == "1":
        # smoke test without a GPU (tests/ on the path): the cuda cases run the real kernels on the host,
        # through the emulated CuPy of tests/cuda_emulator (slow: tiny CFN_BENCH_SMOKE data only)
        importlib.import_module("cuda_emulator").install_fake_cupy()


# ----------------------------------------------------------------------------- what ran
_OUTCOMES: dict[str, Any] = {"passed": [], "skipped": [], "failed": []}
_BACKEND_OF: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "backend" in callspec.params:
            _BACKEND_OF[item.nodeid] = callspec.params["backend"]


def _crash_line(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else "failed"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    case = {"case": report.nodeid, "backend": _BACKEND_OF.get(report.nodeid)}
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _OUTCOMES["skipped"].append({**case, "reason": reason.removeprefix("Skipped: ")})
    elif report.failed:
        _OUTCOMES["failed"].append({**case, "error": _crash_line(report)})
    elif report.when == "call":
        _OUTCOMES["passed"].append(case)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _OUTCOMES["failed"].append({"case": report.nodeid, "backend": None, "error": _crash_line(report)})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _write_outcomes(int(exitstatus))


def _write_outcomes(exitstatus: int | None) -> None:
    target = os.environ.get("CFN_BENCH_OUTCOMES")
    if target:
        record_ = {**_OUTCOMES, "exitstatus": exitstatus, "cfn_fast": str(PACKAGE), "smoke": W.SMOKE,
                   "backends": available_backends()}
        Path(target).write_text(json.dumps(record_), encoding="utf-8")


# ----------------------------------------------------------------------------- machine info
def triad_bandwidth(n: int = 1 << 23, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s of a STREAM-like triad ``a = b + s c`` on float64 arrays of n
    elements (64 MiB each: well beyond the caches), one slice per core in threads (NumPy releases the
    GIL), best of ``repeats``.  NumPy computes it in two passes (``a = s c``; ``a += b``), so 5 array
    transfers are counted (STREAM counts 3 for its fused loop)."""
    threads = max(1, os.cpu_count() or 1)
    a, b, c = (np.full(n, v) for v in (0.0, 1.0, 2.0))
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def part(lo: int, hi: int) -> None:
        np.multiply(c[lo:hi], 3.0, out=a[lo:hi])
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    best = np.inf
    for _ in range(repeats):
        workers = [threading.Thread(target=part, args=(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return 5 * 8 * n / best / 1e9


def _gpu_info() -> dict[str, Any]:
    try:
        resolve_backend("cuda")
    except BackendUnavailable as exc:
        return {"gpu": None, "gpu_unavailable": str(exc)}
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"gpu": name, "cupy": cp.__version__, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion()}


_BANDWIDTH: dict[str, float] = {}


def machine_bandwidth() -> float:
    """The triad bandwidth, measured once per process."""
    if "gbs" not in _BANDWIDTH:
        # smoke runs check code paths only: a small triad (its figure means nothing there)
        _BANDWIDTH["gbs"] = triad_bandwidth(1 << 18, 2) if W.SMOKE else triad_bandwidth()
    return _BANDWIDTH["gbs"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    machine_info.update({
        **this_machine(), "numpy": np.__version__,
        "triad_gb_per_s": round(machine_bandwidth(), 3), "load_average_1m": load[0],
        "cfn_quick": bool(config.getoption("--cfn-quick")), "cfn_slow": bool(config.getoption("--cfn-slow")),
        "cfn_smoke": W.SMOKE,
        **_gpu_info()})


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def quick(pytestconfig) -> bool:
    return bool(pytestconfig.getoption("--cfn-quick"))


@pytest.fixture(scope="session")
def slow(pytestconfig) -> bool:
    return bool(pytestconfig.getoption("--cfn-slow"))


def require(backend: str) -> str:
    """Skip the case (with the reason) when ``backend`` cannot run here."""
    try:
        resolve_backend(backend)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return require(request.param)


def record(benchmark, *, backend: str, case: str, bytes_moved: int, ratings_epochs: int = 0,
           **sizes: Any) -> None:
    """Describe a case in ``extra_info``; after the run, add its throughput figures (min over rounds)."""
    info = benchmark.extra_info
    info.update(backend=backend, case=case, bytes=int(bytes_moved), ratings_epochs=int(ratings_epochs),
                sizes={k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in sizes.items()})
    stats = getattr(benchmark, "stats", None)
    best = getattr(getattr(stats, "stats", None), "min", None)
    timer = str(getattr(stats, "options", {}).get("timer", "perf_counter")) if stats else ""
    if best and "perf_counter" in timer:     # CPU seconds (--benchmark-timer) make no throughput
        info["gb_per_s"] = bytes_moved / best / 1e9
        if ratings_epochs:
            info["ratings_epochs_per_s"] = ratings_epochs / best
