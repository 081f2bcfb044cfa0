"""Checks of a search's arguments, paths and cluster address, all made before Ray starts (a bad value fails in a
second, not after Ray's start-up or inside a trial).

Every check names the argument through ``label`` (the parameter's name for :func:`tune_cfn`, the option for ``cfn
tune``).  Nothing here imports Ray or Optuna.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cfn_fast.settings import is_int, is_real, resolve
from cfn_fast.sharding.cluster import PROBE_SECONDS, probe_address
from cfn_fast.tools.paper.search import load_store

from .extra import require_ray_client

__all__ = ["PROBE_SECONDS", "check_address", "check_arguments", "check_paths", "existing_store", "partial_path",
           "plot_path"]

Label = Callable[[str], str]

_KINDS = ("item", "user")
_ALGORITHMS = ("random", "nsga2", "pbt")
_BACKENDS = ("auto", "numpy", "cpu", "cuda")
_MODEL_SETTINGS = ("hidden", "epochs", "batch_size", "backend", "seed")


def _same(name: str) -> str:
    return name


def check_arguments(*, kind: str, trials: Any, algo: str, epochs: Any, hidden: Any, batch_size: Any, backend: Any,
                    seed: Any, search_seed: Any, split_seed: Any, test_ratio: Any, validation_ratio: Any,
                    num_cpus: Any, cpus_per_trial: Any, gpus_per_trial: Any, population: Any, pbt_interval: Any,
                    max_failures: Any, address: str | None, label: Label = _same) -> tuple[str, ...]:
    """``ValueError`` naming the first bad argument; else the kinds searched."""
    if kind not in (*_KINDS, "auto"):
        raise ValueError(f"{label('kind')} must be 'item', 'user' or 'auto', got {kind!r}")
    if algo not in _ALGORITHMS:
        raise ValueError(f"{label('algo')} must be one of {', '.join(_ALGORITHMS)}, got {algo!r}")
    for name, value, low in (("trials", trials, 1), ("epochs", epochs, 1), ("pbt_interval", pbt_interval, 1),
                             ("max_failures", max_failures, 0), ("split_seed", split_seed, 0),
                             ("search_seed", search_seed, 0)):
        _integer_at_least(name, value, low, label)
    if num_cpus is not None:
        _integer_at_least("num_cpus", num_cpus, 1, label)
    if algo == "pbt" and trials < 2:
        raise ValueError(f"pbt needs a population: {label('trials')} must be >= 2")
    if population is not None:
        _integer_at_least("population", population, 2, label)
    kinds = _KINDS if kind == "auto" else (kind,)
    _check_model_settings(kinds, hidden, epochs, batch_size, backend, seed, label)
    for name, value in (("test_ratio", test_ratio), ("validation_ratio", validation_ratio)):
        if not (is_real(value) and 0 < value < 1):
            raise ValueError(f"{label(name)} must be a number in (0, 1), got {value!r}")
    _check_resources(num_cpus, cpus_per_trial, gpus_per_trial, address, label)
    return kinds


def _integer_at_least(name: str, value: Any, low: int, label: Label) -> None:
    if not (is_int(value) and value >= low):
        raise ValueError(f"{label(name)} must be an integer >= {low}, got {value!r}")


def _check_model_settings(kinds, hidden, epochs, batch_size, backend, seed, label: Label) -> None:
    """The fixed settings every trial trains with, checked as CFN checks them (cfn_fast.settings)."""
    if backend not in _BACKENDS:
        raise ValueError(f"{label('backend')} must be one of {', '.join(map(repr, _BACKENDS))}, got {backend!r}")
    try:
        for kind in kinds:
            resolve({"kind": kind, "hidden": hidden, "epochs": epochs, "batch_size": batch_size,
                     "backend": backend, "seed": seed, "use_side_info": False}, kind=kind)
    except ValueError as exc:
        text = str(exc)
        for name in _MODEL_SETTINGS:        # the settings' own message, naming the argument as the caller knows it
            text = re.sub(rf"(?<![\w-]){name}(?!\w)", label(name), text)
        raise ValueError(text) from None


def _check_resources(num_cpus, cpus, gpus, address, label: Label) -> None:
    if not (is_real(cpus) and math.isfinite(cpus) and cpus > 0):
        raise ValueError(f"{label('cpus_per_trial')} must be a finite number > 0, got {cpus!r}")
    if not (is_real(gpus) and math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
        raise ValueError(f"{label('gpus_per_trial')} must be a fraction in [0, 1] or a whole number of GPUs, "
                         f"got {gpus!r}")
    if address is None:                      # the embedded Ray: a trial asking for more CPUs would wait forever
        available = num_cpus if num_cpus is not None else os.cpu_count() or 1
        if cpus > available:
            where = f"{label('num_cpus')} {num_cpus}" if num_cpus is not None else f"the {available} CPUs here"
            raise ValueError(f"{label('cpus_per_trial')} {cpus:g} exceeds the CPUs of the embedded Ray ({where}): "
                             f"no trial could start")


# ----------------------------------------------------------------------------- paths
def plot_path(out: Path) -> Path:
    """The progress figure written beside ``out``."""
    return out.with_name(out.stem + "_progress.png")


def partial_path(out: Path) -> Path:
    """Where an interrupted search leaves the trials that finished (``out`` itself is left unchanged)."""
    return out.with_name(out.stem + ".partial.json")


def existing_store(out: Path, label: Label = _same) -> dict[str, Any] | None:
    """An existing result at ``out`` is updated, never clobbered: its other methods are kept."""
    if not out.exists():
        return None
    try:
        return load_store(out)
    except ValueError as exc:
        raise ValueError(f"{label('out')} {out} exists and is not a hyperparams JSON ({exc}); choose another "
                         f"{label('out')}") from None


def check_paths(out: Path, storage: str | os.PathLike | None, label: Label = _same) -> None:
    """``out`` a file in a writable folder; ``storage`` (when it is a local path) a folder, or one that can be
    made in a writable folder.  Errors name the paths as given."""
    if out.is_dir():
        raise IsADirectoryError(f"{label('out')} {out} is a folder; give a JSON file name, e.g. "
                                f"{out / 'hyperparams_mydata.json'}")
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{label('out')} {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{label('out')} {out}: folder {folder} is not writable")
    existing_store(out, label)
    if storage is None or "://" in str(storage):       # a URI (s3://, gs://...) is Ray's to reach
        return
    place = Path(storage)
    if place.exists() and not place.is_dir():
        raise NotADirectoryError(f"{label('storage')} {storage} is a file, not a folder")
    ancestor = next((p for p in (place, *place.absolute().parents) if p.exists()), Path("/"))
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{label('storage')} {storage}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{label('storage')} {storage}: folder {ancestor} is not writable")


# ----------------------------------------------------------------------------- the cluster's address
def check_address(address: str | None, label: Label = _same, timeout: float = PROBE_SECONDS) -> None:
    """:func:`cfn_fast.sharding.cluster.probe_address`, a missing Ray Client naming the ``tune`` extra."""
    probe_address(address, label, timeout, client_check=require_ray_client)
