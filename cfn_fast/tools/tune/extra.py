"""Lazy access to Ray Tune and Optuna, with an error that names the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TuneExtraMissing", "require"]

INSTALL_HINT = 'pip install "cfn_fast[tune]"  (ray[tune] and optuna)'


class TuneExtraMissing(RuntimeError):
    """Ray Tune or Optuna is not installed: the ``tune`` extra is needed."""


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"ray.tune"``), or raise :class:`TuneExtraMissing` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TuneExtraMissing(f"cfn tune needs {module.split('.')[0]} ({exc}); install the extra: "
                               f"{INSTALL_HINT}") from None
