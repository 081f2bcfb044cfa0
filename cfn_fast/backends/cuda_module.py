"""The CUDA engine's kernel module: sources found through ``importlib.resources``, compiled by CuPy.

The CUDA C sources are the package data of :mod:`cfn_fast.kernels.cuda` (``kernels/cuda/*.cu``,
``*.cuh``).  They are compiled as ONE translation unit through one :class:`cupy.RawModule`: the
source handed to NVRTC is a short wrapper that ``#include``\\ s every ``.cu`` file, and the
kernels' directory goes to NVRTC as ``-I<dir>`` (:func:`importlib.resources.as_file` gives a real
directory for it, extracted to a temporary one only when the package is zipped).  The wrapper
carries a digest of every source file, so CuPy's on-disk cache (keyed on the source text and the
options) recompiles whenever a kernel or header changes.

Nothing here imports CuPy at import time: the module compiles lazily, on the first GPU use.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Iterator
from importlib.resources import as_file, files
from typing import Any

from .base import BackendUnavailable

__all__ = [
    "COMPILE_OPTIONS",
    "KERNEL_NAMES",
    "KERNEL_PACKAGE",
    "compiled_kernels",
    "cuda_compile_options",
    "include_dir",
    "kernel_files",
    "kernel_source",
    "lineinfo_requested",
    "load_cupy",
    "module_options",
    "module_source",
]

#: the package whose data are the CUDA sources
KERNEL_PACKAGE = "cfn_fast.kernels.cuda"
#: every ``extern "C"`` kernel the engine fetches from the module
KERNEL_NAMES = ("cfn_epoch_tables", "cfn_batch_setup", "cfn_encode", "cfn_hidden_act", "cfn_output", "cfn_hidden_delta",
                "cfn_bias_side", "cfn_scatter_atomic", "cfn_scatter_segment", "cfn_scale", "cfn_predict_pairs",
                "cfn_shard_tables", "cfn_shard_rows", "cfn_shard_block_in")
#: NVRTC options of the module (besides ``-I`` and, on request, ``-lineinfo``)
COMPILE_OPTIONS = ("-std=c++17",)


# ============================================================================ the sources
def _sources() -> Any:
    return files(KERNEL_PACKAGE)


def kernel_files() -> dict[str, str]:
    """``{file name: text}`` of the ``.cu``/``.cuh`` files of :data:`KERNEL_PACKAGE`."""
    try:
        found = {p.name: p.read_text(encoding="utf-8") for p in _sources().iterdir()
                 if p.name.endswith((".cu", ".cuh"))}
    except (ModuleNotFoundError, OSError) as exc:
        raise FileNotFoundError(f"the CUDA kernel sources (package data of {KERNEL_PACKAGE}) were not found "
                                f"({exc}); reinstall cfn_fast") from exc
    if not any(name.endswith(".cu") for name in found):
        raise FileNotFoundError(f"no .cu file among the package data of {KERNEL_PACKAGE}; reinstall cfn_fast")
    return found


def module_source() -> str:
    """The translation unit handed to NVRTC: every ``.cu`` file ``#include``\\ d, in name order (each
    header once, by its include guard), headed by a digest of all sources (CuPy's cache key)."""
    sources = kernel_files()
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    lines = [f"// cfn_fast CUDA module; sources sha256 {digest.hexdigest()}"]
    lines += [f'#include "{name}"' for name in sorted(sources) if name.endswith(".cu")]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def include_dir() -> Iterator[str]:
    """A real directory holding the CUDA sources, for ``-I`` (temporary only if the package is zipped)."""
    with as_file(_sources()) as path:
        yield str(path)


def kernel_source() -> str:
    """The module's source with every local ``#include`` expanded (each file once), for tools that
    need the whole text in one string (e.g. the host emulation); NVRTC itself gets
    :func:`module_source` and ``-I``."""
    sources = kernel_files()
    seen: set[str] = set()

    def expand(text: str) -> str:
        out = []
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#include") and '"' in stripped:
                name = stripped.split('"')[1]
                if name not in sources:
                    raise FileNotFoundError(f"a CUDA source includes {name!r}, which is not among the sources")
                if name not in seen:
                    seen.add(name)
                    out.append(expand(sources[name]))
                continue
            out.append(line)
        return "\n".join(out)

    return expand(module_source())


# ============================================================================ options
def lineinfo_requested() -> bool:
    """``CFN_FAST_CUDA_LINEINFO=1``: compile the CUDA kernels with ``-lineinfo`` (Nsight Compute's
    source view).  Read when the kernels are first compiled in a process."""
    return os.environ.get("CFN_FAST_CUDA_LINEINFO", "0").lower() in ("1", "true", "yes", "on")


def cuda_compile_options(base: tuple[str, ...]) -> tuple[str, ...]:
    """The NVRTC options of the CUDA module: ``base`` plus ``-lineinfo`` when requested."""
    return base + ("-lineinfo",) if lineinfo_requested() and "-lineinfo" not in base else base


def module_options(directory: str, base: tuple[str, ...] = COMPILE_OPTIONS) -> tuple[str, ...]:
    """The options of the RawModule: ``base`` (``-lineinfo`` on request) and ``-I<directory>``."""
    return cuda_compile_options(base) + (f"-I{directory}",)


# ============================================================================ compilation
_MODULES: dict[tuple, Any] = {}


def load_cupy():
    """CuPy, or :class:`~cfn_fast.backends.BackendUnavailable` saying how to install it."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise BackendUnavailable(f"the CUDA engine needs CuPy ({exc}); pip install 'cfn_fast[cuda13]'") from exc


def compiled_kernels(cp) -> dict[str, Any]:
    """``{name: kernel}`` of the compiled module (one RawModule per CuPy module and options,
    compiled on first use; CuPy caches the binary on disk)."""
    key = (id(cp), cuda_compile_options(COMPILE_OPTIONS))
    if key not in _MODULES:
        with include_dir() as directory:
            module = cp.RawModule(code=module_source(), options=module_options(directory))
            # get_function loads the module: do it while the include directory certainly exists
            _MODULES[key] = {name: module.get_function(name) for name in KERNEL_NAMES}
    return _MODULES[key]
