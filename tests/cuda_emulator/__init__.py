"""Host emulation of cfn_fast's CUDA kernels, and the CUDA engine's numeric check (test support).

The *real* kernel source (kernels/cuda/*.cu, exactly what CuPy compiles) runs on the CPU: g++ builds
it against a small CUDA shim (:mod:`.shim`) that runs every GPU thread as an OS thread, with warp
collectives and ``__syncthreads`` as barriers; a fake ``cupy`` module (:mod:`.runtime`) stands in
for CuPy (guarded arrays, C-type-checked kernel arguments, graph capture of launches only).
:mod:`.numeric_check` compares the CUDA engine with the NumPy reference, emulated or on a GPU.

The tests import it as ``cuda_emulator`` (pytest puts ``tests/`` on ``sys.path``); elsewhere put
``tests`` on ``PYTHONPATH`` (``bench/gpu_check.sh`` does):

    PYTHONPATH=.:tests python -m cuda_emulator.numeric_check --emulate     # or bench/gpu_numeric_check.py
"""
from __future__ import annotations

from .numeric_check import layer_errors, random_problem, relative_error, run_checks
from .runtime import (
                      EmulationError,
                      FakeArray,
                      FakeKernel,
                      FakeModule,
                      alloc,
                      build_emulator,
                      check_guards,
                      expand_includes,
                      fake_cupy,
                      install_fake_cupy,
)

__all__ = [
                      "EmulationError",
                      "FakeArray",
                      "FakeKernel",
                      "FakeModule",
                      "alloc",
                      "build_emulator",
                      "check_guards",
                      "expand_includes",
                      "fake_cupy",
                      "install_fake_cupy",
                      "layer_errors",
                      "random_problem",
                      "relative_error",
                      "run_checks",
]

