"""Shared fixtures: the training backends, each skipped with its reason when it cannot run here."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

import cfn_fast
from cfn_fast.backends import BACKENDS, BackendUnavailable, available_backends, resolve_backend

# CI and README's test command run this suite against the installed wheel, so a file missing from the wheel fails
# here; CFN_FAST_TEST_SOURCE=1 lets a developer run it against a source tree (editable install or PYTHONPATH).
TESTING_SOURCE = os.environ.get("CFN_FAST_TEST_SOURCE") == "1"


def _installed_location_problem() -> str | None:
    where = Path(cfn_fast.__file__).resolve()
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if not any(where.is_relative_to(folder) for folder in site):
        return (f"cfn_fast was imported from {where.parent}, not from this environment's site-packages "
                f"({', '.join(sorted(map(str, site)))}): the tests check the installed wheel (README's test "
                "command); set CFN_FAST_TEST_SOURCE=1 to test a source tree")
    if "cpu" not in available_backends():
        return "the installed cfn_fast has no compiled cpu kernels (cfn_fast.kernels.cfn_cpu): the wheel is incomplete"
    return None


def pytest_configure(config) -> None:
    problem = None if TESTING_SOURCE else _installed_location_problem()
    if problem:
        raise pytest.UsageError(problem)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every backend name (numpy, cpu, cuda); an unavailable one is skipped with the reason why."""
    try:
        resolve_backend(request.param)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    return request.param


# ----------------------------------------------------------------------------- Ray (cfn tune's tests)
@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray (2 CPUs) for every search of the session: ``tune_cfn`` joins a running Ray, and a child
    ``cfn tune`` joins it with ``--address`` (its GCS address: ``ray_cluster.get_runtime_context().gcs_address``).
    Skipped without the ``tune`` extra."""
    ray = pytest.importorskip("ray", reason="the 'tune' extra (ray[tune]) is not installed")
    pytest.importorskip("ray.tune", reason="the 'tune' extra (ray[tune]) is not installed")
    pytest.importorskip("optuna", reason="the 'tune' extra (optuna) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             _system_config={"worker_niceness": 0})
    yield ray
    ray.shutdown()
