"""Shared fixtures: the training backends, each skipped with its reason when it cannot run here."""
from __future__ import annotations

import pytest

from cfn_fast.backends import BACKENDS, BackendUnavailable, resolve_backend


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every backend name (numpy, cpu, cuda); an unavailable one is skipped with the reason why."""
    try:
        resolve_backend(request.param)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    return request.param
