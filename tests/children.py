"""The environment of the Python processes the tests start: they import the same cfn_fast as the tests.

Against the installed wheel that is site-packages; the checkout must not come first (its ``cfn_fast`` has no
compiled kernels), so children never get the repository root on their path nor run with it as their directory.
``tests/`` is on the path for the test helpers (the CUDA emulator, the child scripts).
"""
from __future__ import annotations

import os
from pathlib import Path

import cfn_fast

TESTS = Path(__file__).resolve().parent
PACKAGE_PARENT = Path(cfn_fast.__file__).resolve().parents[1]   # site-packages, or the source tree under test


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with the package under test and ``tests/`` first on ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ)
    paths = [str(PACKAGE_PARENT), str(TESTS)] + [p for p in [env.get("PYTHONPATH")] if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env
