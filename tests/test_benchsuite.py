"""The benchmark suite (cfn_fast/tools/benchsuite, installed with the package) and ``cfn bench suite``:
a run from a plain install, what a run reports, inputs and outputs, comparison, regression switch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from children import child_env  # tests/children.py

import cfn_fast
from cfn_fast import synthetic_ratings
from cfn_fast.backends import available_backends
from cfn_fast.cli import main
from cfn_fast.engine import TrainConfig, init_layers, make_engine, training_inputs
from cfn_fast.tools import benchsuite

ROOT = Path(__file__).resolve().parents[1]
SUITE = benchsuite.suite_dir()
#: a handful of the cheapest cases (one cpu stage, one numpy stage) for runs that check the plumbing
TWO_CASES = "test_stage and (cpu-fold or numpy-loss)"


def _stats(minimum: float, median: float) -> dict:
    return {"min": minimum, "median": median, "rounds": 5}


def _data(timer: str = "perf_counter", **cases: tuple[float, float]) -> dict:
    return {"machine_info": {"triad_gb_per_s": 10.0},
            "benchmarks": [{"name": name, "fullname": f"test_micro.py::{name}", "stats": _stats(*v),
                            "options": {"timer": timer},
                            "extra_info": {"case": name, "backend": "cpu", "bytes": 10 ** 9}}
                           for name, v in cases.items()]}


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfn bench suite: error: "), err[-3000:]
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- a run from a plain install
@pytest.mark.smoke
def test_suite_runs_end_to_end_from_a_plain_install(tmp_path):
    """The package copied alone into a site folder (what a wheel installs: no bench/ beside it) runs
    ``cfn bench suite --quick`` (tiny data) from an unrelated folder: the child measures that very copy,
    every cpu case that --quick keeps runs, stdout is one JSON object, --out gets pytest-benchmark's JSON."""
    site, cwd = tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(Path(cfn_fast.__file__).resolve().parent, site / "cfn_fast",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyx", "*.c"))
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-m", "cfn_fast.cli", "bench", "suite", "--quick", "--smoke", "--json",
                             "--quiet", "--out", str(tmp_path / "run.json"), "--compare", "auto"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n") == 1, result.stdout[:2000]      # one JSON object, nothing else
    summary = json.loads(result.stdout)
    assert summary["cfn_fast"] == str((site / "cfn_fast").resolve())
    ran = {(c["case"], c["backend"]) for c in summary["cases"]}
    for stage in ("batch_setup", "encode", "output", "input_update", "fold"):
        assert (f"micro {stage}", "cpu") in ran
    assert ("I-CFN synthetic 20 ep", "cpu") in ran and ("micro loss", "numpy") in ran
    assert not [c for c in summary["skipped"] if c["backend"] == "cpu" and "unavailable" in c["reason"]]
    stored = json.loads((tmp_path / "run.json").read_text())
    assert len(stored["benchmarks"]) == len(summary["cases"]) and stored["machine_info"]["cfn_smoke"] is True
    # the stored baselines come with the package: --compare auto finds them (none is of a smoke run)
    found = summary["stored_baseline"]
    assert found["folder"] == str(site / "cfn_fast" / "tools" / "benchsuite" / "baselines") and found["stored"]
    assert found["path"] is None and found["message"].startswith("no stored baseline matches this machine (")


def test_suite_refuses_to_measure_another_cfn_fast(tmp_path):
    """The suite's plugin checks that the child imported the cfn_fast being benchmarked, and says so."""
    record = tmp_path / "ran.json"
    env = child_env(CFN_BENCH_PACKAGE=str(tmp_path / "cfn_fast"), CFN_BENCH_OUTCOMES=str(record),
                    CFN_BENCH_SMOKE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(SUITE), "--benchmark-disable", "-k", TWO_CASES],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    error = json.loads(record.read_text())["error"]
    assert error.startswith(f"the benchmark suite imported cfn_fast from {SUITE.parents[1]}, not the one being "
                            f"benchmarked ({tmp_path / 'cfn_fast'})"), error


def test_cpu_cases_skipped_while_cpu_works_here_is_an_error(tmp_path, monkeypatch, capsys):
    """A child whose cfn_fast cannot load the cpu kernels skips every cpu case and exits 0: that is
    reported as the failure it is (the numpy case that did run does not hide it)."""
    if "cpu" not in available_backends():
        pytest.skip("the cpu backend does not work here")
    (tmp_path / "no_cpu_kernels.py").write_text("import sys\nsys.modules['cfn_fast.kernels.cfn_cpu'] = None\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    with pytest.raises(RuntimeError) as info:
        benchsuite.run_suite(smoke=True, select=TWO_CASES, pytest_args=["-p", "no_cpu_kernels"], echo=False,
                             progress=False)
    assert str(info.value).startswith("all 1 selected cpu case(s) were skipped although the cpu backend works here: "
                                      "backend 'cpu' is unavailable: the compiled CPU kernels do not import")


def test_runs_that_measured_nothing_are_reported_as_such(capsys):
    """pytest's "exit 0, all skipped" and "no tests ran" are errors that say what happened, on one line."""
    assert main(["bench", "suite", "--smoke", "--quiet", "-k", "numpy and synthetic and 20"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "no benchmark case ran: all 2 selected case(s) were skipped, e.g. " \
           "test_macro.py::test_training[numpy-synthetic-item-20]: the dense reference runs 1 epoch only" in line
    assert main(["bench", "suite", "--smoke", "--quiet", "-k", "no_such_case"]) == 2
    assert _one_line_error(capsys.readouterr().err).endswith("-k 'no_such_case' selects none of the suite's cases")


def test_a_failing_case_is_one_line_without_traceback(monkeypatch, capsys):
    monkeypatch.setenv("CFN_BENCH_SLOWDOWN", "fold:x")      # the test switch, malformed: the case raises
    assert main(["bench", "suite", "--smoke", "--quiet", "-k", TWO_CASES]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert line == ("cfn bench suite: error: 1 benchmark case(s) failed (pytest exit 1), first "
                    "test_micro.py::test_stage[cpu-fold]: ValueError: invalid literal for int() with base 10: 'x'")


# ----------------------------------------------------------------------------- outputs and inputs
def test_out_never_overwrites_an_input_and_an_existing_file_only_with_force(tmp_path, capsys):
    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps(_data(x=(1.0, 1.0))))
    before = baseline.read_text()
    conftest = SUITE / "conftest.py"
    suite_text = conftest.read_text()
    for argv in (["--compare", str(baseline), "--out", str(baseline), "--force"],
                 ["--out", str(conftest), "--force"],
                 ["--out", str(SUITE / "new.json")]):
        assert main(["bench", "suite", "--smoke", "--quiet", *argv]) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert "is the input given by --compare" in line or "inside the cfn_fast package being benchmarked" in line
    assert baseline.read_text() == before and conftest.read_text() == suite_text
    assert not (SUITE / "new.json").exists()
    existing = tmp_path / "old.json"
    existing.write_text("keep me")
    assert main(["bench", "suite", "--smoke", "--quiet", "-k", TWO_CASES, "--out", str(existing)]) == 2
    assert _one_line_error(capsys.readouterr().err).endswith(f"--out {existing} exists; pass --force to replace it")
    assert existing.read_text() == "keep me"
    assert main(["bench", "suite", "--smoke", "--quiet", "-k", TWO_CASES, "--out", str(existing), "--force"]) == 0
    assert len(json.loads(existing.read_text())["benchmarks"]) == 2


def test_json_is_a_flag_and_takes_no_file(tmp_path, capsys):
    assert main(["bench", "suite", "--json", str(tmp_path / "run.json")]) == 2
    captured = capsys.readouterr()
    assert "unrecognized arguments" in _one_line_error(captured.err)
    assert json.loads(captured.out)["exit_code"] == 2 and not (tmp_path / "run.json").exists()


def test_baseline_is_checked_before_the_run(tmp_path, monkeypatch, capsys):
    def started(*args, **kwargs):
        raise AssertionError("the suite started before the baseline was checked")
    monkeypatch.setattr(subprocess, "Popen", started)
    wall = _data(x=(1.0, 1.0))
    cases = {"missing.json": None, "text.json": "not json", "list.json": json.dumps([1, 2]),
             "empty.json": json.dumps({"benchmarks": []}),
             "zero.json": json.dumps(_data(x=(0.0, 1.0))),
             "wall.json": json.dumps(wall)}
    expected = {"missing.json": "does not exist", "text.json": "is not JSON (Expecting value at line 1, column 1)",
                "list.json": "is not a pytest-benchmark result (no 'benchmarks' list)",
                "empty.json": "is not a pytest-benchmark result (no cases in 'benchmarks')",
                "zero.json": "x: stats.min must be a positive number of seconds, got 0.0",
                "wall.json": "was timed with perf_counter, this run with time.process_time: pass --timer wall"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        assert main(["bench", "suite", "--timer", "cpu", "--compare", str(tmp_path / name), "--quiet"]) == 2
        assert expected[name] in _one_line_error(capsys.readouterr().err), name


def test_without_the_bench_extra_the_command_names_it(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark"
                        else real(name, *a))
    assert main(["bench", "suite", "--quick"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert line.endswith("cfn bench suite needs pytest-benchmark, from the bench extra: pip install 'cfn_fast[bench]')")


# ----------------------------------------------------------------------------- comparison
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
    data["machine_info"].update(cpu_model="Fake CPU 9000", physical_cores=4, logical_cpus=8, cfn_simd="avx2")
    data["benchmarks"][0]["extra_info"].update(ratings_epochs=10 ** 6, floor_s=0.1, paper_gtx980_s=123.0)
    row = benchsuite.case_rows(data)[0]
    assert row["gb_per_s"] == pytest.approx(0.5) and row["ratings_epochs_per_s"] == pytest.approx(5e5)
    assert row["floor_s"] == pytest.approx(0.1) and row["fraction_of_floor"] == pytest.approx(0.05)
    assert row["speedup_vs_paper"] == pytest.approx(61.5)
    table = benchsuite.format_table([row], data["machine_info"])
    assert "2m03.0s (x61.5)" in table
    assert table.splitlines()[0].startswith("machine: Fake CPU 9000, 4 cores (8 logical CPUs), ")
    assert "SIMD avx2, triad 10.0 GB/s (the floor's bandwidth)" in table.splitlines()[0]


def test_deliberately_slower_kernel_is_flagged(tmp_path, monkeypatch, capsys):
    """CFN_BENCH_SLOWDOWN runs the cpu encode stage 6 times per call: --compare must flag it, and with
    --json the error object carries the comparison."""
    baseline = tmp_path / "base.json"
    select = "test_stage and cpu and (encode or batch_setup)"
    assert main(["bench", "suite", "--quick", "--timer", "cpu", "-k", select, "--out", str(baseline), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "micro encode" in out and "micro batch_setup" in out
    # pytest-benchmark's own tool reads the JSON
    check = subprocess.run([sys.executable, "-c", "import sys; from pytest_benchmark.cli import main; "
                            f"sys.argv = ['pytest-benchmark', 'compare', {str(baseline)!r}]; main()"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "test_stage[cpu-encode]" in check.stdout, check.stderr[-2000:]
    monkeypatch.setenv("CFN_BENCH_SLOWDOWN", "encode:6")
    code = main(["bench", "suite", "--quick", "--timer", "cpu", "-k", select, "--compare", str(baseline),
                 "--confirm", "1", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    # (the unchanged batch_setup case may be flagged too when other jobs load the machine: not asserted)
    assert "slower than the baseline by more than 25%: " in _one_line_error(captured.err)
    report = json.loads(captured.out)
    status = {c["name"]: c["status"] for c in report["result"]["comparison"]}
    assert status["test_stage[cpu-encode]"] == "slower" and "test_stage[cpu-encode]" in report["result"]["regressions"]
    assert report["exit_code"] == 1 and report["command"] == "bench suite"


def test_option_errors_are_clear(capsys):
    assert main(["bench", "suite", "--threshold", "0"]) == 2
    assert "threshold" in _one_line_error(capsys.readouterr().err)


def test_stored_baselines_pass_the_baseline_check():
    """The stored baselines live in the package (package data: a wheel install finds them) and each is keyed
    by the machine and mode that measured it."""
    stored = sorted(benchsuite.STORED_DIR.glob("*.json"))
    assert benchsuite.STORED_DIR == SUITE / "baselines" and stored, "the package stores the reference runs"
    assert '"cfn_fast.tools.benchsuite" = ["baselines/*.json"]' in (ROOT / "pyproject.toml").read_text()
    keys = set()
    for path in stored:
        data = benchsuite.check_baseline(path, "cpu" if "cputime" in path.name else "wall")
        assert data["machine_info"]["triad_gb_per_s"] > 0
        for bench in data["benchmarks"]:
            assert bench["extra_info"]["backend"] in ("numpy", "cpu", "cuda")
        key = benchsuite.key_of(data)
        assert key.cpu_model and key.logical_cpus and key.simd and not key.smoke
        keys.add(key)
    assert len(keys) == len(stored), "two stored baselines share a key"


def test_cpu_timer_runs_make_no_throughput_figures():
    cpu = _data(timer="process_time", x=(1.0, 1.0))
    assert "gb_per_s" not in benchsuite.case_rows(cpu)[0] and "gb_per_s" in benchsuite.case_rows(_data(x=(1.0, 1.0)))[0]


# ----------------------------------------------------------------------------- stored baselines, keyed by the CPU
#: one micro stage, one training case (floor figures), one bfloat16 case (skipped until CFN has dtype)
KEYED_CASES = "(test_stage and cpu-fold) or (test_training and cpu-synthetic-item-1) or (bf16 and cpu-item-1)"


def _stored_run(path: Path, cpu_model: str | None = None, scale: float = 1.0) -> Path:
    """A stored baseline of the KEYED_CASES smoke run on this machine (or with another ``cpu_model``):
    times scaled by ``scale``, so that a comparison with it cannot fail on a loaded machine."""
    key = benchsuite.this_key("wall", False, True)
    machine = {"cpu_model": cpu_model or key.cpu_model, "logical_cpus": key.logical_cpus, "cfn_simd": key.simd,
               "cfn_quick": False, "cfn_smoke": True, "triad_gb_per_s": 10.0}
    names = ["test_stage[cpu-fold]", "test_training[cpu-synthetic-item-1]"]
    data = {**_data(**{n: (scale, scale) for n in names}), "machine_info": machine,
            "datetime": "2026-01-01T00:00:00"}
    path.write_text(json.dumps(data))
    return path


def test_compare_auto_uses_the_baseline_of_this_cpu_only(tmp_path, capsys):
    """--compare auto: a stored baseline of another CPU is not used (the run says so, naming this CPU and the
    stored ones, and exits 0 uncompared); --save-baseline stores the run under this CPU's key, and the next
    --compare auto uses it.  The JSON carries each training case's GB/s, floor and share of the floor."""
    stored = tmp_path / "stored"
    stored.mkdir()
    _stored_run(stored / "other.json", cpu_model="Fake CPU 9000")
    key = benchsuite.this_key("wall", False, True)
    argv = ["bench", "suite", "--smoke", "--quiet", "--json", "-k", KEYED_CASES, "--baseline-dir", str(stored)]
    assert main([*argv, "--compare", "auto", "--save-baseline"]) == 0
    result = json.loads(capsys.readouterr().out)
    message = result["stored_baseline"]["message"]
    assert message.startswith(f"no stored baseline matches this machine ({key.cpu_model}, {key.logical_cpus} "
                              f"logical CPUs, SIMD {key.simd}, --timer wall, smoke full run) in {stored}: "
                              "stored there: other.json: Fake CPU 9000, "), message
    assert message.endswith("running without a comparison (record one here with --save-baseline)")
    assert result["baseline"] is None and "comparison" not in result
    saved = Path(result["saved_baseline"])
    assert saved == stored / key.file_name() and benchsuite.key_of(json.loads(saved.read_text())) == key
    training = [c for c in result["cases"] if c["case"] == "I-CFN synthetic 1 ep"]
    assert len(training) == 1 and {"gb_per_s", "floor_s", "fraction_of_floor", "bytes"} <= set(training[0])
    assert training[0]["fraction_of_floor"] == pytest.approx(training[0]["floor_s"] / training[0]["min_s"])
    assert result["machine"]["cpu_model"] == key.cpu_model and result["machine"]["cfn_simd"] == key.simd
    bf16 = [c for c in result["skipped"] if "bf16" in c["case"]]
    from cfn_fast.tools.benchsuite import workloads
    if not workloads.dtype_supported():
        assert bf16 and bf16[0]["reason"].startswith("CFN has no dtype parameter in this cfn_fast")
    # this CPU's baseline (times made 1000x slower, so the run compares faster whatever the load) is used
    _stored_run(saved, scale=1000.0)
    assert main([*argv, "--compare", "auto"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["baseline"] == str(saved) and result["stored_baseline"]["path"] == str(saved)
    assert result["stored_baseline"]["message"].startswith("comparing with the stored baseline of this machine")
    statuses = {c["name"]: c["status"] for c in result["comparison"]}
    assert {name: statuses.pop(name) for name in ("test_stage[cpu-fold]", "test_training[cpu-synthetic-item-1]")} \
        == {"test_stage[cpu-fold]": "faster", "test_training[cpu-synthetic-item-1]": "faster"}
    assert set(statuses.values()) <= {"new"}     # the bf16 case, when it runs, is not in the rewritten baseline
    # an explicit --compare FILE of another CPU is compared, with a note
    assert main([*argv, "--compare", str(_stored_run(tmp_path / "x.json", "Fake CPU 9000", 1000.0))]) == 0
    assert json.loads(capsys.readouterr().out)["baseline_note"].startswith(
        f"note: the baseline {tmp_path / 'x.json'} was measured on Fake CPU 9000, ")


def test_save_baseline_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    """Checked before the run: this machine's stored baseline is replaced only with --force, and never when it
    is the baseline this run compares with."""
    def started(*args, **kwargs):
        raise AssertionError("the suite started before --save-baseline was checked")
    monkeypatch.setattr(subprocess, "Popen", started)
    key = benchsuite.this_key("wall", False, True)
    mine = _stored_run(tmp_path / "mine.json")
    before = mine.read_text()
    argv = ["bench", "suite", "--smoke", "--quiet", "--save-baseline", "--baseline-dir", str(tmp_path)]
    assert main(argv) == 2
    assert _one_line_error(capsys.readouterr().err).endswith(
        f"--save-baseline: {mine} exists (the stored baseline of this machine: {key.describe()}); "
        "pass --force to replace it")
    assert main([*argv, "--force", "--compare", "auto"]) == 2
    assert "--save-baseline " + str(mine) + " is the input given by --compare" in \
        _one_line_error(capsys.readouterr().err)
    assert main([*argv[:-2], "--baseline-dir", str(tmp_path / "nowhere")]) == 2
    assert "the baseline folder" in _one_line_error(capsys.readouterr().err)
    assert mine.read_text() == before


def test_machine_keys_and_file_names():
    key = benchsuite.MachineKey("AMD EPYC 7B13 64-Core Processor", 2, "avx2", "perf_counter", True, False)
    assert key.file_name() == "amd-epyc-7b13-64-core-2cpu-avx2-wall-quick.json"
    assert benchsuite.MachineKey("Intel(R) Xeon(R) Processor", 2, "avx512", "process_time", False, True) \
        .file_name() == "intel-xeon-2cpu-avx512-cpu-smoke-full.json"
    assert key.describe() == "AMD EPYC 7B13 64-Core Processor, 2 logical CPUs, SIMD avx2, --timer wall, quick run"
    assert benchsuite.key_of(_data(timer="process_time", x=(1.0, 1.0))).timer == "process_time"
    assert benchsuite.find_stored(key, ROOT / "no-such-folder")["message"].startswith(
        "no stored baseline matches this machine (AMD EPYC 7B13 64-Core Processor, ")


def test_bytes_model_counts_the_weight_storage():
    """Per mini-batch: the four per-input arrays' values of each distinct input read and written once at
    4 (float32) or 2 (bfloat16) bytes each, and the batch's CSR entries (8 bytes) read once."""
    from cfn_fast.tools.benchsuite import workloads
    inputs = training_inputs(synthetic_ratings(60, 40, 600, seed=0, side_info=False), "item").samples
    hidden, side, batch = 8, 3, 16
    distinct, entries = workloads.batch_shapes(inputs, batch)
    values = int(np.sum(distinct * (2 * hidden + 1 + side)))
    fp32 = workloads.epoch_bytes(inputs, hidden, side, batch)
    bf16 = workloads.epoch_bytes(inputs, hidden, side, batch, workloads.WEIGHT_BYTES["bfloat16"])
    assert fp32 == 2 * 4 * values + 8 * int(entries.sum()) and bf16 == 2 * 2 * values + 8 * int(entries.sum())
    assert fp32 - bf16 == 4 * values and workloads.WEIGHT_BYTES == {"float32": 4, "bfloat16": 2}
    with pytest.raises(ValueError, match="weight_bytes must be 4"):
        workloads.epoch_bytes(inputs, hidden, side, batch, 8)


# ----------------------------------------------------------------------------- the engine's per-stage hook
def test_cpu_engine_runs_one_stage_of_the_step():
    """``CpuEngine.run_stage`` (the micro cases' public hook) re-runs each stage after a step of the same rows."""
    if "cpu" not in available_backends():
        pytest.skip("the cpu backend does not work here")
    inputs = training_inputs(synthetic_ratings(60, 40, 600, seed=0, side_info=False), "item")
    engine = make_engine("cpu", init_layers(inputs.n_inputs, (8,), seed=0),
                         TrainConfig(1.0, 0.5, 0.25, 0.01, 8, 0), inputs.samples)
    rows = np.arange(8)
    with pytest.raises(ValueError, match="run_phase needs a step"):
        engine.run_stage("encode", np.arange(30), 1, 0.01)
    engine.sgd_step(rows, 1, 0.01)
    for stage in engine.STAGES:
        engine.run_stage(stage, rows, 1, 0.01)
    assert np.isfinite(engine.max_abs_param())
    with pytest.raises(ValueError, match="stage must be one of batch_setup, encode, output, input_update, fold"):
        engine.run_stage("forward", rows, 1, 0.01)


def test_suite_cuda_cases_in_host_emulation(tmp_path):
    """The suite's cuda cases (a step, the fold, predict_pairs, top_n, one epoch) on the emulated
    kernels of tests/cuda_emulator: their code paths run without a GPU."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the kernels cannot be emulated here")
    env = child_env(CFN_BENCH_SMOKE="1", CFN_BENCH_EMULATE_CUDA="1")
    result = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(SUITE), "--benchmark-disable", "--cfn-quick", "-k",
                             "cuda and (test_stage or predict or top_n or synthetic-item-1)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout
