"""NCCL between GPUs through CuPy: one shard's end of the shards' sums (a :class:`~.communicator.Communicator`).

Each shard runs in its own process (or thread) on its own GPU.  An NCCL communicator is made from a *unique
id* that one rank draws (``ncclGetUniqueId``) and every other rank must receive before they all join
(``ncclCommInitRank``, which blocks until every rank has joined).  :func:`share_unique_id` is that
hand-shake over any small key-value store both sides can reach: rank 0 draws the id and puts it under a key,
the other ranks poll the key until it appears (the pattern of Ray's collective library, which keeps the id in
a named actor).  :class:`FileIdStore` is such a store on a folder every rank sees (one machine, or a shared
file system); a Ray actor or any object with ``put(key, value)`` / ``get(key)`` serves as well.

:meth:`NcclCommunicator.allreduce` enqueues ``ncclAllReduce`` (sum) of a CuPy array on a CUDA stream (by
default the current one: call it inside ``with engine.stream:`` so that it follows the kernels that made the
block) and returns the summed array.  NCCL's sum order is fixed by its algorithm for a given set of GPUs, not
the host's shard order: float32 results agree with :class:`~cfn_fast.sharding.communicator.ThreadGroup`'s to
rounding.  CuPy is imported only when a communicator is made.
"""
from __future__ import annotations

import importlib
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

from ..backends.base import BackendUnavailable
from ..fileio import atomic_write

__all__ = ["NcclCommunicator", "IdStore", "FileIdStore", "share_unique_id", "load_nccl", "UNIQUE_ID_BYTES"]

#: bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES); CuPy gives it as a tuple of that many small ints
UNIQUE_ID_BYTES = 128


def load_nccl() -> Any:
    """CuPy's NCCL binding (``cupy.cuda.nccl``), or :class:`~cfn_fast.backends.BackendUnavailable` saying why."""
    try:
        with warnings.catch_warnings():          # CuPy warns when libnccl is missing: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            module = importlib.import_module("cupy.cuda.nccl")
    except ImportError as exc:
        raise BackendUnavailable(f"NCCL through CuPy is unavailable ({exc}); install CuPy with NCCL "
                                 "(pip install 'cfn_fast[cuda13]' nvidia-nccl-cu13)") from exc
    if getattr(module, "available", True) is False:
        raise BackendUnavailable("CuPy's NCCL binding is unavailable (cupy.cuda.nccl.available is False: the NCCL "
                                 "library could not be loaded); pip install nvidia-nccl-cu13")
    return module


def _checked_rank(rank: Any, size: Any) -> tuple[int, int]:
    for name, value in (("size", size), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    return rank, size


def _checked_id(unique_id: Any) -> tuple[int, ...]:
    """An NCCL unique id: UNIQUE_ID_BYTES integers of a signed or unsigned byte."""
    try:
        values = tuple(unique_id)
    except TypeError:
        raise TypeError(f"unique_id must be a sequence of {UNIQUE_ID_BYTES} integers (nccl.get_unique_id()), "
                        f"got {type(unique_id).__name__}") from None
    if len(values) != UNIQUE_ID_BYTES or not all(isinstance(v, int) and not isinstance(v, bool) and -128 <= v <= 255
                                                 for v in values):
        raise ValueError(f"unique_id must be {UNIQUE_ID_BYTES} byte values (nccl.get_unique_id()), got "
                         f"{len(values)} values")
    return values


# ============================================================================ the id hand-shake
class IdStore(Protocol):
    """Where rank 0 leaves the unique id for the others: ``get`` returns None until ``put`` has run."""

    def put(self, key: str, value: tuple[int, ...]) -> None: ...

    def get(self, key: str) -> tuple[int, ...] | None: ...


class FileIdStore:
    """An :class:`IdStore` on a folder every rank can read (written atomically: a reader sees the whole id or
    nothing).  Keys are file names: letters, digits, ``-``, ``_`` and ``.``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", key) or key.startswith("."):
            raise ValueError(f"key must be 1 to 100 letters, digits, '-', '_' or '.', got {key!r}")
        return self.folder / f"{key}.nccl-id.json"

    def put(self, key: str, value: tuple[int, ...]) -> None:
        path = self._path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(list(_checked_id(value)), f)

    def get(self, key: str) -> tuple[int, ...] | None:
        try:
            text = self._path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return _checked_id(json.loads(text))


def share_unique_id(rank: int, size: int, store: IdStore, key: str, *, timeout: float = 60.0,
                    poll: float = 0.05, nccl: Any = None) -> tuple[int, ...]:
    """The group's NCCL unique id on every rank: rank 0 draws it (``nccl.get_unique_id()``) and puts it in
    ``store`` under ``key``; the others wait for it there (``TimeoutError`` after ``timeout`` seconds).  Use a
    fresh ``key`` per group (a run id): a stale id left under an old key would join a group that is gone."""
    rank, size = _checked_rank(rank, size)
    if not (isinstance(timeout, (int, float)) and timeout > 0) or not (isinstance(poll, (int, float)) and poll > 0):
        raise ValueError(f"timeout and poll must be positive numbers of seconds, got {timeout!r} and {poll!r}")
    if rank == 0:
        unique_id = _checked_id((nccl or load_nccl()).get_unique_id())
        store.put(key, unique_id)
        return unique_id
    deadline = time.monotonic() + timeout
    while True:
        unique_id = store.get(key)
        if unique_id is not None:
            return _checked_id(unique_id)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"rank {rank} of {size}: no NCCL unique id under {key!r} after {timeout} s "
                               "(did rank 0 start, with the same store and key?)")
        time.sleep(poll)


# ============================================================================ the communicator
class NcclCommunicator:
    """Shard ``rank`` of ``size`` on its GPU (``device``, default the current one), joined through
    ``unique_id`` (:func:`share_unique_id`).  Making it blocks until every rank has made its own.
    ``nccl``: the NCCL binding (default ``cupy.cuda.nccl``; tests pass a stand-in)."""

    def __init__(self, rank: int, size: int, unique_id: Any, *, device: int | None = None, nccl: Any = None,
                 cupy: Any = None) -> None:
        self.rank, self.size = _checked_rank(rank, size)
        unique_id = _checked_id(unique_id)
        if device is not None and (isinstance(device, bool) or not isinstance(device, int) or device < 0):
            raise ValueError(f"device must be a GPU ordinal (an integer >= 0) or None, got {device!r}")
        self.nccl = nccl if nccl is not None else load_nccl()
        self.cp = cupy if cupy is not None else importlib.import_module("cupy")
        self.device = self.cp.cuda.Device(device) if device is not None else self.cp.cuda.Device()
        with self.device:
            self.comm = self.nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.dtypes = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}

    @classmethod
    def join(cls, rank: int, size: int, store: IdStore, key: str, *, device: int | None = None,
             timeout: float = 60.0, nccl: Any = None, cupy: Any = None) -> "NcclCommunicator":
        """:func:`share_unique_id`, then the communicator: what each shard's process calls."""
        nccl = nccl if nccl is not None else load_nccl()
        unique_id = share_unique_id(rank, size, store, key, timeout=timeout, nccl=nccl)
        return cls(rank, size, unique_id, device=device, nccl=nccl, cupy=cupy)

    def allreduce(self, block: Any, stream: Any = None) -> Any:
        """The sum over every shard of ``block`` (a C-contiguous float32 or float64 CuPy array on this
        communicator's GPU), a new array, enqueued on ``stream`` (default: the current stream)."""
        cp = self.cp
        if self.comm is None:
            raise RuntimeError("this NCCL communicator was closed or aborted")
        if not isinstance(block, cp.ndarray):
            raise TypeError(f"block must be a CuPy array on the GPU, got {type(block).__name__}")
        dtype = self.dtypes.get(str(block.dtype))
        if dtype is None:
            raise TypeError(f"block must be float32 or float64, got {block.dtype}")
        if not block.flags.c_contiguous:
            raise ValueError("block must be C-contiguous (cupy.ascontiguousarray)")
        if block.device.id != self.device.id:
            raise ValueError(f"block is on GPU {block.device.id}, this communicator on GPU {self.device.id}")
        stream = stream if stream is not None else cp.cuda.get_current_stream()
        total = cp.empty_like(block)
        self.comm.allReduce(block.data.ptr, total.data.ptr, block.size, dtype, self.nccl.NCCL_SUM, stream.ptr)
        return total

    def close(self) -> None:
        """Free the NCCL communicator (every rank calls it; the communicator is unusable afterwards)."""
        comm, self.comm = self.comm, None
        if comm is not None:
            comm.destroy()

    def abort(self) -> None:
        """Abandon the communicator at once (a shard failed): pending collectives on the other ranks fail."""
        comm, self.comm = self.comm, None
        if comm is not None:
            comm.abort()
