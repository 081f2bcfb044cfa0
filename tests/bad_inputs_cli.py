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
