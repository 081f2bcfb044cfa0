"""The host emulation's Python side: the kernels built with g++ (:func:`build_emulator`), guarded
device arrays, kernels called with C-type-checked arguments, and a fake ``cupy`` module
(:func:`fake_cupy`) with streams, graph capture and events, enough for the CUDA engine."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import types
import weakref
from pathlib import Path

import numpy as np

from .shim import EMU_HEADER, EMU_RUNTIME

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:(?:__launch_bounds__\([^)]*\)|CFN_BOUNDS_\w*)\s+)?(\w+)\s*\(([^)]*)\)\s*\{',
                        re.S)
_SCALAR = {"int": np.int32, "unsigned int": np.uint32, "long long": np.int64, "unsigned long long": np.uint64,
           "float": np.float32, "double": np.float64}


def _parse_params(params: str) -> list[tuple[str, str, bool]]:
    """``[(c_type_for_cast, base_type, is_pointer)]`` of a kernel's parameter list."""
    out = []
    for raw in params.split(","):
        text = " ".join(raw.replace("__restrict__", " ").split())
        pointer = "*" in text
        decl = text.rsplit("*", 1)[0] + "*" if pointer else " ".join(text.split()[:-1])
        base = decl.replace("const", " ").replace("*", " ")
        base = " ".join(base.split())
        if base not in _SCALAR:
            raise ValueError(f"unsupported kernel parameter type in {raw!r}")
        out.append((decl, base, pointer))
    return out


def build_emulator(source: str, workdir: Path, arch: int = 0) -> tuple[ctypes.CDLL, dict[str, list]]:
    """Compile the kernel source for the host; returns the library and each kernel's parameters.

    ``arch`` (e.g. 900) defines ``__CUDA_ARCH__`` so that the code paths of that architecture are
    the ones compiled (sm_90's vector atomics run on the shim's ``atomicAdd(float4*, float4)``).
    """
    kernels = {m.group(1): _parse_params(m.group(2)) for m in _SIGNATURE.finditer(source)}
    wrappers = []
    for name, params in kernels.items():
        args = ", ".join(f"*({decl}*)a[{i}]" for i, (decl, _, _) in enumerate(params))
        wrappers.append(f'extern "C" int emu_{name}(unsigned gx, unsigned bx, unsigned long long smem, void** a) {{\n'
                        f'    return cfn_emu_launch(gx, bx, smem, [a] {{ {name}({args}); }});\n}}')
    arch_line = f"#define __CUDA_ARCH__ {int(arch)}\n" if arch else ""
    text = (arch_line + EMU_HEADER + "\nint cfn_emu_launch(unsigned, unsigned, unsigned long long, const std::function<void()>&);\n"
            + source + "\n" + EMU_RUNTIME + "\n" + "\n".join(wrappers) + "\n")
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    lib_path = workdir / f"cfn_emu_{digest}.so"
    if not lib_path.exists():
        src = workdir / f"cfn_emu_{digest}.cpp"
        src.write_text(text)
        tmp = lib_path.with_name(f".{lib_path.name}.{os.getpid()}")
        cmd = ["g++", "-std=c++17", "-O1", "-g", "-pthread", "-fPIC", "-shared", "-w", str(src), "-o", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("host compilation of the CUDA kernels failed:\n" + result.stderr[-6000:])
        os.replace(tmp, lib_path)                       # atomic: parallel builds never see half a library
    lib = ctypes.CDLL(str(lib_path))
    lib.cfn_emu_error.restype = ctypes.c_char_p
    for name in kernels:
        fn = getattr(lib, f"emu_{name}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p)]
    return lib, kernels


class EmulationError(RuntimeError):
    pass


class _State:
    capture: list | None = None
    guarded: list = []          # (weakref to buffer, pad) of guarded allocations
    launches = 0


class FakeArray(np.ndarray):
    """A device array of the fake CuPy: a NumPy array with .get()/.set()."""

    def get(self, stream=None, out=None):
        _no_capture("ndarray.get")
        return np.array(self, copy=True)

    def set(self, arr, stream=None):
        _no_capture("ndarray.set")
        arr = np.asarray(arr)
        if not self.flags.c_contiguous:
            raise EmulationError("set() on a non-contiguous device array")
        if arr.dtype != self.dtype or arr.shape != self.shape:
            raise EmulationError(f"set(): {arr.dtype}{arr.shape} into {self.dtype}{self.shape}")
        np.ndarray.__setitem__(self, Ellipsis, arr)

    def fill(self, value):
        _no_capture("ndarray.fill")
        np.ndarray.fill(self, value)

    def copy(self, order="C"):
        _no_capture("ndarray.copy")
        out = alloc(self.shape, self.dtype)
        np.copyto(out, self)
        return out


_PAD = 4096
_CANARY = 0xA5


def alloc(shape, dtype) -> FakeArray:
    shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 2 * _PAD + 256, dtype=np.uint8)
    skip = (-raw.ctypes.data) % 256                    # CuPy's pool hands out 256-byte aligned blocks
    buf = raw[skip:skip + nbytes + 2 * _PAD]
    buf[:_PAD] = _CANARY
    buf[_PAD + nbytes:] = _CANARY
    arr = buf[_PAD:_PAD + nbytes].view(dtype).reshape(shape).view(FakeArray)
    _State.guarded.append((weakref.ref(raw), (skip, nbytes)))
    return arr


def check_guards() -> None:
    alive = []
    for ref, (skip, nbytes) in _State.guarded:
        raw = ref()
        if raw is None:
            continue
        alive.append((ref, (skip, nbytes)))
        buf = raw[skip:skip + nbytes + 2 * _PAD]
        if not (np.all(buf[:_PAD] == _CANARY) and np.all(buf[_PAD + nbytes:] == _CANARY)):
            raise EmulationError(f"out-of-bounds write next to a device array of {nbytes} bytes")
    _State.guarded = alive


def _no_capture(what: str) -> None:
    if _State.capture is not None:
        raise EmulationError(f"{what} inside a CUDA graph capture (only kernel launches may be captured)")


#: registers per thread of each kernel, as ptxas reports them for the emulated device (tests set it
#: from ``nvcc -Xptxas -v``; env CFN_EMU_KERNEL_REGS as JSON); the engine sizes its grids from them
KERNEL_REGS: dict[str, int] = {}
DEFAULT_REGS = 64


class FakeKernel:
    def __init__(self, lib, name: str, params: list) -> None:
        self.name, self.params = name, params
        self._fn = getattr(lib, f"emu_{name}")
        self._lib = lib
        self.max_dynamic_shared_size_bytes = 48 * 1024
        regs = KERNEL_REGS.get(name) or json.loads(os.environ.get("CFN_EMU_KERNEL_REGS", "{}")).get(name, DEFAULT_REGS)
        self.attributes = {"num_regs": int(regs), "shared_size_bytes": 0, "local_size_bytes": 0,
                           "max_threads_per_block": 1024}
        self.num_regs = int(regs)

    def __call__(self, grid, block, args, *, shared_mem=0):
        if not (isinstance(grid, tuple) and isinstance(block, tuple)):
            raise EmulationError(f"{self.name}: grid and block must be tuples")
        if len(grid) != 1 or len(block) != 1 or any(type(v) is not int for v in grid + block):
            raise EmulationError(f"{self.name}: only 1-D grids/blocks of Python ints are used, got {grid} {block}")
        if not 1 <= grid[0] <= 2 ** 31 - 1 or not 1 <= block[0] <= 1024:
            raise EmulationError(f"{self.name}: bad launch {grid} x {block}")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise EmulationError(f"{self.name}: {shared_mem} bytes of dynamic shared memory without opt-in")
        if len(args) != len(self.params):
            raise EmulationError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        keep, slots = [], (ctypes.c_void_p * len(args))()
        for i, (arg, (decl, base, pointer)) in enumerate(zip(args, self.params, strict=True)):
            if pointer:
                if not isinstance(arg, FakeArray):
                    raise EmulationError(f"{self.name} argument {i} ({decl}) must be a device array, got {type(arg)}")
                if arg.dtype != np.dtype(_SCALAR[base]):
                    raise EmulationError(f"{self.name} argument {i} ({decl}) got a {arg.dtype} array")
                if not arg.flags.c_contiguous:
                    raise EmulationError(f"{self.name} argument {i} ({decl}) is not contiguous")
                value = ctypes.c_void_p(arg.ctypes.data)
                keep.append(arg)
            else:
                if type(arg) is not _SCALAR[base]:
                    raise EmulationError(f"{self.name} argument {i} ({decl}) must be {_SCALAR[base].__name__}, "
                                         f"got {type(arg).__name__}")
                value = np.ctypeslib.as_ctypes_type(_SCALAR[base])(arg)
            keep.append(value)
            slots[i] = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        record = (self, grid[0], block[0], int(shared_mem), slots, keep)
        if _State.capture is not None:
            _State.capture.append(record)
        else:
            _run(record)


#: one launch at a time: the shim's launch state is global, and host threads (the shards of a ThreadGroup)
#: may launch at once -- as on a device, their kernels then run one after the other
_LAUNCH_LOCK = threading.Lock()


def _run(record) -> None:
    kernel, gx, bx, smem, slots, _keep = record
    with _LAUNCH_LOCK:
        _State.launches += 1
        if kernel._fn(gx, bx, smem, slots) != 0:
            raise EmulationError(f"{kernel.name}: {kernel._lib.cfn_emu_error().decode()}")
        check_guards()


class FakeGraph:
    def __init__(self, records: list) -> None:
        self.records = records

    def launch(self, stream=None):
        _no_capture("Graph.launch")
        for record in self.records:
            _run(record)

    def upload(self, stream=None):
        pass


class FakeStream:
    _current: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.non_blocking = non_blocking
        self.ptr = id(self)

    def __enter__(self):
        FakeStream._current.append(self)
        return self

    def __exit__(self, *exc):
        FakeStream._current.pop()

    def begin_capture(self, mode=None):
        if not self.non_blocking:
            raise EmulationError("capture on a blocking stream")
        if _State.capture is not None:
            raise EmulationError("nested capture")
        if not FakeStream._current or FakeStream._current[-1] is not self:
            raise EmulationError("begin_capture on a stream that is not the current stream")
        _State.capture = []

    def end_capture(self):
        if _State.capture is None:
            raise EmulationError("end_capture without begin_capture")
        graph, _State.capture = FakeGraph(_State.capture), None
        return graph

    def synchronize(self):
        _no_capture("Stream.synchronize")

    def record(self, event=None):
        """An event at this point of the stream (every launch here has finished when it returns)."""
        return event if event is not None else types.SimpleNamespace(record=lambda stream=None: None)

    def wait_event(self, event):
        pass


_NULL_STREAM = FakeStream()


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def expand_includes(code: str, include_dirs: list[Path]) -> str:
    """``code`` with each local ``#include "file"`` replaced by the file found in ``include_dirs``
    (as NVRTC's ``-I`` finds it), each file once (the headers have include guards anyway), so that
    the kernels' signatures can be read from one text."""
    seen: set[Path] = set()

    def include(match: re.Match) -> str:
        for directory in include_dirs:
            path = (directory / match.group(1)).resolve()
            if path.is_file():
                if path in seen:
                    return f"// (already included: {match.group(1)})"
                seen.add(path)
                return expand(path.read_text(encoding="utf-8"))
        raise EmulationError(f"#include \"{match.group(1)}\" not found in the -I directories {include_dirs}")

    def expand(text: str) -> str:
        return _INCLUDE.sub(include, text)

    return expand(code)


class FakeModule:
    _cache: dict = {}

    def __init__(self, code=None, *, options=(), name_expressions=None, **kwargs):
        dirs = [Path(o[2:]) for o in options if o.startswith("-I") and len(o) > 2]
        self.code, self.options = expand_includes(code, dirs), options

    def get_function(self, name):
        key = hashlib.sha1(self.code.encode()).hexdigest()
        if key not in FakeModule._cache:
            workdir = Path(os.environ.get("CFN_EMU_DIR", tempfile.gettempdir())) / "cfn_fast_emu"
            workdir.mkdir(parents=True, exist_ok=True)
            FakeModule._cache[key] = build_emulator(self.code, workdir, int(os.environ.get("CFN_EMU_ARCH", "0")))
        lib, kernels = FakeModule._cache[key]
        if name not in kernels:
            raise EmulationError(f"no kernel named {name!r} in the module")
        return FakeKernel(lib, name, kernels[name])


def _wrap(fn):
    def call(*args, **kwargs):
        _no_capture(fn.__name__)
        args = [np.asarray(a) if isinstance(a, FakeArray) else a for a in args]
        out = kwargs.get("out")
        if out is not None:
            fn(*args, **kwargs)
            return out
        result = fn(*args, **kwargs)
        return result.view(FakeArray) if isinstance(result, np.ndarray) else result
    return call


def fake_cupy(sms: int = 1) -> types.ModuleType:
    """A stand-in ``cupy`` module backed by NumPy and the host-compiled kernels."""
    cp = types.ModuleType("cupy")
    cp.__version__ = "emulated"
    cp.ndarray = FakeArray

    def asarray(a, dtype=None):
        _no_capture("cupy.asarray")
        if isinstance(a, FakeArray) and (dtype is None or a.dtype == dtype):
            return a
        a = np.asarray(a, dtype=dtype)
        out = alloc(a.shape, a.dtype)
        np.copyto(out, a)
        return out

    def zeros(shape, dtype=np.float64):
        _no_capture("cupy.zeros")
        out = alloc(shape, dtype)
        np.ndarray.fill(out, 0)
        return out

    def empty(shape, dtype=np.float64):
        _no_capture("cupy.empty")
        out = alloc(shape, dtype)
        np.ndarray.fill(out, np.nan if np.dtype(dtype).kind == "f" else 0x5A)
        return out

    cp.asarray = asarray
    cp.zeros = zeros
    cp.empty = empty
    cp.zeros_like = lambda a, dtype=None: zeros(a.shape, dtype or a.dtype)
    cp.ascontiguousarray = lambda a: asarray(np.ascontiguousarray(a))
    cp.matmul = _wrap(np.matmul)
    cp.tanh = _wrap(np.tanh)
    cp.copyto = _wrap(np.copyto)
    cp.max = _wrap(np.max)
    cp.min = _wrap(np.min)
    cp.float32, cp.int32, cp.int64, cp.uint64, cp.float64 = np.float32, np.int32, np.int64, np.uint64, np.float64
    cp.RawModule = FakeModule
    cuda = types.SimpleNamespace()
    cuda.Stream = FakeStream
    cuda.get_current_stream = lambda: FakeStream._current[-1] if FakeStream._current else _NULL_STREAM
    cuda.Graph = FakeGraph

    class Device:
        id = 0
        attributes = {"MultiProcessorCount": sms, "MaxRegistersPerMultiprocessor": 65536,    # sm_90
                      "MaxSharedMemoryPerMultiprocessor": 233472, "MaxThreadsPerMultiProcessor": 2048,
                      "MaxBlocksPerMultiprocessor": 32}

        def __init__(self, device=None):
            pass

        def synchronize(self):
            pass

    class Event:
        t = 0.0

        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cuda.Device = Device
    cuda.Event = Event
    cuda.get_elapsed_time = lambda a, b: (b.t - a.t) * 1e3
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (0, 0),
                                         runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0,
                                         getDeviceProperties=lambda i: {"name": b"emulated",
                                                                         "multiProcessorCount": sms,
                                                                         "totalGlobalMem": 0, "major": 0,
                                                                         "minor": 0})
    cp.cuda = cuda

    class Pool:
        def used_bytes(self):
            return 0

        total_bytes = used_bytes

        def free_all_blocks(self):
            pass

    pool = Pool()
    cp.get_default_memory_pool = lambda: pool
    cp.get_default_pinned_memory_pool = lambda: pool
    return cp


def install_fake_cupy(sms: int = 1) -> types.ModuleType:
    cp = fake_cupy(sms)
    sys.modules["cupy"] = cp
    return cp


