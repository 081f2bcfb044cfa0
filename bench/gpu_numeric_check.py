"""CUDA engine vs the NumPy reference on fresh random data (on a GPU, or ``--emulate`` on the host).

A thin command line: the check and the host emulation are test support, in ``tests/cuda_emulator/``
(see its docstring).  Run from the repository root with both on the path, as bench/gpu_check.sh does:

    PYTHONPATH=.:tests python bench/gpu_numeric_check.py              # on a GPU (CuPy)
    PYTHONPATH=.:tests python bench/gpu_numeric_check.py --emulate    # no GPU
"""
from __future__ import annotations

try:
    from cuda_emulator.numeric_check import main
except ImportError as exc:  # pragma: no cover - a usage error
    raise SystemExit(f"bench/gpu_numeric_check.py needs the repository and its tests on the path "
                     f"(PYTHONPATH=.:tests, from the repository root): {exc}") from exc

if __name__ == "__main__":
    raise SystemExit(main())
