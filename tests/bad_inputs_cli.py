"""Bad-input rows for the command line; tests/test_bad_input.py runs them and renders the table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable
from unittest import mock

from bad_input_case import Case  # tests/bad_input_case.py


# ----------------------------------------------------------------------------- cfn bench suite (issue 21)
def _suite(*argv: str) -> Callable[[Path], object]:
    """``cfn bench suite ARGV`` in-process; ``{tmp}`` is the test's folder, holding ``base.json`` (a
    wall-time pytest-benchmark baseline), ``text.json`` (not JSON) and ``other.json`` (JSON of another
    shape); ``{suite}`` is the installed suite's folder."""
    def run(tmp: Path) -> object:
        from cfn_fast import cli
        from cfn_fast.tools.benchsuite import suite_dir
        case = {"name": "test_stage[cpu-fold]", "stats": {"min": 1e-3, "median": 1e-3},
                "options": {"timer": "perf_counter"}}
        (tmp / "base.json").write_text(json.dumps({"benchmarks": [case]}))
        (tmp / "text.json").write_text("min 1.0 s\n")
        (tmp / "other.json").write_text(json.dumps({"cases": [1, 2]}))
        return cli.run(["bench", "suite", "--quiet",
                        *(a.format(tmp=tmp, suite=suite_dir()) for a in argv)])
    return run


def _without_pytest_benchmark(tmp: Path) -> object:
    real = importlib.util.find_spec
    with mock.patch("importlib.util.find_spec",
                    lambda name, *a: None if name == "pytest_benchmark" else real(name, *a)):
        return _suite("--quick")(tmp)


CASES: list[Case] = [
    # ------------------------------------------------------------------------- cfn bench suite (issue 21): start
    Case("benchmark suite without pytest-benchmark installed", "cfn bench suite --quick", _without_pytest_benchmark,
         ModuleNotFoundError, "cfn bench suite needs pytest-benchmark, from the bench extra: "
         "pip install 'cfn_fast[bench]'", needs_tmp=True),
    Case("benchmark JSON written over the baseline it compares with (refused even with --force)",
         "cfn bench suite --compare base.json --out base.json --force",
         _suite("--compare", "{tmp}/base.json", "--out", "{tmp}/base.json", "--force"), ValueError,
         r"re:--out .*base\.json is the input given by --compare \(.*base\.json\); writing it would destroy "
         r"the input: choose another output path",
         shown="--out base.json is the input given by --compare (base.json); writing it would destroy the input: "
               "choose another output path", needs_tmp=True),
    Case("benchmark JSON written into the installed package (e.g. over the suite's conftest.py)",
         "cfn bench suite --out .../cfn_fast/tools/benchsuite/conftest.py --force",
         _suite("--out", "{suite}/conftest.py", "--force"), ValueError,
         r"re:--out .*/cfn_fast/tools/benchsuite/conftest\.py lies inside the cfn_fast package being benchmarked "
         r"\(.*/cfn_fast\), whose code and suite are inputs of the run: choose another output path",
         shown="--out site-packages/cfn_fast/tools/benchsuite/conftest.py lies inside the cfn_fast package being "
               "benchmarked (site-packages/cfn_fast), whose code and suite are inputs of the run: choose another "
               "output path", needs_tmp=True),
    Case("benchmark JSON over an existing file, without --force", "cfn bench suite --out text.json",
         _suite("--out", "{tmp}/text.json"), ValueError,
         r"re:--out .*text\.json exists; pass --force to replace it",
         shown="--out text.json exists; pass --force to replace it", needs_tmp=True),
    Case("baseline that is not JSON", "cfn bench suite --compare text.json",
         _suite("--compare", "{tmp}/text.json"), ValueError,
         r"re:--compare .*text\.json is not JSON \(Expecting value at line 1, column 1\)",
         shown="--compare text.json is not JSON (Expecting value at line 1, column 1)", needs_tmp=True),
    Case("baseline that is JSON but not pytest-benchmark's", "cfn bench suite --compare other.json",
         _suite("--compare", "{tmp}/other.json"), ValueError,
         r"re:--compare .*other\.json is not a pytest-benchmark result \(no 'benchmarks' list\); store one with "
         r"cfn bench suite --out FILE",
         shown="--compare other.json is not a pytest-benchmark result (no 'benchmarks' list); store one with cfn "
               "bench suite --out FILE", needs_tmp=True),
    Case("baseline timed with another timer", "cfn bench suite --timer cpu --compare base.json",
         _suite("--timer", "cpu", "--compare", "{tmp}/base.json"), ValueError,
         r"re:the baseline .*base\.json was timed with perf_counter, this run with time\.process_time: pass "
         r"--timer wall",
         shown="the baseline base.json was timed with perf_counter, this run with time.process_time: pass --timer wall",
         needs_tmp=True),
    Case("benchmark selection that matches no case", "cfn bench suite --smoke -k no_such_case",
         _suite("--smoke", "-k", "no_such_case"), ValueError, "-k 'no_such_case' selects none of the suite's cases",
         needs_tmp=True),
    # ------------------------------------------------------------------------- cfn bench suite (issue 21): end
]


# ---------------------------------------------------------------- cfn tune (checked before Ray starts)
def _tune(*argv: str):
    """``cfn tune`` on a small rating file in the test's folder, beside a text file ``notes.txt`` (``{tmp}`` in
    ``argv`` is that folder)."""
    def run(tmp):
        from cfn_fast import cli
        lines = "".join(f"{u},{i},{1 + (u * i) % 5}\n" for u in range(30) for i in range(20) if (u + i) % 3)
        (tmp / "r.csv").write_text("user,item,rating\n" + lines)
        (tmp / "notes.txt").write_text("mine")
        return cli.run(["tune", "--ratings", f"{tmp}/r.csv", "--out", f"{tmp}/hyperparams_r.json", "--quiet",
                        *(a.format(tmp=tmp) for a in argv)])
    return run


def _usage_error():
    from cfn_fast.cli.errors import UsageError
    return UsageError


CASES += [
    Case("tune: hidden width 0", "cfn tune --ratings r.csv --out h.json --hidden 0", _tune("--hidden", "0"),
         _usage_error(), "argument --hidden: must be an integer in [1, 2147483647], got 0 (see `cfn tune --help`)",
         needs_tmp=True),
    Case("tune: negative batch size", "cfn tune --ratings r.csv --out h.json --batch-size -3",
         _tune("--batch-size", "-3"), _usage_error(),
         "argument --batch-size: must be an integer in [1, 2147483647], got -3 (see `cfn tune --help`)",
         needs_tmp=True),
    Case("tune: test ratio outside (0, 1)", "cfn tune --ratings r.csv --out h.json --test-ratio 1.5",
         _tune("--test-ratio", "1.5"), ValueError, "--test-ratio must be a number in (0, 1), got 1.5", needs_tmp=True),
    Case("tune: more CPUs per trial than the embedded Ray has",
         "cfn tune --ratings r.csv --out h.json --num-cpus 1 --cpus-per-trial 2",
         _tune("--num-cpus", "1", "--cpus-per-trial", "2"), ValueError,
         "--cpus-per-trial 2 exceeds the CPUs of the embedded Ray (--num-cpus 1): no trial could start",
         needs_tmp=True),
    Case("tune: malformed cluster address", "cfn tune --ratings r.csv --out h.json --address head-node",
         _tune("--address", "head-node"), ValueError,
         "--address must be 'auto', HOST:PORT or ray://HOST:PORT, got 'head-node'", needs_tmp=True),
    Case("tune: cluster address where nothing answers", "cfn tune --ratings r.csv --out h.json --address 127.0.0.1:1",
         _tune("--address", "127.0.0.1:1"), ConnectionError,
         "--address 127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1 (Connection refused); start one there (ray "
         "start --head --port 1) or leave --address out to start Ray inside this process", needs_tmp=True),
    Case("tune: result file in a folder that does not exist", "cfn tune --ratings r.csv --out missing/h.json",
         _tune("--out", "{tmp}/missing/h.json"), FileNotFoundError,
         r"re:--out (.*/)?missing/h\.json: folder (.*/)?missing does not exist",
         shown="--out missing/h.json: folder missing does not exist", needs_tmp=True),
    Case("tune: result file that is the rating file", "cfn tune --ratings r.csv --out r.csv",
         _tune("--out", "{tmp}/r.csv"), ValueError,
         r"re:--out (.*/)?r\.csv is the input given by --ratings \((.*/)?r\.csv\); writing it would destroy the "
         r"input: "
         r"choose another output path",
         shown="--out r.csv is the input given by --ratings (r.csv); writing it would destroy the input: choose "
               "another output path", needs_tmp=True),
    Case("tune: storage that is a file", "cfn tune --ratings r.csv --out h.json --storage notes.txt",
         _tune("--storage", "{tmp}/notes.txt"), NotADirectoryError,
         r"re:--storage (.*/)?notes\.txt is a file, not a folder",
         shown="--storage notes.txt is a file, not a folder", needs_tmp=True),
]
