"""Bad-input rows for model files (untrusted input); tests/test_bad_input.py runs them and renders the table.

Each file is a tiny saved U-CFN (30 users x 20 items) edited and re-hashed (tests/model_files.py), so that the
checksum passes and only ``CFN.load``'s content checks refuse it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bad_input_case import Case  # tests/bad_input_case.py
from model_files import TINY, tampered, with_config  # tests/model_files.py

from cfn_fast import CFN
from cfn_fast.fitted.persistence import ModelFileError


def _edited(name: str, edit: Callable[[dict[str, np.ndarray]], Any]) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        saved = CFN("user", (4,), 1, backend="numpy", seed=0).fit(TINY).save(tmp / "saved.npz")
        return CFN.load(tampered(saved, tmp / name, edit))
    return run


def _set(entry: str, at: int, value: Any) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[entry][at] = value
    return edit


def _reversed_scale(arrays: dict[str, np.ndarray]) -> None:
    arrays["pre_scalars"][:2] = [5.0, 1.0]


def _row(what: str, name: str, edit: Callable, detail: str) -> Case:
    shown = f"{name} is not a valid cfn_fast model: {detail}"
    return Case(what, f'CFN.load("{name}")', _edited(name, edit), ModelFileError, "re:.*" + re.escape(shown),
                shown=shown, needs_tmp=True)


CASES: list[Case] = [
    _row("model file with an index out of range (re-hashed)", "index.npz", _set("input_indices", 3, 10**6),
         "input_indices must lie in [0, 20), found [1000000]"),
    _row("model file with a decreasing input_indptr (re-hashed)", "indptr.npz", _set("input_indptr", 2, 10**5),
         "input_indptr must never decrease, drops at position 3"),
    _row("unknown kind in a model file", "kind.npz",
         lambda arrays: with_config(arrays, lambda config: config.update(kind="both")),
         "config.kind must be 'item' or 'user', got 'both'"),
    _row("duplicate ids in a model file", "ids.npz", _set("user_ids", 1, 0),
         "user_ids must be sorted and unique, found a duplicate id at position 1 (0 then 0)"),
    _row("reversed scale in a model file", "scale.npz", _reversed_scale,
         "pre_scalars must start with the rating scale [1.0, 5.0] (low, high), got [5.0, 1.0]"),
    _row("model file whose layers do not match its data (re-hashed)", "layers.npz",
         lambda arrays: arrays.update(layer1_weight=arrays["layer1_weight"][:-1].copy()),
         "layer1_weight must have shape (20, 4), got (19, 4)"),
]
