"""Backends behind one API: ``numpy`` (reference), ``cpu`` (Cython + OpenMP), ``cuda`` (CuPy + CUDA C).

``resolve_backend("auto")`` picks ``cuda`` when CuPy sees a GPU, else ``cpu`` when the
compiled kernels import, else ``numpy``.  Nothing here imports CuPy at import time.
"""
from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Sequence

from ..interop import cuda_device_problem
from .base import BackendUnavailable, Engine, TrainConfig, epoch_order

__all__ = ["Engine", "TrainConfig", "epoch_order", "BACKENDS", "resolve_backend", "engine_class",
           "available_backends", "BackendUnavailable", "fallback_backend"]

log = logging.getLogger("cfn_fast")

BACKENDS = ("numpy", "cpu", "cuda")

_MODULES = {
    "numpy": ("cfn_fast.backends.numpy_backend", "NumpyEngine"),
    "cpu": ("cfn_fast.backends.cpu_backend", "CpuEngine"),
    "cuda": ("cfn_fast.backends.cuda_backend", "CudaEngine"),
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


def resolve_backend(name: str = "auto") -> str:
    """The concrete backend for ``name``; raises :class:`BackendUnavailable` with the reason."""
    if name == "auto":
        for candidate in ("cuda", "cpu", "numpy"):
            if _why_unavailable(candidate) is None:
                return candidate
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS} or 'auto'")
    reason = _why_unavailable(name)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
    return name


def engine_class(name: str) -> type[Engine]:
    module, cls = _MODULES[resolve_backend(name)]
    return getattr(importlib.import_module(module), cls)


def fallback_backend(preferred: Sequence[str], fitted_on: str) -> str:
    """Where a model that travelled (a pickle, a loaded file) runs: the first of ``preferred`` that runs
    here, else ``"auto"`` resolved here; with a warning naming why the first could not.  The one policy
    for every model that arrives from elsewhere (``fitted_on``: the backend it ran on there)."""
    reason = None
    for candidate in (*preferred, "auto"):
        try:
            chosen = resolve_backend(candidate)
            break
        except (BackendUnavailable, ValueError) as exc:
            reason = reason or str(exc)
    else:  # pragma: no cover - "auto" always resolves (numpy at least)
        chosen = "numpy"
    if reason is not None:
        log.warning("%s; this model was fitted on backend %r and now runs on %r", reason, fitted_on, chosen)
    return chosen
