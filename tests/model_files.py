"""Model files as an attacker (or a careless script) edits them: read the entries, change them, write them back
with the SHA-256 recomputed the way the format documents it (cfn_fast/fitted/persistence.py), so the checksum
passes and only the content checks stand between the edit and the kernels.

Used by tests/test_model_file_validation.py, the fuzzing child tests/_model_file_fuzz_child.py and the bad-input
rows of tests/bad_inputs_model_files.py.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cfn_fast import CFN, StackedCFN, synthetic_ratings

#: ~30 users x 20 items: models train in milliseconds.
TINY = synthetic_ratings(30, 20, 240, seed=3)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every entry but ``checksum``, sorted by name: name, dtype, shape, then the bytes. Written from
    the documented rule, apart from cfn_fast's own code, as anyone re-hashing an edited file would."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{value.dtype.str}\0{value.shape}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def write_rehashed(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a model file whose checksum matches its (edited) content."""
    arrays = dict(arrays)
    arrays["checksum"] = np.array([checksum(arrays)])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def config_of(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return json.loads(str(arrays["config"][0]))


def with_config(arrays: dict[str, np.ndarray], edit: Callable[[dict[str, Any]], None]) -> dict[str, np.ndarray]:
    """A copy of ``arrays`` whose ``config`` JSON went through ``edit`` (which changes it in place)."""
    config = config_of(arrays)
    edit(config)
    return {**arrays, "config": np.array([json.dumps(config, sort_keys=True)])}


def tampered(source: str | Path, target: str | Path, edit: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    """``source`` with ``edit`` applied to a copy of its entries (it may change them in place or return new
    ones), re-hashed, written to ``target``."""
    arrays = {name: value.copy() for name, value in read_arrays(source).items()}
    changed = edit(arrays)
    return write_rehashed(target, arrays if changed is None else changed)


def fit_tiny_models(backend: str = "numpy") -> dict[str, Any]:
    """Tiny fitted models of every shape a file takes: I-CFN with side information, U-CFN with the bias centring
    (format 2), a plain U-CFN, a two-level StackedCFN, and kind="auto" (with its selection record)."""
    models = {
        "item_side": CFN("item", (4,), 1, backend=backend, seed=0),
        "user_bias": CFN("user", (4,), 1, backend=backend, centring="bias", seed=0),
        "user_plain": CFN("user", (4,), 1, backend=backend, use_side_info=False, seed=0),
        "stacked": StackedCFN("item", (4, 3), 1, backend=backend, pretrain={"epochs": 1}, seed=0),
        "auto": CFN("auto", (4,), 1, backend=backend, seed=0),
    }
    return {name: model.fit(TINY) for name, model in models.items()}


def tiny_models(folder: str | Path, backend: str = "numpy") -> dict[str, Path]:
    """:func:`fit_tiny_models` saved in ``folder``: name -> file."""
    return {name: model.save(Path(folder) / f"{name}.npz") for name, model in fit_tiny_models(backend).items()}
