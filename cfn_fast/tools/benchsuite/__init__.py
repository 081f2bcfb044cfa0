"""The benchmark suite of cfn_fast (pytest-benchmark), installed with the package, and ``cfn bench suite``.

* :mod:`.runner` runs the suite in a child pytest against this very cfn_fast, checks inputs and outputs
  first, and reports what ran (``cfn bench suite``);
* :mod:`.report` prints the table of cases and compares a run with a baseline;
* ``conftest.py`` and :mod:`.plugin`: the suite's pytest options, hooks, fixtures and machine info;
* :mod:`.stored`: stored baselines keyed by the machine that measured them (``--compare auto``,
  ``--save-baseline``), kept in ``baselines/`` beside this file (package data);
* :mod:`.workloads`: data, models and byte counts of the cases;
* ``test_micro.py`` (one stage of a step, or of inference) and ``test_macro.py`` (whole training runs):
  the cases, run only by pytest (importing this package imports neither pytest nor them).

bench/README.md ("The benchmark suite") describes the cases, the comparison rule and the baselines.
"""
from .report import DEFAULT_THRESHOLD, TIMERS, case_rows, compare, format_comparison, format_table, merge_min
from .runner import AUTO, BenchmarkRegression, check_baseline, check_out, require_extra, run_suite, suite_dir
from .stored import STORED_DIR, MachineKey, find_stored, key_of, this_key

__all__ = ["AUTO", "BenchmarkRegression", "DEFAULT_THRESHOLD", "MachineKey", "STORED_DIR", "TIMERS", "case_rows",
           "check_baseline", "check_out", "compare", "find_stored", "format_comparison", "format_table", "key_of",
           "merge_min", "require_extra", "run_suite", "suite_dir", "this_key"]
