"""``cfn bench suite``: run the pytest-benchmark suite (bench/suite), print its table, compare runs.

The suite runs in a child ``python -m pytest`` so that its JSON is pytest-benchmark's own (read
by ``pytest-benchmark compare``).  The table shows, per case, the minimum and median over rounds,
throughput (ratings x epochs per second), the estimated bytes moved per second, and for the
training runs the memory-bandwidth floor (minimal bytes / triad bandwidth), the achieved fraction
of it and, beside the rows Table 3 of the paper has, the GTX-980 time and our speed-up.

Comparison (``--compare BASELINE``), built to ignore the noise of a shared machine:

* a case's figure is its **minimum over rounds** (noise only ever adds time);
* it is *suspect* when both its minimum and its median are more than ``threshold`` (default
  25 %) slower than the baseline's;
* suspect cases are **run again** (``confirm`` times, default 2) and the minimum over every run
  is compared once more: a case is a regression only if it stays over the threshold, so a burst
  of load during one run does not fail the comparison.

A regression makes the command exit with status 1 after printing the comparison.

Timer: ``--timer wall`` (default, ``time.perf_counter``) gives the throughput figures;
``--timer cpu`` (``time.process_time``: CPU seconds of all threads) is far less sensitive to other
jobs on a shared machine — use it for regression checks there, against a baseline taken with the
same timer (runs with different timers are not compared).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "TIMERS", "compare", "format_table", "run_suite", "suite_dir"]

DEFAULT_THRESHOLD = 0.25
TIMERS = {"wall": "time.perf_counter", "cpu": "time.process_time"}


def suite_dir() -> Path:
    """bench/suite of the repository this package was installed from (editable / in-place)."""
    return Path(__file__).resolve().parents[2] / "bench" / "suite"


# ----------------------------------------------------------------------------- running
def _pytest(suite: Path, json_path: Path, *, quick: bool, slow: bool, select: str | None,
            nodes: list[str] | None = None, extra: list[str] | None = None,
            progress: bool = False, timer: str = "wall") -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", *(nodes or [str(suite)]), "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={json_path}", "--benchmark-sort=name", "--benchmark-columns=min,median,rounds"]
    cmd += [f"--benchmark-timer={TIMERS[timer]}"]
    cmd += ["--cfn-quick"] if quick else []
    cmd += ["--cfn-slow"] if slow else []
    cmd += ["-k", select] if select else []
    cmd += list(extra or [])
    return _stream(cmd, suite.parents[1], progress)


def _stream(cmd: list[str], cwd: Path, progress: bool) -> tuple[int, str]:
    """Run ``cmd``, echoing its output to stderr as it comes (``progress``); (exit status, output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if progress:
            sys.stderr.write(line)
            sys.stderr.flush()
    return proc.wait(), "".join(lines)


def _checked(run: tuple[int, str], json_path: Path) -> dict:
    code, output = run
    if code not in (0, 5) or not json_path.is_file():   # 5: nothing selected
        raise RuntimeError(f"the benchmark suite failed (pytest exit {code}):\n{output[-4000:].strip()}")
    return json.loads(json_path.read_text())


def run_suite(*, quick: bool = False, slow: bool = False, json_path: str | Path | None = None,
              baseline: str | Path | None = None, threshold: float = DEFAULT_THRESHOLD, confirm: int = 2,
              select: str | None = None, suite: str | Path | None = None,
              pytest_args: list[str] | None = None, echo: bool = True, progress: bool = True,
              timer: str = "wall") -> dict[str, Any]:
    """Run the suite; with ``baseline``, compare (module docstring).  Returns the result dict.
    ``echo`` prints the tables on stdout, ``progress`` pytest's output on stderr."""
    suite = Path(suite) if suite else suite_dir()
    if not (suite / "conftest.py").is_file():
        raise FileNotFoundError(f"no benchmark suite at {suite} (bench/suite of a cfn_fast checkout); "
                                "pass --suite-dir")
    if not 0 < threshold < 10:
        raise ValueError(f"threshold must lie in (0, 10), got {threshold}")
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {sorted(TIMERS)}, got {timer!r}")
    base = json.loads(Path(baseline).read_text()) if baseline else None
    if base is not None and _timer_of(base) not in (None, TIMERS[timer].split(".")[-1]):
        raise ValueError(f"the baseline {baseline} was timed with {_timer_of(base)}, this run with "
                         f"{TIMERS[timer]}: pass --timer {'cpu' if _timer_of(base) == 'process_time' else 'wall'}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(json_path) if json_path else Path(tmp) / "suite.json"
        data = _checked(_pytest(suite, out, quick=quick, slow=slow, select=select, extra=pytest_args,
                                progress=progress, timer=timer), out)
        rows = case_rows(data)
        result: dict[str, Any] = {"json": str(out) if json_path else None, "machine": data.get("machine_info", {}),
                                  "timer": TIMERS[timer], "cases": rows}
        if echo:
            print(format_table(rows, data.get("machine_info", {})))
            if timer != "wall":
                print("(timer: CPU time of all threads; throughput, floor and paper columns need --timer wall)")
        if base is not None:
            cmp = compare(data, base, threshold)
            for attempt in range(confirm):
                suspects = [c["name"] for c in cmp if c["status"] == "slower"]
                if not suspects:
                    break
                again = Path(tmp) / f"confirm{attempt}.json"
                nodes = [str(suite / data_fullname(data, name)) for name in suspects]
                data = merge_min(data, _checked(_pytest(suite, again, quick=quick, slow=slow, select=None,
                                                        nodes=nodes, extra=pytest_args, progress=progress,
                                                        timer=timer), again))
                cmp = compare(data, base, threshold)
            result["comparison"] = cmp
            result["threshold"] = threshold
            result["regressions"] = [c["name"] for c in cmp if c["status"] == "slower"]
            if echo:
                print(format_comparison(cmp, threshold))
    return result


def _timer_of(data: dict) -> str | None:
    """The timer a run used (pytest-benchmark's ``options.timer``: 'perf_counter', 'process_time')."""
    timers = {str(b.get("options", {}).get("timer", "")).split(".")[-1] for b in data.get("benchmarks", [])}
    timers.discard("")
    return timers.pop() if len(timers) == 1 else None


def data_fullname(data: dict, name: str) -> str:
    """``test_file.py::test_name[params]`` of a case (relative to the suite folder)."""
    for bench in data["benchmarks"]:
        if bench["name"] == name:
            return bench["fullname"].split("/")[-1]
    raise KeyError(name)


def merge_min(data: dict, again: dict) -> dict:
    """``data`` with each re-run case's minimum (and median) the lower of the two runs."""
    fresh = {b["name"]: b for b in again["benchmarks"]}
    for bench in data["benchmarks"]:
        other = fresh.get(bench["name"])
        if other is not None:
            for key in ("min", "median"):
                bench["stats"][key] = min(bench["stats"][key], other["stats"][key])
            bench["stats"]["rounds"] += other["stats"]["rounds"]
    return data


# ----------------------------------------------------------------------------- tables
def case_rows(data: dict) -> list[dict[str, Any]]:
    """One row per case: times (min, median), throughput, bandwidth, floor and paper figures."""
    bandwidth = data.get("machine_info", {}).get("triad_gb_per_s")
    wall = _timer_of(data) in (None, "perf_counter")      # CPU seconds make no throughput
    rows = []
    for bench in data["benchmarks"]:
        info, stats = bench.get("extra_info", {}), bench["stats"]
        best = stats["min"]
        row = {"name": bench["name"], "case": info.get("case", bench["name"]), "backend": info.get("backend"),
               "min_s": best, "median_s": stats["median"], "rounds": stats["rounds"],
               "bytes": info.get("bytes"), "sizes": info.get("sizes", {})}
        if info.get("ratings_epochs") and wall:
            row["ratings_epochs_per_s"] = info["ratings_epochs"] / best
        if info.get("bytes") and wall:
            row["gb_per_s"] = info["bytes"] / best / 1e9
        if "floor_s" in info and bandwidth and wall:
            row["floor_s"] = info["bytes"] / (bandwidth * 1e9)
            row["fraction_of_floor"] = row["floor_s"] / best
        if info.get("paper_gtx980_s") and wall:
            row["paper_gtx980_s"] = info["paper_gtx980_s"]
            row["speedup_vs_paper"] = info["paper_gtx980_s"] / best
        rows.append(row)
    return rows


def _t(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 60:
        return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
    return f"{seconds:.3f}s" if seconds >= 0.1 else f"{seconds * 1e3:.3f}ms"


def format_table(rows: list[dict[str, Any]], machine: dict[str, Any] | None = None) -> str:
    machine = machine or {}
    head = (f"machine: {machine.get('cpu_model', '?')}, {machine.get('logical_cpus', '?')} logical CPUs, "
            f"cfn threads {machine.get('cfn_threads', '?')}, SIMD {machine.get('cfn_simd', '?')}, "
            f"triad {machine.get('triad_gb_per_s', float('nan')):.1f} GB/s, GPU {machine.get('gpu') or 'none'}, "
            f"load {machine.get('load_average_1m', float('nan')):.1f}")
    lines = [head, (f"{'case':<34}{'backend':<8}{'min':>11}{'median':>11}{'rounds':>7}{'Mrat·ep/s':>10}"
                    f"{'GB/s':>7}{'floor':>10}{'of floor':>9}  paper GTX-980 (x speed-up)")]
    for r in sorted(rows, key=lambda r: (not r["case"].startswith(("I-", "U-")), r["case"], r["backend"] or "")):
        rate = f"{r['ratings_epochs_per_s'] / 1e6:.2f}" if "ratings_epochs_per_s" in r else ""
        gbs = f"{r['gb_per_s']:.2f}" if "gb_per_s" in r else ""
        frac = f"{100 * r['fraction_of_floor']:.1f}%" if "fraction_of_floor" in r else ""
        paper = f"{_t(r['paper_gtx980_s'])} (x{r['speedup_vs_paper']:.1f})" if "paper_gtx980_s" in r else ""
        lines.append(f"{r['case']:<34}{r['backend'] or '':<8}{_t(r['min_s']):>11}{_t(r['median_s']):>11}"
                     f"{r['rounds']:>7}{rate:>10}{gbs:>7}{_t(r.get('floor_s')):>10}{frac:>9}  {paper}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- comparison
def compare(data: dict, base: dict, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Per case present in both runs: change of the minimum and of the median; status ``slower``
    when both exceed ``threshold``, ``faster`` when both are below ``-threshold``, else ``same``;
    cases in one run only are ``new`` / ``missing``."""
    old = {b["name"]: b["stats"] for b in base["benchmarks"]}
    new = {b["name"]: b["stats"] for b in data["benchmarks"]}
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            out.append({"name": name, "status": "new" if name in new else "missing"})
            continue
        d_min = new[name]["min"] / old[name]["min"] - 1
        d_med = new[name]["median"] / old[name]["median"] - 1
        status = "slower" if min(d_min, d_med) > threshold else \
            "faster" if max(d_min, d_med) < -threshold else "same"
        out.append({"name": name, "status": status, "change_min": d_min, "change_median": d_med,
                    "min_s": new[name]["min"], "baseline_min_s": old[name]["min"]})
    return out


def format_comparison(cmp: list[dict[str, Any]], threshold: float) -> str:
    lines = [(f"comparison with the baseline (regression: min and median both > +{100 * threshold:.0f}%, "
              "confirmed by re-runs)"), f"{'case':<46}{'min':>11}{'baseline':>11}{'Δmin':>9}{'Δmedian':>9}  status"]
    for c in cmp:
        if "change_min" not in c:
            lines.append(f"{c['name']:<46}{'':>40}  {c['status']}")
            continue
        lines.append(f"{c['name']:<46}{_t(c['min_s']):>11}{_t(c['baseline_min_s']):>11}"
                     f"{100 * c['change_min']:>+8.1f}%{100 * c['change_median']:>+8.1f}%  "
                     f"{'SLOWER' if c['status'] == 'slower' else c['status']}")
    return "\n".join(lines)
