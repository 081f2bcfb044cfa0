"""Where the time of an epoch goes: per-phase tables, Chrome traces and NVTX ranges.

``CFN(..., profile=True)`` (or ``cfn fit --profile``) trains through a :class:`ProfiledEngine`,
which records, for every mini-batch, the start and duration of each phase of the training step:

Each engine times its own phases (:meth:`cfn_fast.backends.base.Engine.profiled_epoch`); this
module turns the timings into the record, the table, the trace and NVTX ranges:

* ``cpu``: timers *inside* the Cython engine (``clock_gettime`` at each phase boundary of
  ``SparseCFN._step``; when profiling is off each boundary costs one branch).  Phases:
  ``gather`` (batch entries + masking hash), ``sort`` (column sort + group partition),
  ``encode`` (sparse input layer + tanh), ``dense_forward`` / ``dense_backward`` (hidden-to-hidden
  layers, deeper nets only), ``output`` (fused sampled decoder, loss, output deltas, dh and output
  update), ``input_update`` (input-layer bias, side weight and sparse rows), ``fold`` (weight-decay
  scale folded into the weights);
* ``cuda``: one CUDA event pair per kernel launch (kernel names are the phases); CUDA-graph
  capture is switched off while profiling so that every launch is seen;
* ``numpy``: the reference's step functions (``corrupted_batch``, ``forward``, ``reconstruction_loss``,
  ``backward``, ``sgd_update``), timed on the host as the engine calls them.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -lineinfo for Nsight Compute's source view: an option of the CUDA module, re-exported here
from .backends.cuda_module import cuda_compile_options, lineinfo_requested
from .fileio import atomic_write

__all__ = [
    "DOMAIN",
    "Nvtx",
    "PhaseEvent",
    "Profile",
    "ProfiledEngine",
    "cuda_compile_options",
    "lineinfo_requested",
    "report_profile",
]

DOMAIN = "cfn_fast"


# ----------------------------------------------------------------------------- NVTX
class Nvtx:
    """NVTX ranges in the ``cfn_fast`` domain through the ``nvtx`` package, or nothing at all.

    ``module`` stands in for the ``nvtx`` package (tests); by default it is imported lazily and
    a missing package (or ``CFN_FAST_NVTX=0``) leaves every call a no-op.
    """

    def __init__(self, module: Any = None, *, off: bool = False) -> None:
        self._nvtx = None if off else module if module is not None else _import_nvtx()

    @classmethod
    def off(cls) -> Nvtx:
        """No ranges at all, whatever is installed."""
        return cls(off=True)

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

    @classmethod
    def combined(cls, profiles: list["Profile"]) -> "Profile | None":
        """One profile of several trainings run one after the other (a blend's networks), in the order run;
        None when there are none."""
        if not profiles:
            return None
        return cls(profiles[0].backend, [e for p in profiles for e in p.events],
                   [epoch for p in profiles for epoch in p.epochs], profiles[0].timer)

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
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.chrome_trace()))
        return Path(path)


# ----------------------------------------------------------------------------- engines
class ProfiledEngine:
    """Wraps an engine for the training loop: ``train_epoch`` runs the engine's
    :meth:`~cfn_fast.backends.base.Engine.profiled_epoch`, whose phase timings go to
    :attr:`profile`; everything else is the engine's own."""

    def __init__(self, engine: Any, profile: Profile | None = None, nvtx: Nvtx | None = None) -> None:
        if not getattr(engine, "phase_timer", ""):
            raise ValueError(f"profiling is not supported for the {engine.name!r} engine")
        self.engine = engine
        self.profile = profile if profile is not None else Profile(engine.name)
        self.nvtx = nvtx if nvtx is not None else Nvtx()
        self.profile.timer = engine.phase_timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def train_epoch(self, epoch: int, lr: float) -> float:
        with self.nvtx.range(f"epoch {epoch}"):
            start = time.monotonic()
            loss, timings = self.engine.profiled_epoch(epoch, lr, self.nvtx if self.nvtx.enabled else None)
            seconds = time.monotonic() - start
        self.profile.epochs.append((epoch, start, seconds))
        self.profile.events.extend(PhaseEvent(name, begin, duration, epoch, batch)
                                   for name, begin, duration, batch in timings)
        return loss


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
