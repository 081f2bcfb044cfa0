"""The benchmark suite (bench/suite) and ``cfn bench suite``: smoke run, comparison, regression switch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cfn_fast.cli import main
from cfn_fast.tools import suite as benchsuite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "suite"


def _stats(minimum: float, median: float) -> dict:
    return {"min": minimum, "median": median, "rounds": 5}


def _data(**cases: tuple[float, float]) -> dict:
    return {"machine_info": {"triad_gb_per_s": 10.0},
            "benchmarks": [{"name": name, "fullname": f"bench/suite/test_micro.py::{name}", "stats": _stats(*v),
                            "extra_info": {"case": name, "backend": "cpu", "bytes": 10 ** 9}}
                           for name, v in cases.items()]}


def test_suite_smoke_with_benchmarking_disabled():
    """Every case of the suite runs once on tiny data (CI: the suite never rots)."""
    env = {**__import__("os").environ, "CFN_BENCH_SMOKE": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                             "--benchmark-disable", "--cfn-quick"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_compare_is_robust_to_noise():
    base = _data(a=(1.0, 1.1), b=(1.0, 1.0), c=(1.0, 1.0), d=(1.0, 1.0), gone=(1.0, 1.0))
    new = _data(a=(1.05, 3.0),       # an outlier-heavy run: the median moved, the minimum did not
                b=(1.5, 1.6),        # both slower: suspect
                c=(0.5, 0.6),        # faster
                d=(1.2, 1.2),        # within the threshold
                fresh=(1.0, 1.0))
    status = {c["name"]: c["status"] for c in benchsuite.compare(new, base, 0.25)}
    assert status == {"a": "same", "b": "slower", "c": "faster", "d": "same", "gone": "missing", "fresh": "new"}
    text = benchsuite.format_comparison(benchsuite.compare(new, base, 0.25), 0.25)
    assert "SLOWER" in text and "+50.0%" in text


def test_merge_keeps_the_minimum_over_runs():
    first, again = _data(b=(1.5, 1.6)), _data(b=(1.1, 1.3))
    merged = benchsuite.merge_min(first, again)
    assert merged["benchmarks"][0]["stats"]["min"] == 1.1 and merged["benchmarks"][0]["stats"]["rounds"] == 10


def test_table_rows_floor_and_paper():
    data = _data(x=(2.0, 2.0))
    data["benchmarks"][0]["extra_info"].update(ratings_epochs=10 ** 6, floor_s=0.1, paper_gtx980_s=123.0)
    row = benchsuite.case_rows(data)[0]
    assert row["gb_per_s"] == pytest.approx(0.5) and row["ratings_epochs_per_s"] == pytest.approx(5e5)
    assert row["floor_s"] == pytest.approx(0.1) and row["fraction_of_floor"] == pytest.approx(0.05)
    assert row["speedup_vs_paper"] == pytest.approx(61.5)
    assert "2m03.0s (x61.5)" in benchsuite.format_table([row], data["machine_info"])


def test_deliberately_slower_kernel_is_flagged(tmp_path, monkeypatch, capsys):
    """CFN_BENCH_SLOWDOWN runs the cpu encode stage 6 times per call: --compare must flag it."""
    baseline = tmp_path / "base.json"
    select = "test_stage and cpu and (encode or batch_setup)"
    assert main(["bench", "suite", "--quick", "--timer", "cpu", "-k", select, "--json", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "micro encode" in out and "micro batch_setup" in out
    # pytest-benchmark's own tool reads the JSON
    check = subprocess.run([sys.executable, "-c", "import sys; from pytest_benchmark.cli import main; "
                            f"sys.argv = ['pytest-benchmark', 'compare', {str(baseline)!r}]; main()"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "test_stage[cpu-encode]" in check.stdout, check.stderr[-2000:]
    monkeypatch.setenv("CFN_BENCH_SLOWDOWN", "encode:6")
    code = main(["bench", "suite", "--quick", "--timer", "cpu", "-k", select, "--compare", str(baseline),
                 "--confirm", "1"])
    captured = capsys.readouterr()
    assert code == 1
    verdict = [line for line in captured.err.splitlines() if "slower than the baseline" in line]
    assert len(verdict) == 1 and verdict[0].endswith("test_stage[cpu-encode]"), captured.err[-2000:]
    assert "SLOWER" in captured.out


def test_suite_errors_are_clear(tmp_path, capsys):
    assert main(["bench", "suite", "--suite-dir", str(tmp_path)]) == 2
    assert "no benchmark suite" in capsys.readouterr().err
    assert main(["bench", "suite", "--threshold", "0", "--suite-dir", str(SUITE)]) == 2
    assert "threshold" in capsys.readouterr().err


def test_stored_baseline_is_pytest_benchmark_json():
    stored = sorted((ROOT / "bench" / "baselines").glob("*.json"))
    assert stored, "bench/baselines holds the reference run of this machine class"
    for path in stored:
        data = json.loads(path.read_text())
        assert data["machine_info"]["triad_gb_per_s"] > 0 and data["benchmarks"]
        for bench in data["benchmarks"]:
            assert bench["stats"]["min"] > 0 and bench["extra_info"]["backend"] in ("numpy", "cpu", "cuda")


def test_cpu_timer_runs_are_not_compared_with_wall_time(tmp_path, capsys):
    base = _data(x=(1.0, 1.0))
    base["benchmarks"][0]["options"] = {"timer": "perf_counter"}
    path = tmp_path / "wall.json"
    path.write_text(json.dumps(base))
    assert main(["bench", "suite", "--timer", "cpu", "--compare", str(path), "-k", "nothing"]) == 2
    assert "--timer wall" in capsys.readouterr().err
    cpu = _data(x=(1.0, 1.0))
    cpu["benchmarks"][0]["options"] = {"timer": "time.process_time"}
    assert "gb_per_s" not in benchsuite.case_rows(cpu)[0] and "gb_per_s" in benchsuite.case_rows(base)[0]


def test_suite_cuda_cases_in_host_emulation():
    """The suite's cuda cases (a step, the fold, predict_pairs, top_n, one epoch) on the emulated
    kernels of tests/cuda_emulator: their code paths run without a GPU."""
    import os
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the kernels cannot be emulated here")
    env = {**os.environ, "CFN_BENCH_SMOKE": "1", "CFN_BENCH_EMULATE_CUDA": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                             "--benchmark-disable", "--cfn-quick", "-k",
                             "cuda and (test_stage or predict or top_n or synthetic-item-1)"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout
