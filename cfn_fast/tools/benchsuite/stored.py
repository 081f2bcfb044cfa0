"""Stored baselines, keyed by the machine that measured them (``cfn bench suite --compare auto``,
``--save-baseline``).

A stored baseline is pytest-benchmark's JSON of a whole run, kept in :data:`STORED_DIR` (the
``baselines/`` folder of this package: installed with the wheel as package data, so a plain install finds
them) or in a folder the user names (``--baseline-dir``).  Its *key* is read from the run itself: the
CPU model (``machine_info.cpu_model``, from /proc/cpuinfo's "model name"), the logical CPUs, the SIMD path
of the cpu engine (``cfn_simd``), the timer of its cases (``options.timer``) and the mode (``cfn_quick``,
``cfn_smoke``); file names are only labels.  ``--compare auto`` compares with the stored baseline whose key
is this run's (the newest, if several), and says plainly when none is.

This module also identifies the machine (:func:`this_machine`) for the suite's plugin, which records the
same fields in every run's ``machine_info``: the key computed here before a run is the key of the run.
"""
from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .report import TIMERS, baseline_problem, timer_of

__all__ = ["STORED_DIR", "MachineKey", "cpu_engine_info", "cpu_model", "find_stored", "key_of", "physical_cores",
           "save_target", "this_key", "this_machine"]

#: The stored baselines installed with the package (package data of ``cfn_fast.tools.benchsuite``).
STORED_DIR = Path(__file__).resolve().parent / "baselines"

#: ``options.timer`` of pytest-benchmark -> the ``--timer`` name
_TIMER_NAMES = {clock.split(".")[-1]: name for name, clock in TIMERS.items()}


# ----------------------------------------------------------------------------- this machine
def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's "model name" (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (socket, core) pairs of /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    pairs, socket = set(), None
    for line in lines:
        if line.startswith("physical id"):
            socket = line.split(":")[1].strip()
        elif line.startswith("core id"):
            pairs.add((socket, line.split(":")[1].strip()))
    return len(pairs) or None


def cpu_engine_info() -> dict[str, Any]:
    """Threads, SIMD path and OpenMP of the cpu engine (None without the compiled kernels)."""
    try:
        from cfn_fast.backends import cpu_backend
    except ImportError:  # no compiled kernels: the cpu cases are skipped, and the run says so
        return {"cfn_threads": None, "cfn_simd": None, "cfn_openmp": None}
    return {"cfn_threads": cpu_backend.get_num_threads(), "cfn_simd": cpu_backend.simd_level(),
            "cfn_openmp": cpu_backend.has_openmp()}


def this_machine() -> dict[str, Any]:
    """The machine fields every run records in ``machine_info`` (the key's among them)."""
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            **cpu_engine_info()}


# ----------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class MachineKey:
    """What a stored baseline must share with a run to be compared with it."""
    cpu_model: str
    logical_cpus: int | None
    simd: str | None
    timer: str              # pytest-benchmark's clock: perf_counter (--timer wall) or process_time (--timer cpu)
    quick: bool
    smoke: bool

    @property
    def mode(self) -> str:
        return ("smoke " if self.smoke else "") + ("quick" if self.quick else "full")

    def describe(self) -> str:
        return (f"{self.cpu_model}, {self.logical_cpus} logical CPUs, SIMD {self.simd}, "
                f"--timer {_TIMER_NAMES.get(self.timer, self.timer)}, {self.mode} run")

    def file_name(self) -> str:
        """A readable file name for the key, e.g. ``amd-epyc-2cpu-avx512-wall-quick.json``."""
        model = re.sub(r"\((r|tm|c)\)|\b(processor|cpu)\b", " ", self.cpu_model.lower())
        model = re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "cpu"
        parts = [model, f"{self.logical_cpus}cpu", self.simd or "nosimd",
                 _TIMER_NAMES.get(self.timer, self.timer), "smoke" if self.smoke else "", self.mode.split()[-1]]
        return "-".join(p for p in parts if p) + ".json"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode}


def _model_name(text: Any) -> str:
    return " ".join(str(text).split())


def this_key(timer: str, quick: bool, smoke: bool) -> MachineKey:
    """The key of a run started here with ``--timer timer`` (``wall`` / ``cpu``), ``--quick``, ``--smoke``."""
    machine = this_machine()
    return MachineKey(_model_name(machine["cpu_model"]), machine["logical_cpus"], machine["cfn_simd"],
                      TIMERS[timer].split(".")[-1], bool(quick), bool(smoke))


def key_of(data: dict) -> MachineKey | None:
    """The key of a run (pytest-benchmark's JSON); None when its cases mix timers."""
    info = data.get("machine_info", {}) if isinstance(data, dict) else {}
    timer = timer_of(data)
    if timer is None:
        return None
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    model = info.get("cpu_model") or cpu.get("brand_raw") or "unknown CPU"
    return MachineKey(_model_name(model), info.get("logical_cpus") or cpu.get("count"), info.get("cfn_simd"), timer,
                      bool(info.get("cfn_quick")), bool(info.get("cfn_smoke")))


# ----------------------------------------------------------------------------- finding and saving
def _stored(folder: Path) -> tuple[list[tuple[Path, MachineKey, str]], list[str]]:
    """(path, key, datetime) of each stored baseline in ``folder``; what was ignored, and why."""
    found, ignored = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            ignored.append(f"{path.name} ({type(exc).__name__})")
            continue
        problem = baseline_problem(data)
        key = None if problem else key_of(data)
        if key is None:
            ignored.append(f"{path.name} ({problem or 'cases timed with different timers'})")
            continue
        found.append((path, key, str(data.get("datetime", ""))))
    return found, ignored


def find_stored(key: MachineKey, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The stored baseline of ``key`` in ``folder`` (default :data:`STORED_DIR`): ``path`` (None when none
    matches), ``message`` (one line that says which, or that none matches and what is stored), ``stored``
    (every stored baseline's file and key) and ``ignored`` (files that are no baseline)."""
    folder = STORED_DIR if folder is None else Path(folder)
    found, ignored = _stored(folder)
    matching = sorted((f for f in found if f[1] == key), key=lambda f: f[2])
    result: dict[str, Any] = {"folder": str(folder), "this_machine": key.as_dict(), "path": None,
                              "stored": [{"file": p.name, **k.as_dict()} for p, k, _ in found], "ignored": ignored}
    if matching:
        path = matching[-1][0]
        several = f" (the newest of {len(matching)} that match)" if len(matching) > 1 else ""
        result.update(path=str(path), message=f"comparing with the stored baseline of this machine "
                                              f"({key.describe()}): {path}{several}")
        return result
    stored = "; ".join(f"{p.name}: {k.describe()}" for p, k, _ in found) or "none"
    note = f"; ignored: {', '.join(ignored)}" if ignored else ""
    result["message"] = (f"no stored baseline matches this machine ({key.describe()}) in {folder}: "
                         f"stored there: {stored}{note}; running without a comparison (record one here with "
                         f"--save-baseline)")
    return result


def save_target(key: MachineKey, folder: str | os.PathLike | None, force: bool) -> Path:
    """Where ``--save-baseline`` stores this run, checked before the run: the file of the stored baseline
    with this key when there is one (replaced only with ``force``), else a new file named after the key."""
    folder = STORED_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--save-baseline: the baseline folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"--save-baseline: the baseline folder {folder} is not writable "
                              "(name another with --baseline-dir)")
    found, _ = _stored(folder)
    same = [p for p, k, _ in found if k == key]
    path = same[-1] if same else folder / key.file_name()
    if path.exists() and not force:
        what = "the stored baseline of this machine" if same else "a file that is not a baseline of this machine"
        raise ValueError(f"--save-baseline: {path} exists ({what}: {key.describe()}); pass --force to replace it")
    if path.is_dir():
        raise IsADirectoryError(f"--save-baseline: {path} is a folder")
    return path
