"""pytest's entry to the benchmark suite: its hooks, options and fixtures live in :mod:`.plugin`
(an ordinary module the cases import from; a conftest is not meant to be imported)."""
from cfn_fast.tools.benchsuite.plugin import (
    backend,
    pytest_addoption,
    pytest_benchmark_update_machine_info,
    pytest_collection_modifyitems,
    pytest_collectreport,
    pytest_configure,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    quick,
    slow,
)

__all__ = ["backend", "pytest_addoption", "pytest_benchmark_update_machine_info", "pytest_collection_modifyitems",
           "pytest_collectreport", "pytest_configure", "pytest_runtest_logreport", "pytest_sessionfinish", "quick",
           "slow"]
