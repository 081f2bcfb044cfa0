"""Where the time of an epoch goes: per-phase tables, Chrome traces and NVTX ranges.

``CFN(..., profile=True)`` (or ``cfn fit --profile``) trains through a :class:`ProfiledEngine`,
which records, for every mini-batch, the start and duration of each phase of the training step:

* ``cpu``: timers *inside* the Cython engine (``clock_gettime`` at each phase boundary of
  ``SparseCFN._step``; when profiling is off each boundary costs one branch).  Phases:
  ``gather`` (batch entries + masking hash), ``sort`` (column sort + group partition),
  ``encode`` (sparse input layer + tanh), ``dense_forward`` / ``dense_backward`` (hidden-to-hidden
  layers, deeper nets only), ``output`` (fused sampled decoder, loss, output deltas, dh and output
  update), ``input_update`` (input-layer bias, side weight and sparse rows), ``fold`` (weight-decay
  scale folded into the weights);
* ``cuda``: one CUDA event pair per kernel launch (kernel names are the phases); CUDA-graph
  capture is switched off while profiling so that every launch is seen;
* ``numpy``: the reference's functions (``corrupted_batch``, ``forward``, ``reconstruction_loss``,
  ``backward``, ``sgd_update``), timed on the host.

The result (:class:`Profile`) is a table per phase — calls, total, mean, share of the epoch —
as text (:meth:`Profile.format_table`), a dict (:meth:`Profile.as_dict`, ``--json``) and a Chrome
trace (:meth:`Profile.write_trace`, ``--trace FILE``; open it in https://ui.perfetto.dev).

NVTX: while profiling, ranges named after each epoch, mini-batch, phase and kernel launch are
pushed in the ``cfn_fast`` domain when the optional ``nvtx`` package is installed
(``pip install 'cfn_fast[profile]'``); without it they cost nothing.  ``CFN_FAST_NVTX=0``
switches them off.  See docs/profiling.md for Nsight Systems / Nsight Compute.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["DOMAIN", "Nvtx", "PhaseEvent", "Profile", "ProfiledEngine", "engine_for_training",
           "report_profile", "lineinfo_requested", "cuda_compile_options"]

DOMAIN = "cfn_fast"


# ----------------------------------------------------------------------------- NVTX
class Nvtx:
    """NVTX ranges in the ``cfn_fast`` domain through the ``nvtx`` package, or nothing at all.

    ``module`` stands in for the ``nvtx`` package (tests); by default it is imported lazily and
    a missing package (or ``CFN_FAST_NVTX=0``) leaves every call a no-op.
    """

    def __init__(self, module: Any = None) -> None:
        self._nvtx = module if module is not None else _import_nvtx()

    @classmethod
    def off(cls) -> "Nvtx":
        """No ranges at all, whatever is installed."""
        nvtx = cls.__new__(cls)
        nvtx._nvtx = None
        return nvtx

    @property
    def enabled(self) -> bool:
        return self._nvtx is not None

    def push(self, name: str) -> None:
        if self._nvtx is not None:
            self._nvtx.push_range(message=name, domain=DOMAIN)

    def pop(self) -> None:
        if self._nvtx is not None:
            self._nvtx.pop_range(domain=DOMAIN)

    @contextlib.contextmanager
    def range(self, name: str) -> Iterator[None]:
        self.push(name)
        try:
            yield
        finally:
            self.pop()


def _import_nvtx() -> Any:
    if os.environ.get("CFN_FAST_NVTX", "1").lower() in ("0", "false", "no", "off"):
        return None
    try:
        return importlib.import_module("nvtx")
    except ImportError:
        return None


# ----------------------------------------------------------------------------- CUDA -lineinfo
def lineinfo_requested() -> bool:
    """``CFN_FAST_CUDA_LINEINFO=1``: compile the CUDA kernels with ``-lineinfo`` (Nsight Compute's
    source view).  Read when the kernels are first compiled in a process."""
    return os.environ.get("CFN_FAST_CUDA_LINEINFO", "0").lower() in ("1", "true", "yes", "on")


def cuda_compile_options(base: tuple[str, ...]) -> tuple[str, ...]:
    """The NVRTC options of the CUDA module: ``base`` plus ``-lineinfo`` when requested."""
    return base + ("-lineinfo",) if lineinfo_requested() and "-lineinfo" not in base else base


# ----------------------------------------------------------------------------- the record
@dataclass
class PhaseEvent:
    """One phase of one mini-batch (or one kernel launch): host-clock start and duration, seconds."""

    name: str
    start: float
    seconds: float
    epoch: int
    batch: int


@dataclass
class Profile:
    """Phase events and epoch wall times of a profiled training run."""

    backend: str
    events: list[PhaseEvent] = field(default_factory=list)
    epochs: list[tuple[int, float, float]] = field(default_factory=list)   # (epoch, start, seconds)
    timer: str = ""

    @property
    def epoch_seconds(self) -> float:
        return sum(seconds for _, _, seconds in self.epochs)

    def table(self) -> list[dict[str, Any]]:
        """One row per phase, in order of first appearance: calls, total s, mean ms, share of epoch time."""
        calls: dict[str, int] = defaultdict(int)
        total: dict[str, float] = defaultdict(float)
        for event in self.events:
            calls[event.name] += 1
            total[event.name] += event.seconds
        wall = self.epoch_seconds
        return [{"phase": name, "calls": calls[name], "total_s": total[name],
                 "mean_ms": 1e3 * total[name] / calls[name], "share": total[name] / wall if wall > 0 else 0.0}
                for name in calls]

    def as_dict(self) -> dict[str, Any]:
        rows = self.table()
        timed = sum(row["total_s"] for row in rows)
        return {"backend": self.backend, "timer": self.timer, "epochs": len(self.epochs),
                "epoch_seconds": self.epoch_seconds, "phase_seconds": timed,
                "phase_coverage": timed / self.epoch_seconds if self.epoch_seconds > 0 else 0.0, "phases": rows}

    def format_table(self) -> str:
        summary = self.as_dict()
        lines = [f"profile: backend {self.backend}, {summary['epochs']} epoch(s), {summary['epoch_seconds']:.3f} s "
                 f"({self.timer})",
                 f"{'phase':<22}{'calls':>9}{'total s':>11}{'mean ms':>11}{'share':>8}"]
        for row in summary["phases"]:
            lines.append(f"{row['phase']:<22}{row['calls']:>9d}{row['total_s']:>11.4f}{row['mean_ms']:>11.4f}"
                         f"{100 * row['share']:>7.1f}%")
        lines.append(f"{'sum of phases':<22}{'':>9}{summary['phase_seconds']:>11.4f}{'':>11}"
                     f"{100 * summary['phase_coverage']:>7.1f}%")
        return "\n".join(lines)

    def chrome_trace(self) -> dict[str, Any]:
        """Chrome trace-event JSON (complete events, microseconds): one event per epoch and one per
        phase per mini-batch; loads in Perfetto and chrome://tracing."""
        origin = min([start for _, start, _ in self.epochs] + [e.start for e in self.events], default=0.0)
        pid, tid = 1, 1
        trace: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"cfn_fast ({self.backend})"}},
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": "training"}},
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid + 1, "args": {"name": "phases"}}]
        for epoch, start, seconds in self.epochs:
            trace.append({"name": f"epoch {epoch}", "cat": "epoch", "ph": "X", "pid": pid, "tid": tid,
                          "ts": 1e6 * (start - origin), "dur": 1e6 * seconds, "args": {"epoch": epoch}})
        for e in self.events:
            trace.append({"name": e.name, "cat": "phase", "ph": "X", "pid": pid, "tid": tid + 1,
                          "ts": 1e6 * (e.start - origin), "dur": 1e6 * e.seconds,
                          "args": {"epoch": e.epoch, "batch": e.batch}})
        return {"traceEvents": trace, "displayTimeUnit": "ms",
                "otherData": {"backend": self.backend, "timer": self.timer}}

    def write_trace(self, path: str | Path) -> Path:
        """Write :meth:`chrome_trace` to ``path`` (atomically)."""
        from .fileio import atomic_write
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.chrome_trace()))
        return Path(path)


# ----------------------------------------------------------------------------- engines
class ProfiledEngine:
    """Wraps an engine for the training loop: ``train_epoch`` is timed phase by phase into
    :attr:`profile`; everything else is the engine's own."""

    def __init__(self, engine: Any, profile: Profile | None = None, nvtx: Nvtx | None = None) -> None:
        self.engine = engine
        self.profile = profile if profile is not None else Profile(engine.name)
        self.nvtx = nvtx if nvtx is not None else Nvtx()
        self._recorder = _recorder_for(engine, self.nvtx)
        self.profile.timer = self._recorder.timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def train_epoch(self, epoch: int, lr: float) -> float:
        with self.nvtx.range(f"epoch {epoch}"):
            start = time.monotonic()
            loss, events = self._recorder.run(epoch, lr)
            seconds = time.monotonic() - start
        self.profile.epochs.append((epoch, start, seconds))
        self.profile.events.extend(events)
        return loss


def _recorder_for(engine: Any, nvtx: Nvtx) -> "_Recorder":
    kinds: dict[str, Callable[[Any, Nvtx], _Recorder]] = {
        "cpu": _CpuRecorder, "cuda": _CudaRecorder, "numpy": _NumpyRecorder}
    if engine.name not in kinds:
        raise ValueError(f"profiling is not supported for the {engine.name!r} engine")
    return kinds[engine.name](engine, nvtx)


class _Recorder:
    timer = ""

    def __init__(self, engine: Any, nvtx: Nvtx) -> None:
        self.engine = engine
        self.nvtx = nvtx

    def run(self, epoch: int, lr: float) -> tuple[float, list[PhaseEvent]]:  # pragma: no cover - abstract
        raise NotImplementedError


class _CpuRecorder(_Recorder):
    """The Cython engine's phase timers (``SparseCFN.set_profiling``)."""

    timer = "clock_gettime timers inside the Cython training step"

    def run(self, epoch: int, lr: float) -> tuple[float, list[PhaseEvent]]:
        from ._kernels import cfn_cpu
        names = cfn_cpu.PHASE_NAMES
        state = self.engine._state
        hook = self._nvtx_hook(names) if self.nvtx.enabled else None
        state.set_profiling(True, hook)
        try:
            loss = self.engine.train_epoch(epoch, lr)
            log = state.profile_log()
        finally:
            state.set_profiling(False)
        events = [PhaseEvent(names[phase], float(log[batch, phase, 0]), float(log[batch, phase, 1]), epoch, batch)
                  for batch in range(log.shape[0]) for phase in range(log.shape[1]) if log[batch, phase, 1] > 0]
        return loss, events

    def _nvtx_hook(self, names: tuple[str, ...]) -> Callable[[int, bool], None]:
        nvtx = self.nvtx
        labels = list(names) + ["mini-batch"]

        def hook(phase: int, begin: bool) -> None:
            if begin:
                nvtx.push(labels[phase])
            else:
                nvtx.pop()
        return hook


class _NumpyRecorder(_Recorder):
    """The reference engine's step functions, timed on the host (patched for the epoch only)."""

    timer = "time.monotonic around the reference's step functions"
    PHASES = (("corrupted_batch", "batch_setup"), ("forward", "forward"), ("reconstruction_loss", "loss"),
              ("backward", "backward"), ("sgd_update", "update"))

    def run(self, epoch: int, lr: float) -> tuple[float, list[PhaseEvent]]:
        from .backends import numpy_backend
        events: list[PhaseEvent] = []
        batch = [-1]
        originals = {fn: getattr(numpy_backend, fn) for fn, _ in self.PHASES}

        def timed(fn: Callable, name: str) -> Callable:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if name == "batch_setup":
                    batch[0] += 1
                with self.nvtx.range(name):
                    start = time.monotonic()
                    result = fn(*args, **kwargs)
                    events.append(PhaseEvent(name, start, time.monotonic() - start, epoch, batch[0]))
                return result
            return wrapper

        try:
            for fn, name in self.PHASES:
                setattr(numpy_backend, fn, timed(originals[fn], name))
            loss = self.engine.train_epoch(epoch, lr)
        finally:
            for fn, original in originals.items():
                setattr(numpy_backend, fn, original)
        return loss, events


class _CudaRecorder(_Recorder):
    """CUDA events around every kernel launch of the engine (graph capture off meanwhile)."""

    timer = "CUDA events per kernel launch (CUDA graphs off)"

    def run(self, epoch: int, lr: float) -> tuple[float, list[PhaseEvent]]:
        import cupy as cp
        engine = self.engine
        launches: list[tuple[str, int, Any, Any]] = []
        batch = [-1]
        kernels = engine._kernels
        stream = engine.stream

        def timed(name: str, kernel: Callable) -> Callable:
            def launch(*args: Any, **kwargs: Any) -> Any:
                if name == "cfn_batch_setup":
                    batch[0] += 1
                begin, end = cp.cuda.Event(), cp.cuda.Event()
                with self.nvtx.range(name):
                    begin.record(stream)
                    result = kernel(*args, **kwargs)
                    end.record(stream)
                launches.append((name, batch[0], begin, end))
                return result
            return launch

        graphs = engine._use_graphs
        engine._kernels = {name: timed(name, kernel) for name, kernel in kernels.items()}
        engine._use_graphs = False
        try:
            host_start = time.monotonic()
            loss = engine.train_epoch(epoch, lr)
            stream.synchronize()
        finally:
            engine._kernels = kernels
            engine._use_graphs = graphs
        if not launches:
            return loss, []
        origin = launches[0][2]
        events = [PhaseEvent(name, host_start + 1e-3 * cp.cuda.get_elapsed_time(origin, begin),
                             1e-3 * cp.cuda.get_elapsed_time(begin, end), epoch, b)
                  for name, b, begin, end in launches]
        return loss, events


def engine_for_training(model: Any) -> Any:
    """The engine a model's training loop drives: its own, or (``profile=True``) a
    :class:`ProfiledEngine` adding to ``model.profile_``."""
    if not getattr(model, "profile", False):
        return model.engine_
    if getattr(model, "profile_", None) is None:
        model.profile_ = Profile(model.engine_.name)
    return ProfiledEngine(model.engine_, model.profile_)


def report_profile(profile: Profile | None, trace: str | None = None, echo: bool = True) -> dict[str, Any]:
    """``cfn fit --profile/--trace``: print the table (``echo``), write the trace; the JSON part."""
    if profile is None:
        return {"profile": None}
    out: dict[str, Any] = {"profile": profile.as_dict()}
    if echo:
        print(profile.format_table())
    if trace:
        out["trace"] = str(profile.write_trace(trace))
        if echo:
            print(f"trace: {trace} (open in https://ui.perfetto.dev)")
    return out
