"""Lazy access to Ray Tune and Optuna, with an error that names the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TuneExtraMissing", "require", "require_ray_client"]

INSTALL_HINT = 'pip install "cfn_fast[tune]"  (ray[tune,client] and optuna)'


class TuneExtraMissing(RuntimeError):
    """Ray Tune, Ray Client or Optuna is not installed: the ``tune`` extra is needed."""


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"ray.tune"``), or raise :class:`TuneExtraMissing` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TuneExtraMissing(f"cfn tune needs {module.split('.')[0]} ({exc}); install the extra: "
                               f"{INSTALL_HINT}") from None


def require_ray_client(what: str) -> None:
    """Ray Client (a ``ray://`` address) needs ``ray[client]``, whose package is grpcio (Ray itself checks that
    ``grpc`` imports; without it ``ray.init`` fails with a hint that names Ray's extra, not ours)."""
    try:
        importlib.import_module("grpc")
    except ImportError:
        raise TuneExtraMissing(f"{what} needs Ray Client, whose package grpcio (ray[client]) is not installed; "
                               f"install the extra: {INSTALL_HINT}") from None
