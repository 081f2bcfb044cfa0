"""Child process of tests/test_model_file_fuzz.py: many mutated model files, each loaded and used, in one process.

A seeded mutator edits the entries of tiny saved models (values, dtypes, shapes, dropped or duplicated entries,
out-of-range and negative indices, non-monotonic ``input_indptr``, NaN / inf, reversed scales, bad kinds and
strings, truncated arrays, edited settings), re-hashes each file so that it passes the checksum (a few cases
damage the bytes instead), then loads it and, when that works, predicts, recommends, encodes and folds in.

Before each case it prints ``case <id> <what>`` and flushes, so the parent names the case that killed it.  Every
case must work or raise a clean exception (``ModelFileError``, or ``ValueError`` / ``KeyError`` / ``IndexError`` /
``TypeError`` with a one-line message); anything else prints ``bad <id> <type>: <message>``.  The last line is
``summary <json>``.  Arguments: a scratch folder, the seed, the number of random cases.
"""
from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from model_files import config_of, read_arrays, tiny_models, write_rehashed  # tests/model_files.py

from cfn_fast import CFN, available_backends
from cfn_fast.fitted.persistence import ModelFileError

CLEAN = (ValueError, KeyError, IndexError, TypeError)
BACKENDS = [b for b in ("cpu", "numpy") if b in available_backends()]
INDEX_ENTRIES = ("input_indices", "input_indptr", "train_user", "train_item", "input_shape", "pre_sample_count")
INT_VALUES = (-1, -2, 0, 1, 19, 20, 29, 30, 31, 10**6, 2**31 - 1, -2**31, 2**40)
FLOAT_VALUES = (np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 5.0, -5.0, 1e38, -1e38, 1e-40, 0.5, 7.0)
STRINGS = ("", "item", "user", "both", "auto", "bias", "sample", "x" * 300, "\u00e9\u00e8", "0")
DTYPES = ("float64", "float16", "float32", "int64", "int32", "int8", "uint64", "uint8", "bool", "<U4")
JSON_VALUES = (None, -1, 0, 1, 2, 3, 10**12, -10**12, 1.5, float("nan"), float("inf"), "foo", "item", "user",
               "auto", "bias", [], {}, [5, 1], [1, 5], [1], True, False, "numpy", "cuda")
CONFIG_FIELDS = ("kind", "n_layers", "has_side", "scale", "epochs_trained", "best_epoch", "selection", "history",
                 "backend_trained", "resolved", "params")
PARAM_FIELDS = ("kind", "hidden", "epochs", "centring", "alpha", "beta", "mask_ratio", "lr", "lr_decay",
                "weight_decay", "batch_size", "backend", "use_side_info", "seed", "verbose", "profile", "depth")


# ----------------------------------------------------------------------------- mutations of the entries
def _pick(rng: np.random.Generator, values: tuple | list) -> Any:
    return values[int(rng.integers(len(values)))]


def _entry_name(rng: np.random.Generator, arrays: dict[str, np.ndarray]) -> str:
    if rng.random() < 0.4:
        present = [name for name in INDEX_ENTRIES if name in arrays]
        if present:
            return _pick(rng, present)
    return _pick(rng, sorted(name for name in arrays if name != "checksum"))


def set_element(rng, arrays):
    name = _entry_name(rng, arrays)
    value = arrays[name].copy()
    if value.size == 0:
        return f"{name}: empty, left as is"
    flat = value.reshape(-1)
    at = int(rng.integers(flat.size))
    kind = value.dtype.kind
    new = _pick(rng, INT_VALUES) if kind in "iub" else _pick(rng, FLOAT_VALUES) if kind == "f" else _pick(rng, STRINGS)
    try:
        flat[at] = new
    except (OverflowError, ValueError):
        flat[at] = 0
    arrays[name] = value
    return f"{name}[{at}] = {new!r}"


def change_dtype(rng, arrays):
    name, dtype = _entry_name(rng, arrays), _pick(rng, DTYPES)
    try:
        arrays[name] = arrays[name].astype(dtype)
    except (ValueError, TypeError, OverflowError):
        arrays[name] = np.zeros(arrays[name].shape, dtype=dtype)
    return f"{name} as {dtype}"


def change_shape(rng, arrays):
    name = _entry_name(rng, arrays)
    value = arrays[name]
    how = _pick(rng, ("drop last", "drop first", "repeat last", "empty", "add axis", "flatten", "transpose",
                      "scalar", "double"))
    if how == "drop last":
        value = value[:-1]
    elif how == "drop first":
        value = value[1:]
    elif how == "repeat last":
        value = np.concatenate([value, value[-1:]]) if value.ndim else value
    elif how == "empty":
        value = value[:0] if value.ndim else value.reshape(1)[:0]
    elif how == "add axis":
        value = value[None]
    elif how == "flatten":
        value = value.reshape(-1)
    elif how == "transpose":
        value = value.T
    elif how == "scalar":
        value = value.reshape(-1)[0] if value.size else np.array(0)
    else:
        value = np.concatenate([value, value]) if value.ndim else value
    arrays[name] = np.ascontiguousarray(value)
    return f"{name}: {how} -> shape {np.shape(value)}"


def reorder(rng, arrays):
    name = _entry_name(rng, arrays)
    value = arrays[name].copy()
    if value.ndim == 0 or len(value) < 2:
        return f"{name}: too short to reorder"
    how = _pick(rng, ("swap", "reverse", "shuffle"))
    if how == "swap":
        i, j = (int(k) for k in rng.choice(len(value), 2, replace=False))
        value[[i, j]] = value[[j, i]]
    elif how == "reverse":
        value = value[::-1].copy()
    else:
        rng.shuffle(value)
    arrays[name] = value
    return f"{name}: {how}"


def drop_or_copy_entry(rng, arrays):
    name = _entry_name(rng, arrays)
    how = _pick(rng, ("drop", "copy to unknown", "copy to next layer", "replace by another"))
    if how == "drop":
        del arrays[name]
    elif how == "copy to unknown":
        arrays[name + "_copy"] = arrays[name]
    elif how == "copy to next layer":
        layers = sorted(n for n in arrays if n.startswith("layer"))
        arrays[f"layer{len(layers)}_weight"] = arrays[_pick(rng, layers)]
    else:
        arrays[name] = arrays[_entry_name(rng, arrays)]
    return f"{name}: {how}"


def break_indptr(rng, arrays):
    indptr = arrays["input_indptr"].astype(np.int64)
    how = _pick(rng, ("decrease", "start", "end", "overflow"))
    if how == "decrease":
        at = int(rng.integers(1, len(indptr) - 1))
        indptr[at] = indptr[at + 1] + int(rng.integers(1, 50))
    elif how == "start":
        indptr[0] = _pick(rng, (-5, 1, 3))
    elif how == "end":
        indptr[-1] += _pick(rng, (-1, 1, 1000))
    else:
        indptr[len(indptr) // 2] = 2**40
    arrays["input_indptr"] = indptr.astype(arrays["input_indptr"].dtype if how != "overflow" else np.int64)
    return f"input_indptr: {how}"


def swap_scale(rng, arrays):
    how = _pick(rng, ("reverse pre_scalars", "equal pre_scalars", "NaN global mean", "reverse config scale",
                      "reverse both"))
    scalars = arrays["pre_scalars"].copy()
    if how in ("reverse pre_scalars", "reverse both"):
        scalars[:2] = scalars[1::-1].copy()
    elif how == "equal pre_scalars":
        scalars[1] = scalars[0]
    elif how == "NaN global mean":
        scalars[2] = np.nan
    arrays["pre_scalars"] = scalars
    if how in ("reverse config scale", "reverse both"):
        return how + _edit_config(arrays, lambda c: c.update(scale=list(reversed(c.get("scale", [1, 5])))))
    return how


# ----------------------------------------------------------------------------- mutations of the settings
def _edit_config(arrays: dict[str, np.ndarray], change: Callable[[dict], None]) -> str:
    """Apply ``change`` to the settings; ``""``, or a note when an earlier mutation left them unreadable."""
    try:
        config = config_of(arrays)
        change(config)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
        return " (config unreadable: left as is)"
    arrays["config"] = np.array([json.dumps(config, sort_keys=True)])
    return ""


def set_config_field(rng, arrays):
    field, value = _pick(rng, CONFIG_FIELDS), _pick(rng, JSON_VALUES)
    return f"config.{field} = {value!r}" + _edit_config(arrays, lambda c: c.update({field: value}))


def set_param(rng, arrays):
    field, value = _pick(rng, PARAM_FIELDS), _pick(rng, JSON_VALUES + ([4], [4, 4], [0], ["4"]))
    return f"config.params.{field} = {value!r}" + _edit_config(arrays, lambda c: c["params"].update({field: value}))


def edit_history(rng, arrays):
    field, value = _pick(rng, ("epoch", "lr", "train_loss", "seconds", "validation_rmse", "extra", "other")), \
        _pick(rng, JSON_VALUES)
    how = _pick(rng, ("set", "delete", "append", "not a dict"))

    def change(config):
        history = config["history"]
        if how == "append":
            history.append(dict(history[-1]) if history else {"epoch": 1})
        elif how == "not a dict":
            history.append(value)
        elif history and how == "delete":
            history[0].pop(field, None)
        elif history:
            history[0][field] = value
    return f"history: {how} {field} {value!r}" + _edit_config(arrays, change)


def drop_config_field(rng, arrays):
    field = _pick(rng, CONFIG_FIELDS)
    return f"config.{field} deleted" + _edit_config(arrays, lambda c: c.pop(field, None))


def raw_config(rng, arrays):
    text = str(arrays["config"][0])
    how = _pick(rng, ("truncate", "not json", "list", "number", "two strings", "int dtype", "deep nesting"))
    arrays["config"] = {"truncate": np.array([text[: len(text) // 2]]), "not json": np.array(["{kind: item"]),
                        "list": np.array(["[1, 2, 3]"]), "number": np.array(["42"]),
                        "two strings": np.array([text, text]), "int dtype": np.array([1]),
                        "deep nesting": np.array(["[" * 100000 + "]" * 100000])}[how]
    return f"config: {how}"


def version_or_format(rng, arrays):
    how = _pick(rng, ("version 1", "version 2", "version 0", "format name"))
    if how == "format name":
        arrays["cfn_format"] = np.array(["other-model"])
    else:
        arrays["cfn_version"] = np.array([int(how[-1])])
    return how


MUTATIONS = (set_element, set_element, set_element, change_dtype, change_shape, change_shape, reorder,
             drop_or_copy_entry, break_indptr, swap_scale, set_config_field, set_config_field, set_param,
             edit_history, drop_config_field, raw_config, version_or_format)


# ----------------------------------------------------------------------------- the cases
def targeted(bases: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, str, Callable]]:
    """The edits of issue 21 on every base model: one index out of range in each index entry, a decreasing
    ``input_indptr``, reversed scales, an unknown kind, duplicate ids."""
    cases = []
    for base in bases:
        for name in ("input_indices", "train_user", "train_item"):
            for value in (-1, 10**6, 2**31 - 1):
                cases.append((base, f"{name}[3] = {value}", _setter(name, 3, value)))
        cases.append((base, "decreasing input_indptr", _setter("input_indptr", 2, 10**5)))
        cases.append((base, "indptr shifted", lambda a: a.update(input_indptr=a["input_indptr"] + 1)))
        cases.append((base, "reversed pre_scalars", lambda a: a.update(pre_scalars=a["pre_scalars"][[1, 0, 2]])))
        cases.append((base, "unknown kind", lambda a: _edit_config(a, lambda c: c.update(kind="both"))))
        cases.append((base, "duplicate user ids", _setter("user_ids", 1, 0)))
        cases.append((base, "duplicate item ids", _setter("item_ids", 2, 1)))
    return cases


def _setter(name: str, at: int, value: Any) -> Callable:
    def edit(arrays):
        arrays[name][at] = value
    return edit


def random_edit(rng: np.random.Generator) -> tuple[list[str], Callable]:
    chosen = [_pick(rng, MUTATIONS) for _ in range(1 + int(rng.integers(3)))]
    notes: list[str] = []

    def edit(arrays):
        for mutate in chosen:
            try:
                notes.append(mutate(rng, arrays))
            except (KeyError, IndexError, ValueError, TypeError) as exc:  # an earlier edit left nothing to edit
                notes.append(f"{mutate.__name__}: skipped ({type(exc).__name__})")
    return notes, edit


def exercise(path: Path, backend: str) -> str:
    """Load ``path`` and use it every way the kind allows; ``"refused"`` or ``"used"``."""
    try:
        model = CFN.load(path, backend=backend)
    except ModelFileError:
        return "refused"
    except CLEAN as exc:  # CFN.load should say ModelFileError for every bad file
        return f"load raised {type(exc).__name__}: {exc}"
    train = model.train_
    model.predict(train.user_ids[train.user[:5]], train.item_ids[train.item[:5]])
    model.recommend(train.user_ids[0], n=3, min_support=0)
    model.recommend_batch(train.user_ids[:3], n=2)
    model.encode()
    other_ids = train.item_ids if model.kind_ == "user" else train.user_ids
    side = model.side_
    fold = model.fold_in(other_ids[:3], [train.scale[1]] * 3, None if side is None else np.zeros(side.shape[1]))
    fold.predict(other_ids[:2])
    fold.recommend(2, min_support=0)
    return "used"


def run_case(case_id: str, path: Path, backend: str, outcomes: Counter) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow warnings on absurd values are not failures
            outcome = exercise(path, backend)
        if outcome.startswith("load raised"):
            print(f"bad {case_id} {outcome}", flush=True)
            outcome = "load raised"
        outcomes[outcome] += 1
    except CLEAN as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if not message or "\n" in str(message):
            print(f"bad {case_id} {type(exc).__name__} without a one-line message: {message!r}", flush=True)
        outcomes[f"used, then {type(exc).__name__}"] += 1
    except Exception as exc:  # noqa: BLE001 - what the test looks for: any error that is not a clean one
        print(f"bad {case_id} {type(exc).__name__}: {str(exc)[:300]!r}", flush=True)
        outcomes["bad"] += 1


def main() -> None:
    folder, seed, n_random = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sources = tiny_models(folder, BACKENDS[0])
    bases = {name: read_arrays(path) for name, path in sources.items()}
    rng = np.random.default_rng(seed)
    target, outcomes = folder / "case.npz", Counter()
    cases = targeted(bases)
    for k in range(n_random):
        notes, edit = random_edit(rng)
        cases.append((_pick(rng, sorted(bases)), notes, edit))
    for k, (base, what, edit) in enumerate(cases):
        arrays = {name: value.copy() for name, value in bases[base].items()}
        edit(arrays)
        what = what if isinstance(what, str) else "; ".join(what)
        backend = BACKENDS[k % len(BACKENDS)]
        if k % 50 == 49:  # now and then damage the bytes instead, without re-hashing
            data = bytearray(write_rehashed(target, arrays).read_bytes())
            data[int(rng.integers(len(data)))] ^= 0xFF
            target.write_bytes(bytes(data[: len(data) - int(rng.integers(2)) * len(data) // 3]))
            what = f"{what}; bytes damaged"
        else:
            write_rehashed(target, arrays)
        case_id = f"{k} ({base}, {backend}): {what}"
        print(f"case {case_id}", flush=True)
        run_case(case_id, target, backend, outcomes)
    print("summary " + json.dumps({"cases": len(cases), **outcomes}), flush=True)


if __name__ == "__main__":
    main()
