"""Arrays from other libraries in, arrays for other libraries out (DLPack and the array interfaces).

Every :class:`~cfn_fast.CFN` method that takes ids, rating rows, codes or features accepts NumPy arrays,
SciPy sparse matrices, CuPy arrays, PyTorch tensors, JAX arrays, anything with ``__dlpack__``,
``__array_interface__``, ``__cuda_array_interface__`` or the buffer protocol, and plain Python sequences.
The rule is **no host copy when the data already lives where the backend computes**:

======================================  ====================================================================
input                                    what the engine receives
======================================  ====================================================================
NumPy, buffer, ``__array_interface__``   the same array (``np.asarray``, a view)
PyTorch CPU tensor, JAX CPU array,       a NumPy *view* of the same memory through DLPack
other CPU ``__dlpack__`` producers       (a tensor that requires grad is detached first: no copy either)
SciPy sparse                             the sparse matrix itself
CuPy / CUDA torch / CUDA JAX arrays      cuda backend: a CuPy view (``cupy.from_dlpack``, no copy) where the
                                         engine takes device arrays (codes, features of ``decode``); the
                                         ``numpy`` / ``cpu`` backends and host-side bookkeeping (id lookup,
                                         centring): one **explicit device→host copy**
======================================  ====================================================================

Results come back as ``output=``:

``"numpy"`` (default)  a host NumPy array.
``"cupy"``             a CuPy array (on the device when the result is there already; else one upload);
                       without a GPU that CuPy reaches, ``ValueError`` before any work.
``"torch"``            a PyTorch tensor sharing the result's memory (``torch.from_numpy`` / ``from_dlpack``).
``"jax"``              a JAX array (JAX may copy: its arrays are immutable).
``"dlpack"``           a DLPack capsule of the result (consumed once by ``torch.from_dlpack``,
                       ``cupy.from_dlpack``, ...).
``"like"``             the library and device of the call's main array input (ids, rows or codes): a CUDA
                       torch tensor in gives a CUDA torch tensor out, a list or NumPy array gives NumPy.

:func:`to_host` is the one function that turns any of these inputs into what the NumPy-side validation
code expects; :func:`to_output` is the one that hands results back.  Neither imports an optional library
unless the caller's array came from it (``import cfn_fast`` never needs CuPy, PyTorch or JAX).
"""
from __future__ import annotations

import importlib
import numbers
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

__all__ = ["OUTPUTS", "Origin", "origin_of", "to_host", "to_device", "is_device_array", "to_output",
           "check_output", "cuda_stream", "caller_stream", "current_caller_stream", "cupy_module", "library_of",
           "cuda_device_problem"]

OUTPUTS = ("numpy", "cupy", "torch", "jax", "dlpack", "like")

# DLPack device types (dlpack.h, DLDeviceType)
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_HOST_DEVICES = (_DL_CPU, _DL_CUDA_HOST)


@dataclass(frozen=True)
class Origin:
    """Where an input array came from: its library (``numpy``, ``cupy``, ``torch``, ``jax``, ``scipy``)
    and device (``"cpu"`` or ``"cuda"``, with the device ordinal)."""

    library: str = "numpy"
    device: str = "cpu"
    device_id: int = 0


def library_of(obj: Any) -> str:
    root = type(obj).__module__.split(".", 1)[0]
    if root in ("torch", "cupy", "jax", "jaxlib"):
        return "jax" if root == "jaxlib" else root
    if sp.issparse(obj):
        return "scipy"
    return "numpy"


def _dlpack_device(obj: Any) -> tuple[int, int] | None:
    method = getattr(obj, "__dlpack_device__", None)
    if method is None:
        return None
    try:
        kind, ordinal = method()
        return int(kind), int(ordinal)
    except Exception:  # a producer that cannot tell (e.g. a deleted JAX buffer): treat as unknown
        return None


def is_device_array(obj: Any) -> bool:
    """True for arrays whose memory is on a CUDA device (CuPy, CUDA torch/JAX, ``__cuda_array_interface__``)."""
    if isinstance(obj, np.ndarray) or sp.issparse(obj):
        return False
    device = _dlpack_device(obj)
    if device is not None:
        return device[0] not in _HOST_DEVICES
    return hasattr(obj, "__cuda_array_interface__")


def origin_of(obj: Any) -> Origin:
    """The :class:`Origin` of ``obj`` (plain Python data counts as NumPy on the host)."""
    library = library_of(obj)
    if not is_device_array(obj):
        return Origin(library, "cpu", 0)
    device = _dlpack_device(obj)
    return Origin(library, "cuda", 0 if device is None else device[1])


def _host_view(obj: Any) -> np.ndarray:
    """A NumPy view of a host array from another library (no copy)."""
    if getattr(obj, "requires_grad", False):  # torch refuses to export a tensor in an autograd graph
        obj = obj.detach()
    if hasattr(obj, "__dlpack__"):
        try:
            return np.from_dlpack(obj)
        except (BufferError, TypeError, RuntimeError, ValueError):
            pass  # e.g. a dtype DLPack cannot carry (bool in old producers): fall back to the array protocol
    return np.asarray(obj)


def _device_to_host(obj: Any) -> np.ndarray:
    """One explicit device→host copy of a CUDA array, through the producer's own library."""
    library = library_of(obj)
    if library == "torch":
        return obj.detach().cpu().numpy()
    if library == "jax":
        return np.asarray(obj)  # JAX's __array__ copies device buffers to the host
    try:
        import cupy
    except ImportError:
        raise TypeError(f"a {type(obj).__name__} on a CUDA device needs CuPy to be copied to the host "
                        f"(pip install 'cfn_fast[cuda12]'), or pass a host array") from None
    return cupy.asnumpy(cupy.from_dlpack(obj) if hasattr(obj, "__dlpack__") else cupy.asarray(obj))


def to_host(obj: Any) -> Any:
    """``obj`` as something NumPy-side code can read, without a copy where the data is on the host.

    NumPy arrays, SciPy sparse matrices, pandas objects, dicts, strings, scalars and Python sequences are
    returned unchanged (callers validate them as before); CPU tensors/arrays of other libraries become a
    NumPy view of the same memory; CUDA arrays are copied to the host once (see the module notes).
    """
    if obj is None or isinstance(obj, (np.ndarray, np.generic, str, bytes, dict, list, tuple, numbers.Number)) \
            or sp.issparse(obj):
        return obj
    if is_device_array(obj):
        return _device_to_host(obj)
    if library_of(obj) != "numpy" or hasattr(obj, "__dlpack__"):
        return _host_view(obj)
    return obj  # pandas, array-likes with __array__ / __array_interface__: np.asarray downstream


def to_device(obj: Any, dtype: Any = np.float32) -> Any:
    """A CuPy array of ``obj`` for the cuda engine: a view of CUDA memory (no copy), an upload otherwise."""
    import cupy
    if is_device_array(obj):
        arr = cupy.from_dlpack(obj) if hasattr(obj, "__dlpack__") else cupy.asarray(obj)
    else:
        arr = cupy.asarray(to_host(obj))
    return arr if dtype is None else arr.astype(dtype, copy=False)


def check_output(output: Any) -> str:
    """Validate an ``output=`` argument (before any work is done): ``"cupy"`` also needs CuPy
    (``ImportError``) and a GPU it reaches (``ValueError``)."""
    if not isinstance(output, str) or output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(repr(o) for o in OUTPUTS)}, got {output!r}")
    if output == "cupy":
        _check_cupy_device()
    return output


def _check_cupy_device() -> None:
    """A CuPy result lives on a GPU: without one, CuPy would fail on the first upload with a raw
    ``CUDARuntimeError`` (after the work is done); say so before, in the terms of the call."""
    cupy_module()  # not installed: ImportError naming cupy
    problem = cuda_device_problem()
    if problem is not None:
        raise ValueError(f"output='cupy' needs a CUDA GPU, and CuPy reaches none ({problem}); "
                         f"use output='numpy' (the default) on this machine")


@lru_cache(maxsize=None)
def cuda_device_problem() -> str | None:
    """Why CuPy cannot compute on a CUDA GPU here (not installed, no GPU, no driver), or ``None`` when it
    can: the one probe behind ``backend="cuda"`` and ``output="cupy"``, run once per process."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return "CuPy is not installed (pip install 'cfn_fast[cuda12]' or 'cfn_fast[cuda13]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA GPU"
    except Exception as exc:  # CUDA driver missing or broken
        return f"CuPy cannot reach a CUDA GPU ({type(exc).__name__}: {exc})"
    return None


def to_output(result: Any, output: str, like: Origin | None = None) -> Any:
    """Hand ``result`` (a NumPy or CuPy array) back as ``output`` (see the module notes); ``like`` is the
    :class:`Origin` of the call's main input, used by ``output="like"``."""
    output = check_output(output)
    on_device = library_of(result) == "cupy"
    if output == "like":
        like = like or Origin()
        if like.library in ("torch", "jax", "cupy"):
            return _as_library(result, like.library, like.device == "cuda", like.device_id)
        output = "numpy"
    if output == "numpy":
        return cupy_module().asnumpy(result) if on_device else result
    if output == "dlpack":
        return result.__dlpack__()
    return _as_library(result, output, on_device, 0)


def _as_library(result: Any, library: str, on_device: bool, device_id: int) -> Any:
    result_on_device = library_of(result) == "cupy"
    if library == "cupy":
        cp = cupy_module()
        return result if result_on_device else cp.asarray(result)
    if library == "torch":
        torch = _optional("torch", "output='torch'")
        tensor = torch.from_dlpack(result) if result_on_device else torch.from_numpy(np.ascontiguousarray(result))
        return tensor.to(f"cuda:{device_id}") if on_device and not result_on_device else tensor
    jnp = _optional("jax.numpy", "output='jax'")
    if on_device and not result_on_device:
        import jax
        return jax.device_put(result, jax.devices("gpu")[device_id])
    return jnp.from_dlpack(result) if result_on_device else jnp.asarray(result)


def _optional(module: str, why: str) -> Any:
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{why} needs {module.split('.')[0]}, which is not installed") from None


def cupy_module() -> Any:
    return _optional("cupy", "a CuPy result (output='cupy' or a CUDA input)")


# ----------------------------------------------------------------------------- CUDA streams
def cuda_stream(stream: Any) -> Any:
    """A CuPy stream object for a caller's stream: a CuPy ``Stream``/``ExternalStream`` as is; a raw
    ``cudaStream_t`` pointer (``int``), a ``torch.cuda.Stream`` (its ``cuda_stream``) or any object with
    ``__cuda_stream__`` wrapped as ``cupy.cuda.ExternalStream`` (the caller keeps it alive)."""
    if isinstance(stream, (bool, np.bool_)):
        raise TypeError(f"stream must be a CuPy stream, a torch.cuda.Stream or a cudaStream_t pointer (int), "
                        f"got {stream!r}")
    if library_of(stream) == "cupy":
        return stream
    pointer = _stream_pointer(stream)
    cp = _optional("cupy", "stream=")
    return cp.cuda.ExternalStream(pointer)


def _stream_pointer(stream: Any) -> int:
    if isinstance(stream, (numbers.Integral, np.integer)):
        pointer = int(stream)
    elif hasattr(stream, "__cuda_stream__"):  # the CUDA stream protocol: (version, pointer)
        pointer = int(stream.__cuda_stream__()[1])
    elif isinstance(getattr(stream, "cuda_stream", None), numbers.Integral):  # torch.cuda.Stream
        pointer = int(stream.cuda_stream)
    else:
        raise TypeError(f"stream must be a CuPy stream, a torch.cuda.Stream or a cudaStream_t pointer (int), "
                        f"got {type(stream).__name__}")
    if pointer < 0:
        raise ValueError(f"a cudaStream_t pointer cannot be negative, got {pointer}")
    return pointer


_CALLER = threading.local()


@contextmanager
def caller_stream(stream: Any) -> Iterator[None]:
    """Inside the block, the cuda engine's inference launches on this thread go to ``stream``
    (see :func:`cuda_stream`); other threads keep their own streams."""
    previous = getattr(_CALLER, "stream", None)
    _CALLER.stream = cuda_stream(stream)
    try:
        with _CALLER.stream:
            yield
    finally:
        _CALLER.stream = previous


def current_caller_stream() -> Any:
    """The stream set by :func:`caller_stream` on this thread, or ``None``."""
    return getattr(_CALLER, "stream", None)
