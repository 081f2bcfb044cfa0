"""Random hyper-parameter search on a validation split, stored as JSON so a report can be rebuilt.

Protocol: the first Table 1 split (seed ``split_seed``) is made exactly as Table 1 makes it; a
validation part (``validation_ratio`` of its *training* ratings) is carved out; every trial trains
on the rest and is scored on the validation part at its final epoch.  The test part is never
read.  Trial 0 is the method's default configuration, then come its fixed candidates (the
authors' published configurations for CFN), the others are drawn from its search space by a
generator seeded with ``(search_seed, method name)``, so a search is reproducible.

The store, ``hyperparams_<dataset>.json``::

    {"dataset": "ml-1m", "format": 1, "protocol": {...},
     "methods": {"I-CFN": {"params": {...}, "validation_rmse": 0.84, "search_seed": 0, "trials": [...]}, ...}}
"""
from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cfn_fast.data.ratings import RatingSet
from cfn_fast.data.split import train_validation_test_split
from cfn_fast.fileio import atomic_write

from .methods import Method, sample_params

__all__ = ["FORMAT", "load_store", "save_store", "search_method", "store_path"]

FORMAT = 1


def store_path(folder: str | Path, dataset: str) -> Path:
    return Path(folder) / f"hyperparams_{dataset}.json"


def load_store(path: str | Path) -> dict[str, Any] | None:
    """The stored search of one data set, or None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        store = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(store, dict) or not isinstance(store.get("methods"), dict):
        raise ValueError(f"{path}: expected an object with a 'methods' object")  # noqa: TRY004 - a bad file
    for name, entry in store["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
            raise ValueError(f"{path}: method {name!r} has no 'params' object")  # noqa: TRY004 - a bad file
    return store


def save_store(path: str | Path, store: dict[str, Any]) -> Path:
    """Write atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as fh:  # umask / existing mode, temp clean-up
        json.dump(store, fh, indent=1, sort_keys=False, default=_plain)
        fh.write("\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def search_split(ratings: RatingSet, split_seed: int, test_ratio: float = 0.1,
                 validation_ratio: float = 0.1) -> tuple[RatingSet, RatingSet]:
    """(training part, validation part) carved from split ``split_seed``'s training set."""
    train, validation, _test = train_validation_test_split(ratings, test_ratio, validation_ratio, seed=split_seed)
    return train, validation


def search_method(method: Method, train: RatingSet, validation: RatingSet, *, trials: int, search_seed: int,
                  log: Callable[[str], None] = lambda s: None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Random search of ``method`` (``trials`` configurations, the first its defaults)."""
    rng = np.random.default_rng([int(search_seed), zlib.crc32(method.name.encode())])
    trials = max(1, round(int(trials) * method.trials_factor))
    if method.max_trials is not None:
        trials = min(trials, method.max_trials)
    fixed_candidates = [dict(method.defaults), *map(dict, method.candidates)]
    history: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    for trial in range(trials):
        if trial < len(fixed_candidates):
            params = fixed_candidates[trial]
        else:
            params = sample_params(method.space, rng)
            for _ in range(50):                      # small discrete spaces: do not repeat a configuration
                if params not in seen:
                    break
                params = sample_params(method.space, rng)
            else:
                break
        seen.append(params)
        if base:
            params = {**base, **params}
        start = time.perf_counter()
        try:
            model = method.make(params, 0)
            model.fit(train)
            score = float(model.score(validation))
            error = None
        except (FloatingPointError, ValueError, np.linalg.LinAlgError) as exc:   # diverged / invalid region
            score, error = math.inf, " ".join(str(exc).split())[:200]
        seconds = time.perf_counter() - start
        if not math.isfinite(score) and error is None:
            error = "non-finite RMSE"
        history.append({"params": params, "validation_rmse": score if math.isfinite(score) else None,
                        "seconds": round(seconds, 2), **({"error": error} if error else {})})
        log(f"  search {method.name} trial {trial + 1}/{trials}: "
            f"{'failed: ' + error if error else f'validation RMSE {score:.4f}'} ({seconds:.0f}s) {params}")
    scored = [h for h in history if h["validation_rmse"] is not None]
    if not scored:
        raise RuntimeError(f"every search trial of {method.name} failed; last error: {history[-1].get('error')}")
    best = min(scored, key=lambda h: h["validation_rmse"])
    return {"params": best["params"], "validation_rmse": best["validation_rmse"], "search_seed": int(search_seed),
            "n_trials": len(history), "fixed": method.fixed, "trials": history}
