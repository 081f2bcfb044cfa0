"""``cfn bench suite``: run the benchmark suite in a child pytest, check what ran, compare with a baseline.

The suite is this package's own folder (:func:`suite_dir`), installed with the wheel.  The child is
``python -m pytest <that folder>`` started in an empty working directory, with the folder holding this
cfn_fast first on ``PYTHONPATH``: it measures the very cfn_fast that started it, never a checkout
beside it (the suite's plugin checks, and refuses another).  pytest's plugins are not auto-loaded (only
pytest-benchmark is) and no ini file of the surroundings is read, so a user's pytest setup changes
nothing.  The JSON is pytest-benchmark's own (``pytest-benchmark compare`` reads it).

Everything that can be checked is checked before the suite starts: the ``bench`` extra, the options,
the baseline (readable pytest-benchmark JSON, timed with the same timer) and the output file (never an
input, never an existing file without ``force``).  After the run, what pytest did is reported as it
was: failed cases, a selection that matches nothing, a run where every case was skipped, or every cpu
case skipped while the cpu backend works here, are errors (one line each).

Comparison (``baseline``): :func:`.report.compare` marks suspects; they are **run again** (``confirm``
times, default 2) and the minimum over every run is compared once more, so a burst of load during one
run does not fail the comparison.

Stored baselines (:mod:`.stored`): ``baseline="auto"`` (``--compare auto``) compares with the stored
baseline of this machine (CPU model, logical CPUs, SIMD path, timer, mode), or says that none matches and
runs without comparing; ``save_baseline`` (``--save-baseline``) stores the run as this machine's, checked
before the run like ``out``.

Timer: ``"wall"`` (default, ``time.perf_counter``) gives the throughput figures; ``"cpu"``
(``time.process_time``: CPU seconds of all threads) is far less sensitive to other jobs on a shared
machine — use it for regression checks there, against a baseline taken with the same timer.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cfn_fast
from cfn_fast.backends import available_backends
from cfn_fast.fileio import atomic_write, check_outputs_not_inputs

from .report import (
    DEFAULT_THRESHOLD,
    TIMERS,
    baseline_problem,
    case_rows,
    compare,
    data_fullname,
    format_comparison,
    format_skipped,
    format_table,
    merge_min,
    timer_of,
)
from .stored import MachineKey, find_stored, key_of, save_target, this_key

__all__ = ["AUTO", "BenchmarkRegression", "EXTRA_HINT", "check_baseline", "check_out", "require_extra", "run_suite",
           "suite_dir"]

EXTRA_HINT = "pip install 'cfn_fast[bench]'"
#: ``--compare auto``: the stored baseline of this machine (:mod:`.stored`)
AUTO = "auto"


class BenchmarkRegression(RuntimeError):
    """Cases slower than the baseline; ``result`` is the whole result (``--json`` prints it with the error)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def suite_dir() -> Path:
    """The suite: this package's folder (its conftest, cases and workloads), wherever cfn_fast is installed."""
    return Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- checks before the run
def require_extra() -> None:
    """The suite runs on pytest and pytest-benchmark (the ``bench`` extra): name what to install."""
    missing = [name for name in ("pytest", "pytest_benchmark") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"cfn bench suite needs {' and '.join(n.replace('_', '-') for n in missing)}, "
                                  f"from the bench extra: {EXTRA_HINT}", name=missing[-1])


def check_baseline(path: str | os.PathLike, timer: str) -> dict:
    """The ``--compare`` file, read and checked before the run: pytest-benchmark JSON with a positive
    minimum and median per case, every case timed with this run's timer."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--compare {path} is a folder; name a pytest-benchmark JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--compare {path} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"--compare {path} is not JSON (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--compare {path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") \
            from None
    problem = baseline_problem(data)
    if problem:
        raise ValueError(f"--compare {path} is not a pytest-benchmark result ({problem}); "
                         "store one with cfn bench suite --out FILE")
    used = timer_of(data)
    if used is None:
        raise ValueError(f"--compare {path} mixes cases timed with different timers; compare runs of one timer")
    if used != TIMERS[timer].split(".")[-1]:
        raise ValueError(f"the baseline {path} was timed with {used}, this run with {TIMERS[timer]}: pass "
                         f"--timer {'cpu' if used == 'process_time' else 'wall'}")
    return data


def check_out(out: str | os.PathLike, baseline: str | os.PathLike | None, force: bool) -> Path:
    """``--out``, checked before the run: never an input (the baseline, the benchmarked package and its
    suite) even with ``force``; an existing file only with ``force``."""
    path = Path(out)
    package = Path(cfn_fast.__file__).resolve().parent
    if path.resolve().is_relative_to(package):
        raise ValueError(f"--out {path} lies inside the cfn_fast package being benchmarked ({package}), "
                         "whose code and suite are inputs of the run: choose another output path")
    check_outputs_not_inputs({"--out": path}, {"--compare": baseline})
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; name a file to write")
    if path.exists() and not force:
        raise ValueError(f"--out {path} exists; pass --force to replace it")
    if not path.resolve().parent.is_dir():
        raise FileNotFoundError(f"--out {path}: folder {path.parent} does not exist")
    return path


def _check_options(threshold: float, confirm: int, timer: str) -> None:
    if not 0 < threshold < 10:
        raise ValueError(f"threshold must lie in (0, 10), got {threshold}")
    if isinstance(confirm, bool) or not isinstance(confirm, int) or not 0 <= confirm <= 100:
        raise ValueError(f"confirm must be an integer in [0, 100], got {confirm!r}")
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {sorted(TIMERS)}, got {timer!r}")


# ----------------------------------------------------------------------------- the child pytest
@dataclass(frozen=True)
class _Child:
    """How the suite's pytest processes are started (one first run, then the re-runs of suspects)."""
    folder: Path
    quick: bool
    slow: bool
    smoke: bool
    timer: str
    extra: tuple[str, ...]
    progress: bool

    def run(self, nodes: list[str], name: str, select: str | None) -> tuple[dict, dict, str]:
        """Run ``nodes``; (pytest-benchmark's JSON, what ran, the JSON's text)."""
        suite, json_path, ran_path = suite_dir(), self.folder / f"{name}.json", self.folder / f"{name}.ran.json"
        ini, cwd = self.folder / "pytest.ini", self.folder / "cwd"
        ini.write_text("[pytest]\n", encoding="utf-8")
        cwd.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "pytest", *nodes, "-q", "-c", str(ini), "--rootdir", str(suite),
               "--confcutdir", str(suite), "-p", "no:cacheprovider", "-p", "pytest_benchmark.plugin",
               f"--benchmark-json={json_path}", "--benchmark-sort=name", "--benchmark-columns=min,median,rounds",
               f"--benchmark-timer={TIMERS[self.timer]}"]
        cmd += ["--cfn-quick"] if self.quick else []
        cmd += ["--cfn-slow"] if self.slow else []
        cmd += ["-k", select] if select else []
        cmd += list(self.extra)
        code, output = _stream(cmd, cwd, self._env(ran_path), self.progress)
        data, ran = _checked(code, output, json_path, ran_path, select)
        return data, ran, json_path.read_text(encoding="utf-8")

    def _env(self, ran_path: Path) -> dict[str, str]:
        package = Path(cfn_fast.__file__).resolve().parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(package.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", CFN_BENCH_PACKAGE=str(package),
                   CFN_BENCH_OUTCOMES=str(ran_path))
        if self.smoke:
            env["CFN_BENCH_SMOKE"] = "1"
        return env


def _stream(cmd: list[str], cwd: Path, env: dict[str, str], progress: bool) -> tuple[int, str]:
    """Run ``cmd``, echoing its output to stderr as it comes (``progress``); (exit status, output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if progress:
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.wait(), "".join(lines)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _checked(code: int, output: str, json_path: Path, ran_path: Path, select: str | None) -> tuple[dict, dict]:
    """pytest-benchmark's JSON and what ran, or the one-line truth about a run that did not measure."""
    if not ran_path.is_file():
        raise RuntimeError(f"the benchmark suite did not start (pytest exit {code}): {_last_line(output)}")
    ran = json.loads(ran_path.read_text(encoding="utf-8"))
    if ran.get("error"):
        raise RuntimeError(ran["error"])
    if ran["failed"]:
        first = ran["failed"][0]
        raise RuntimeError(f"{len(ran['failed'])} benchmark case(s) failed (pytest exit {code}), first "
                           f"{first['case']}: {first['error']}")
    if code not in (0, 5):   # 5: nothing collected
        raise RuntimeError(f"the benchmark suite failed (pytest exit {code}): {_last_line(output)}")
    if not ran["passed"] and not ran["skipped"]:
        if select:
            raise ValueError(f"-k {select!r} selects none of the suite's cases")
        raise RuntimeError("the benchmark suite collected no cases")
    cpu_skipped = [c for c in ran["skipped"] if c["backend"] == "cpu"]
    if cpu_skipped and "cpu" not in ran["backends"] and "cpu" in available_backends():
        raise RuntimeError(f"all {len(cpu_skipped)} selected cpu case(s) were skipped although the cpu backend "
                           f"works here: {cpu_skipped[0]['reason']}")
    if not ran["passed"]:
        first = ran["skipped"][0]
        raise RuntimeError(f"no benchmark case ran: all {len(ran['skipped'])} selected case(s) were skipped, e.g. "
                           f"{first['case']}: {first['reason']}")
    if not json_path.is_file():
        raise RuntimeError(f"pytest-benchmark wrote no results (pytest exit {code}): {_last_line(output)}")
    return json.loads(json_path.read_text(encoding="utf-8")), ran


# ----------------------------------------------------------------------------- the command
def run_suite(*, quick: bool = False, slow: bool = False, smoke: bool = False, out: str | os.PathLike | None = None,
              force: bool = False, baseline: str | os.PathLike | None = None, save_baseline: bool = False,
              baseline_dir: str | os.PathLike | None = None,
              threshold: float = DEFAULT_THRESHOLD, confirm: int = 2, select: str | None = None,
              pytest_args: list[str] | None = None, echo: bool = True, progress: bool = True,
              timer: str = "wall") -> dict[str, Any]:
    """Run the suite; with ``baseline``, compare (module docstring).  Returns the result dict: the cases,
    the skipped ones with their reasons, and with a baseline the comparison and the regressions.
    ``baseline="auto"``: the stored baseline of this machine in ``baseline_dir`` (default: the package's,
    :mod:`.stored`); when none matches, the run is not compared and ``stored_baseline`` says why.
    ``out`` receives pytest-benchmark's JSON of the first run; ``save_baseline`` stores it as this machine's
    baseline in ``baseline_dir`` (an existing one is replaced only with ``force``).  ``smoke``: tiny data, one
    round per case (checks that every case runs; its figures mean nothing).  ``echo`` prints the tables on
    stdout, ``progress`` pytest's output on stderr."""
    require_extra()
    _check_options(threshold, confirm, timer)
    key = this_key(timer, quick, smoke or os.environ.get("CFN_BENCH_SMOKE") == "1")
    stored = None
    if isinstance(baseline, str) and baseline == AUTO:
        stored = find_stored(key, baseline_dir)
        baseline = stored["path"]
    base = check_baseline(baseline, timer) if baseline is not None else None
    out_path = check_out(out, baseline, force) if out is not None else None
    save_path = None
    if save_baseline:
        save_path = save_target(key, baseline_dir, force)
        check_outputs_not_inputs({"--save-baseline": save_path, "--out": out_path}, {"--compare": baseline})
    note = _machine_note(key, base, baseline)
    if echo and (stored or note):
        print(stored["message"] if stored else note, flush=True)
    with tempfile.TemporaryDirectory(prefix="cfn-bench-suite-") as tmp:
        child = _Child(Path(tmp), quick, slow, smoke, timer, tuple(pytest_args or ()), progress)
        data, ran, text = child.run([str(suite_dir())], "run", select or None)
        for path in filter(None, (out_path, _checked_save(save_path, key, data))):
            with atomic_write(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        rows = case_rows(data)
        result: dict[str, Any] = {"cfn_fast": ran["cfn_fast"], "out": None if out_path is None else str(out_path),
                                  "smoke": smoke, "machine": data.get("machine_info", {}), "timer": TIMERS[timer],
                                  "cases": rows, "skipped": ran["skipped"],
                                  "baseline": None if baseline is None else str(baseline)}
        result.update({k: v for k, v in (("stored_baseline", stored), ("baseline_note", note),
                                         ("saved_baseline", save_path and str(save_path))) if v})
        if echo:
            _print_run(rows, data, ran, timer)
            if save_path is not None:
                print(f"stored this run as the baseline of this machine ({key.describe()}): {save_path}")
        if base is not None:
            result.update(_compared(child, data, base, threshold, confirm))
            if echo:
                print(format_comparison(result["comparison"], threshold))
    return result


def _machine_note(key: MachineKey, base: dict | None, path: str | os.PathLike | None) -> str | None:
    """A line when the ``--compare`` baseline was measured on another machine, or in another mode."""
    theirs = None if base is None else key_of(base)
    if theirs is None or theirs == key:
        return None
    return (f"note: the baseline {path} was measured on {theirs.describe()}; this run: {key.describe()} "
            "(the comparison tells code changes apart from machine differences only on the same machine)")


def _checked_save(path: Path | None, key: MachineKey, data: dict) -> Path | None:
    """The ``--save-baseline`` file, once the run's own machine fields are seen to be the key it is filed under."""
    if path is not None and key_of(data) != key:
        theirs = key_of(data)
        raise RuntimeError(f"--save-baseline: the run recorded {theirs.describe() if theirs else 'mixed timers'}, "
                           f"not this machine's {key.describe()}: not stored")
    return path


def _print_run(rows: list[dict[str, Any]], data: dict, ran: dict, timer: str) -> None:
    print(format_table(rows, data.get("machine_info", {})))
    if ran["skipped"]:
        print(format_skipped(ran["skipped"]))
    if timer != "wall":
        print("(timer: CPU time of all threads; throughput, floor and paper columns need --timer wall)")


def _compared(child: _Child, data: dict, base: dict, threshold: float, confirm: int) -> dict[str, Any]:
    cmp = compare(data, base, threshold)
    for attempt in range(confirm):
        suspects = [c["name"] for c in cmp if c["status"] == "slower"]
        if not suspects:
            break
        nodes = [str(suite_dir() / data_fullname(data, name)) for name in suspects]
        again, _, _ = child.run(nodes, f"confirm{attempt}", None)
        data = merge_min(data, again)
        cmp = compare(data, base, threshold)
    return {"comparison": cmp, "threshold": threshold,
            "regressions": [c["name"] for c in cmp if c["status"] == "slower"]}
