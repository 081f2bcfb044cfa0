"""Backends behind one API: ``numpy`` (reference), ``cpu`` (Cython + OpenMP), ``cuda`` (CuPy + CUDA C).

``resolve_backend("auto")`` picks ``cuda`` when CuPy sees a GPU, else ``cpu`` when the
compiled kernels import, else ``numpy``; for a weight storage type (``dtype``) only among the engines
that hold it (each engine class lists its own in ``dtypes``), and for kernelised weights (``kernel_dim > 0``) only
among :data:`KERNELISED_BACKENDS`.  Nothing here imports CuPy at import time.
"""
from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Sequence

from ..interop import cuda_device_problem
from ..settings import DTYPES, check
from .base import BackendUnavailable, Engine, TrainConfig, epoch_order

__all__ = ["Engine", "TrainConfig", "epoch_order", "BACKENDS", "resolve_backend", "engine_class", "shard_engine_class",
           "available_backends", "BackendUnavailable", "fallback_backend", "holds_dtype",
           "trains_dropout", "KERNELISED_BACKENDS"]

log = logging.getLogger("cfn_fast")

BACKENDS = ("numpy", "cpu", "cuda")

_MODULES = {
    "numpy": ("cfn_fast.backends.numpy_backend", "NumpyEngine"),
    "cpu": ("cfn_fast.backends.cpu_backend", "CpuEngine"),
    "cuda": ("cfn_fast.backends.cuda_backend", "CudaEngine"),
}
#: The backends that train kernelised weights (``kernel_dim > 0``), and the cpu engine that does.
KERNELISED_BACKENDS = ("numpy", "cpu")
_KERNELISED_CPU = ("cfn_fast.backends.cpu_kernelised", "KernelisedCpuEngine")

#: Each backend's engine of one shard of a sharded network (the split step, :mod:`cfn_fast.backends.shard_base`).
_SHARD_MODULES = {
    "numpy": ("cfn_fast.backends.numpy_shard", "NumpyShardEngine"),
    "cpu": ("cfn_fast.backends.cpu_shard", "CpuShardEngine"),
    "cuda": ("cfn_fast.backends.cuda_shard", "CudaShardEngine"),
}


@lru_cache(maxsize=None)
def _why_unavailable(name: str) -> str | None:
    if name == "numpy":
        return None
    if name == "cpu":
        try:
            importlib.import_module("cfn_fast.backends.cpu_backend")
        except ImportError as exc:
            return f"the compiled CPU kernels do not import ({exc}); reinstall with `pip install .`"
        return None
    if name == "cuda":
        return cuda_device_problem()  # the one probe, shared with output="cupy"
    return f"unknown backend {name!r}; choose one of {BACKENDS} or 'auto'"


def available_backends() -> list[str]:
    return [name for name in BACKENDS if _why_unavailable(name) is None]


def holds_dtype(name: str, dtype: str) -> bool:
    """Whether backend ``name``'s engine stores weights as ``dtype`` (its class's ``dtypes``).  Reads the class
    without starting anything (the cuda module imports CuPy only when an engine is built); False when the
    backend's module does not import."""
    module, cls = _MODULES[name]
    try:
        return dtype in getattr(importlib.import_module(module), cls).dtypes
    except ImportError:
        return False


def trains_dropout(name: str) -> bool:
    """Whether backend ``name``'s engine trains with dropout (its class's ``trains_dropout``), read as
    :func:`holds_dtype` reads ``dtypes``."""
    module, cls = _MODULES[name]
    try:
        return bool(getattr(importlib.import_module(module), cls).trains_dropout)
    except ImportError:
        return False


def resolve_backend(name: str = "auto", dtype: str = "float32", dropout: float = 0.0, kernel_dim: int = 0) -> str:
    """The concrete backend for ``name`` that holds weights as ``dtype`` and, for ``dropout > 0``, trains with
    dropout and, for ``kernel_dim > 0``, kernelised weights; raises :class:`BackendUnavailable` with the reason,
    ``ValueError`` for an unknown name or a backend that does not hold ``dtype`` or train the dropout or the kernel."""
    check(isinstance(dtype, str) and dtype in DTYPES, "dtype", dtype, " or ".join(repr(d) for d in DTYPES))
    if name == "auto":
        for candidate in ("cuda", "cpu", "numpy"):
            if _why_unavailable(candidate) is None and holds_dtype(candidate, dtype) and \
                    (not dropout or trains_dropout(candidate)) and (not kernel_dim or candidate in KERNELISED_BACKENDS):
                return candidate
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS} or 'auto'")
    if kernel_dim and name not in KERNELISED_BACKENDS:   # said before the GPU is probed or used
        raise ValueError(f"kernel_dim is not on {name} yet; use backend='cpu' or 'numpy'")
    if dtype != "float32" and not holds_dtype(name, dtype):   # said before the GPU is probed or used
        others = " or ".join(repr(b) for b in ("cpu", "numpy") if b != name and holds_dtype(b, dtype))
        raise ValueError(f"{dtype} weight storage is not on {name} yet; use backend={others}")
    if dropout and not trains_dropout(name):                   # said before the GPU is probed or used
        raise ValueError(f"dropout is not on {name} yet; use backend='cpu' or 'numpy'")
    reason = _why_unavailable(name)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
    return name


def engine_class(name: str, kernel_dim: int = 0) -> type[Engine]:
    """The engine class of backend ``name`` (for ``kernel_dim > 0``, the one that trains kernelised weights)."""
    name = resolve_backend(name, kernel_dim=kernel_dim)
    module, cls = _KERNELISED_CPU if kernel_dim and name == "cpu" else _MODULES[name]
    return getattr(importlib.import_module(module), cls)


def shard_engine_class(name: str) -> type:
    """The split-step engine of backend ``name`` (resolved as :func:`resolve_backend` does)."""
    module, cls = _SHARD_MODULES[resolve_backend(name)]
    return getattr(importlib.import_module(module), cls)


def fallback_backend(preferred: Sequence[str], fitted_on: str, dtype: str = "float32", dropout: float = 0.0) -> str:
    """Where a model that travelled (a pickle, a loaded file) runs: the first of ``preferred`` that runs
    here, else ``"auto"`` resolved here; with a warning naming why the first could not.  The one policy
    for every model that arrives from elsewhere (``fitted_on``: the backend it ran on there; ``dtype``: the
    model's weight storage, which the backend chosen holds; ``dropout``: its training's, which it trains)."""
    reason = None
    for candidate in (*preferred, "auto"):
        try:
            chosen = resolve_backend(candidate, dtype, dropout)
            break
        except (BackendUnavailable, ValueError) as exc:
            reason = reason or str(exc)
    else:  # pragma: no cover - "auto" always resolves (numpy at least)
        chosen = "numpy"
    if reason is not None:
        log.warning("%s; this model was fitted on backend %r and now runs on %r", reason, fitted_on, chosen)
    return chosen
