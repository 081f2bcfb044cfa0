"""Build the Cython + OpenMP CPU kernels of cfn_fast.

Every ``kernels/cpu/*.pyx`` becomes ``cfn_fast.kernels.<name>`` (``cfn_fast/kernels`` is a
relative symlink to ``kernels/``, so ``build_ext --inplace`` puts it in ``kernels/``).  OpenMP is used when
the compiler accepts ``-fopenmp``; otherwise the kernels build single-threaded
(``prange`` degrades to a plain loop), so the package still installs everywhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def _compiler_accepts(flag: str) -> bool:
    """True when the C compiler builds a trivial OpenMP program with ``flag``."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        result = subprocess.run([cc, flag, str(src), "-o", str(Path(tmp) / "probe")],
                                capture_output=True)
        return result.returncode == 0


def _extensions() -> list[Extension]:
    openmp = sys.platform != "win32" and os.environ.get("CFN_FAST_NO_OPENMP") != "1" \
        and _compiler_accepts("-fopenmp")
    compile_args = ["-O3", "-ffast-math", "-fno-finite-math-only"] if sys.platform != "win32" else ["/O2"]
    if os.environ.get("CFN_FAST_NATIVE") == "1":
        compile_args.append("-march=native")
    link_args: list[str] = []
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    extensions = []
    for pyx in sorted((HERE / "kernels" / "cpu").glob("*.pyx")):
        extensions.append(Extension(
            f"cfn_fast.kernels.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            # the C headers the .pyx includes (kernels/cpu/cfn_rows.h): rebuilds follow them, sdists carry them
            depends=[str(h.relative_to(HERE)) for h in sorted(pyx.parent.glob("*.h"))],
            include_dirs=[np.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ))
    return extensions


setup(
    ext_modules=cythonize(_extensions(), language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False,
                                               "cdivision": True, "initializedcheck": False}),
)
