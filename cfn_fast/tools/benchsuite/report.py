"""What ``cfn bench suite`` prints and compares: the table of cases and the comparison with a baseline.

The table shows, per case, the minimum and median over rounds, throughput (ratings x epochs per
second), the estimated bytes moved per second, and for the training runs the memory-bandwidth floor
(minimal bytes / triad bandwidth), the achieved fraction of it and, beside the rows Table 3 of the
paper has, the GTX-980 time and our speed-up.

Comparison, built to ignore the noise of a shared machine: a case's figure is its **minimum over
rounds** (noise only ever adds time); it is *suspect* when both its minimum and its median are more
than ``threshold`` (default 25 %) slower than the baseline's; :mod:`.runner` re-runs suspects and
compares the minimum over every run once more.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "TIMERS", "baseline_problem", "case_rows", "compare", "data_fullname",
           "format_comparison", "format_skipped", "format_table", "merge_min", "timer_of"]

DEFAULT_THRESHOLD = 0.25
#: ``--timer`` names and the clocks pytest-benchmark times with
TIMERS = {"wall": "time.perf_counter", "cpu": "time.process_time"}


def timer_of(data: dict) -> str | None:
    """The timer a run used (pytest-benchmark's ``options.timer``: 'perf_counter', 'process_time')."""
    timers = {str(b.get("options", {}).get("timer", "")).split(".")[-1] for b in data.get("benchmarks", [])}
    timers.discard("")
    return timers.pop() if len(timers) == 1 else None


def baseline_problem(data: Any) -> str | None:
    """What makes ``data`` unlike pytest-benchmark's JSON (the fields the comparison reads), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        return "no 'benchmarks' list"
    if not data["benchmarks"]:
        return "no cases in 'benchmarks'"
    for n, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("name"), str):
            return f"benchmarks[{n}] has no 'name'"
        stats, options = bench.get("stats"), bench.get("options")
        for key in ("min", "median"):
            value = stats.get(key) if isinstance(stats, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                return f"{bench['name']}: stats.{key} must be a positive number of seconds, got {value!r}"
        if not isinstance(options, dict) or not isinstance(options.get("timer"), str):
            return f"{bench['name']}: no options.timer"
    return None


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
    wall = timer_of(data) in (None, "perf_counter")      # CPU seconds make no throughput
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
    head = (f"machine: {machine.get('cpu_model', '?')}, {machine.get('physical_cores') or '?'} cores "
            f"({machine.get('logical_cpus', '?')} logical CPUs), cfn threads {machine.get('cfn_threads', '?')}, "
            f"SIMD {machine.get('cfn_simd', '?')}, triad {machine.get('triad_gb_per_s', float('nan')):.1f} GB/s "
            f"(the floor's bandwidth), GPU {machine.get('gpu') or 'none'}, "
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


def format_skipped(skipped: list[dict[str, Any]]) -> str:
    """One line per distinct reason: how many cases it skipped."""
    reasons: dict[str, int] = {}
    for case in skipped:
        reasons[case["reason"]] = reasons.get(case["reason"], 0) + 1
    return "\n".join(f"skipped {n} case(s): {reason}" for reason, n in reasons.items())
