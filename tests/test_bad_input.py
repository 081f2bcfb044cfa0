"""Every bad input gets a clear error (type and message) before any engine runs.

``CASES`` is the single source of ``docs/bad_inputs.md``: each case runs here and its row
must appear verbatim in the document (``python tests/test_bad_input.py`` prints the table).
A message written as ``re:<pattern>`` is matched as a regular expression (for parts that
depend on the machine); the document shows the example text given in ``shown``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from bad_input_case import Case, stored_as_given  # tests/bad_input_case.py
from bad_inputs_cli import CASES as CLI_CASES
from bad_inputs_engine_api import CASES as ENGINE_API_CASES
from bad_inputs_model_files import CASES as MODEL_FILE_CASES
from bad_inputs_model_files import KEPT_CASES
from bad_inputs_onnx import CASES as ONNX_CASES

import cfn_fast.engine as engine_module
import cfn_fast.model as model_module
from cfn_fast import (
    CFN,
    RatingSet,
    StackedCFN,
    TrainingDiverged,
    available_backends,
    load_ratings,
    synthetic_ratings,
    train_test_split,
)
from cfn_fast.backends import BackendUnavailable
from cfn_fast.backends.numpy_backend import NumpyEngine
from cfn_fast.cli.errors import UsageError
from cfn_fast.fitted.persistence import ModelFileError
from cfn_fast.model import DeviceOutOfMemory, FoldInError, ModelBusyError, NotFittedError
from cfn_fast.network import init_layers

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"

_TRAIN, _TEST = train_test_split(synthetic_ratings(300, 200, 6000, seed=0), 0.1, seed=0)
_CACHE: dict[str, object] = {}


def fitted(kind: str = "user") -> CFN:
    if kind not in _CACHE:
        _CACHE[kind] = CFN(kind, (8,), 1, backend="numpy").fit(_TRAIN)
    return _CACHE[kind]  # type: ignore[return-value]


def fit_with(**params) -> Callable[[], object]:
    return lambda: CFN("user", (8,), 1, backend="numpy").set_params(**params).fit(_TRAIN)


def from_arrays(user, item, rating, **kw) -> Callable[[], object]:
    return lambda: RatingSet.from_arrays(user, item, rating, **kw)


class OutOfMemoryError(Exception):
    """Stands in for cupy.cuda.memory.OutOfMemoryError (the wrapper matches the class name)."""


class _OomEngine(NumpyEngine):
    def train_epoch(self, epoch, lr):
        raise OutOfMemoryError("Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes).")


def _oom() -> object:
    saved = engine_module.engine_class
    engine_module.engine_class = lambda name: _OomEngine
    try:
        return CFN("user", (600,), 1, backend="numpy").fit(_TRAIN)
    finally:
        engine_module.engine_class = saved


def _cuda() -> object:
    if "cuda" in available_backends():
        pytest.skip("a CUDA GPU is present")
    return CFN("user", (8,), 1, backend="cuda").fit(_TRAIN)


def _hand_built() -> object:
    bad = RatingSet(_TRAIN.user, np.where(np.arange(_TRAIN.nnz) == 0, 250, _TRAIN.item).astype(np.int32),
                    _TRAIN.rating, _TRAIN.user_ids, _TRAIN.item_ids, _TRAIN.scale)
    return CFN("user", (8,), 1, backend="numpy").fit(bad)


def _file(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.npz"
    if kind == "missing":
        return path
    fitted("item").save(path)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:1000])
    elif kind in ("tampered", "version"):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if kind == "tampered":
            arrays["layer0_bias"] = arrays["layer0_bias"] * np.float32(2)
        else:
            arrays["cfn_version"] = np.array([9])
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif kind == "foreign":
        np.savez(path, user=np.arange(3), item=np.arange(3), rating=np.ones(3))
    return path


def _load(kind: str) -> Callable[[Path], object]:
    return lambda tmp: CFN.load(_file(tmp, kind))


def _busy(read: bool) -> object:
    """A second call on a model that another thread is training (held in a callback until released)."""
    import threading
    model = CFN("user", (8,), 1, backend="numpy")
    entered, release = threading.Event(), threading.Event()

    def hold(record) -> None:
        entered.set()
        release.wait(30)
    worker = threading.Thread(target=model.fit, args=(_TRAIN,), kwargs={"callbacks": (hold,)})
    worker.start()
    entered.wait(30)
    try:
        return model.predict([1], [1]) if read else model.fit(_TRAIN)
    finally:
        release.set()
        worker.join()


def _text_file(name: str, content: str) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        from cfn_fast import load_ratings
        path = tmp / name
        path.write_text(content)
        return load_ratings(path)
    return run


def _pandas_case(build: Callable[[object], object]) -> Callable[[], object]:
    def run() -> object:
        pd = pytest.importorskip("pandas")
        return build(pd)
    return run


def _fold_in_labels(pd) -> object:
    names = ("f0", "f1")
    train = _TRAIN.with_features(item_features=np.zeros((_TRAIN.n_items, 2)), item_feature_names=names)
    model = CFN("item", (4,), 1, backend="numpy").fit(train)
    return model.fold_in({1: 4.0}, features=pd.Series([1.0, 0.0], index=["f0", "genre"]))
def _cli(*argv: str) -> Callable[[Path], object]:
    """Run a ``cfn`` command in-process (``cli.run`` raises what ``cfn`` reports on one line).
    ``{model}``, ``{ratings}`` and ``{tmp}`` in ``argv`` become files in the test's folder: a
    U-CFN model with side information trained on ``_TRAIN``, and ``_TEST`` as an .npz."""
    def run(tmp: Path) -> object:
        from cfn_fast import cli
        fitted("user").save(tmp / "m.npz")
        np.savez(tmp / "r.npz", user=_TEST.user_ids[_TEST.user], item=_TEST.item_ids[_TEST.item],
                 rating=_TEST.rating)
        files = {"model": str(tmp / "m.npz"), "ratings": str(tmp / "r.npz"), "tmp": str(tmp)}
        return cli.run([a.format(**files) for a in argv])
    return run


def _eval_file(tmp: Path, change: str) -> str:
    """``_TEST`` saved as an .npz with its ratings x20 (``"scale"``) or one unknown user (``"user"``)."""
    rating = _TEST.rating * (20 if change == "scale" else 1)
    user = _TEST.user_ids[_TEST.user].copy()
    if change == "user":
        user[:3] = 999
    np.savez(tmp / f"{change}.npz", user=user, item=_TEST.item_ids[_TEST.item], rating=rating)
    return str(tmp / f"{change}.npz")


def _eval(change: str) -> Callable[[Path], object]:
    def run(tmp: Path) -> object:
        path = _eval_file(tmp, change)
        return _cli("eval", "--model", "{model}", "--ratings", path)(tmp)
    return run


def _without_matplotlib(tmp: Path) -> object:
    import importlib.util
    from unittest import mock
    real = importlib.util.find_spec
    with mock.patch("importlib.util.find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)):
        return _cli("bench", "paper", "--quick", "--data-dir", "{tmp}", "--out", "{tmp}/report", "--quiet")(tmp)


NAN = float("nan")
CORE_CASES: list[Case] = [
    # ---------------------------------------------------------------- ratings
    Case("NaN rating", "RatingSet.from_arrays([1, 2], [1, 2], [4.0, nan])",
         from_arrays([1, 2], [1, 2], [4.0, NAN]), ValueError,
         "ratings contain 1 NaN or infinite value(s), first at position 1"),
    Case("infinite rating", "RatingSet.from_arrays([1, 2], [1, 2], [inf, 3.0])",
         from_arrays([1, 2], [1, 2], [np.inf, 3.0]), ValueError,
         "ratings contain 1 NaN or infinite value(s), first at position 0"),
    Case("rating outside the declared scale", "RatingSet.from_arrays([1, 2], [1, 2], [4, 6], scale=(1, 5))",
         from_arrays([1, 2], [1, 2], [4, 6], scale=(1, 5)), ValueError,
         "1 rating(s) outside the scale [1, 5], e.g. 6 at position 1"),
    Case("invalid scale", "RatingSet.from_arrays([1], [1], [3], scale=(5, 1))",
         from_arrays([1], [1], [3], scale=(5, 1)), ValueError,
         "rating scale must be (low, high) with low < high, got (5, 1)"),
    Case("duplicate (user, item) pair (default policy `duplicates=\"error\"`)",
         "RatingSet.from_arrays([1, 1], [2, 2], [3, 4])",
         from_arrays([1, 1], [2, 2], [3, 4]), ValueError,
         "1 duplicate (user, item) pair(s), first (user 1, item 2) at positions 0 and 1; pass duplicates='last' or "
         "duplicates='mean' to merge them"),
    Case("unknown duplicate policy", "RatingSet.from_arrays([1, 1], [2, 2], [3, 4], duplicates=\"first\")",
         from_arrays([1, 1], [2, 2], [3, 4], duplicates="first"), ValueError,
         "duplicates must be 'error', 'last' or 'mean', got 'first'"),
    Case("empty data", "RatingSet.from_arrays([], [], [])", from_arrays([], [], []), ValueError,
         "no ratings: the rating set is empty"),
    Case("negative id", "RatingSet.from_arrays([-1, 2], [1, 2], [3, 4])",
         from_arrays([-1, 2], [1, 2], [3, 4]), ValueError, "user ids must be non-negative; found -1"),
    Case("non-integer id", "RatingSet.from_arrays([1.5, 2], [1, 2], [3, 4])",
         from_arrays([1.5, 2.0], [1, 2], [3, 4]), ValueError,
         "user ids must be integers (or strings); got non-integer values such as [1.5]"),
    Case("arrays of different lengths", "RatingSet.from_arrays([1, 2], [1], [3, 4])",
         from_arrays([1, 2], [1], [3, 4]), ValueError, "user, item and rating arrays differ in length: 2, 1, 2"),
    Case("hand-built RatingSet with an index out of range", "fit(RatingSet(user, item_with_250, ...))",
         _hand_built, ValueError, "train: item indices must lie in [0, 200), found 0..250"),
    # ---------------------------------------------------------------- fit arguments
    Case("wrong type passed to fit (DataFrame)", "CFN().fit(pandas.DataFrame(...))",
         lambda: CFN().fit(__import__("pandas").DataFrame({"user": [1], "item": [1], "rating": [3.0]})),
         TypeError, "fit expects a RatingSet as train, got DataFrame (build one with RatingSet.from_dataframe)"),
    Case("wrong type passed to fit (array)", "CFN().fit(np.zeros((3, 3)))", lambda: CFN().fit(np.zeros((3, 3))),
         TypeError, "fit expects a RatingSet as train, got ndarray (build one with "
                    "RatingSet.from_arrays(user, item, rating))"),
    Case("validation of another type", "CFN().fit(train, validation=[1, 2])",
         lambda: CFN().fit(_TRAIN, validation=[1, 2]), TypeError, "validation must be a RatingSet or None, got list"),
    Case("mismatched feature shape", "fit(train, user_features=np.ones((5, 3)))",
         lambda: CFN("user", (8,), 1, backend="numpy").fit(_TRAIN, user_features=np.ones((5, 3))), ValueError,
         "user_features must have shape (300, n_features) for this data set, got (5, 3)"),
    Case("features with NaN", "fit(train, item_features=features_with_a_nan)",
         lambda: CFN("item", (8,), 1, backend="numpy").fit(
             _TRAIN, item_features=np.where(np.eye(200, 4) > 0, np.nan, 0.0)), ValueError,
         "item_features contains NaN or infinite values"),
    Case("early stopping without validation", "fit(train, early_stopping=EarlyStopping())",
         lambda: CFN("user", (8,), 1, backend="numpy").fit(_TRAIN, early_stopping=model_module.EarlyStopping()),
         ValueError, "early_stopping needs a validation set: fit(..., validation=...)"),
    # ---------------------------------------------------------------- hyper-parameters
    Case("unknown kind", "CFN(kind=\"users\")", fit_with(kind="users"), ValueError,
         "kind must be 'blend', 'item', 'user' or 'auto', got 'users'"),
    Case("unknown centring", "CFN(centring=\"mean\")", fit_with(centring="mean"), ValueError,
         "centring must be None, 'sample' or 'bias', got 'mean'"),
    Case("hidden empty", "CFN(hidden=())", fit_with(hidden=()), ValueError,
         "hidden must be a positive integer or a non-empty sequence of positive integers (layer widths), got ()"),
    Case("hidden not integer", "CFN(hidden=(10.5,))", fit_with(hidden=(10.5,)), ValueError,
         "hidden must be a positive integer or a non-empty sequence of positive integers (layer widths), "
         "got (10.5,)"),
    Case("hidden zero", "CFN(hidden=(0,))", fit_with(hidden=(0,)), ValueError,
         "hidden must be a positive integer or a non-empty sequence of positive integers (layer widths), got (0,)"),
    Case("negative epochs", "CFN(epochs=-1)", fit_with(epochs=-1), ValueError,
         "epochs must be an integer >= 0, got -1"),
    Case("negative alpha", "CFN(alpha=-1)", fit_with(alpha=-1.0), ValueError,
         "alpha must be a finite number >= 0, got -1.0"),
    Case("NaN beta", "CFN(beta=nan)", fit_with(beta=NAN), ValueError, "beta must be a finite number >= 0, got nan"),
    Case("alpha and beta both zero", "CFN(alpha=0, beta=0)", fit_with(alpha=0.0, beta=0.0), ValueError,
         "alpha + beta must be > 0, got 0.0"),
    Case("mask_ratio 1", "CFN(mask_ratio=1.0)", fit_with(mask_ratio=1.0), ValueError,
         "mask_ratio must be a number in [0, 1), got 1.0"),
    Case("lr zero", "CFN(lr=0)", fit_with(lr=0.0), ValueError, "lr must be a finite number > 0, got 0.0"),
    Case("lr infinite", "CFN(lr=inf)", fit_with(lr=float("inf")), ValueError,
         "lr must be a finite number > 0, got inf"),
    Case("negative lr_decay", "CFN(lr_decay=-0.1)", fit_with(lr_decay=-0.1), ValueError,
         "lr_decay must be a finite number >= 0, got -0.1"),
    Case("negative weight_decay", "CFN(weight_decay=-1)", fit_with(weight_decay=-1.0), ValueError,
         "weight_decay must be a finite number >= 0, got -1.0"),
    Case("weight decay that flips signs", "CFN(lr=2, weight_decay=0.5)", fit_with(lr=2.0, weight_decay=0.5),
         ValueError, "lr * weight_decay must be < 1 (otherwise weight decay flips the sign of the weights), got 1.0"),
    Case("batch_size zero", "CFN(batch_size=0)", fit_with(batch_size=0), ValueError,
         "batch_size must be a positive integer, got 0"),
    Case("batch_size not integer", "CFN(batch_size=2.5)", fit_with(batch_size=2.5), ValueError,
         "batch_size must be a positive integer, got 2.5"),
    Case("negative seed", "CFN(seed=-1)", fit_with(seed=-1), ValueError, "seed must be an integer >= 0, got -1"),
    Case("hyper-parameter of the wrong type", "CFN(lr=\"fast\")", fit_with(lr="fast"), ValueError,
         "lr must be a finite number > 0, got 'fast'"),
    Case("unknown backend", "CFN(backend=\"tpu\")", fit_with(backend="tpu"), ValueError,
         "unknown backend 'tpu'; choose one of ('numpy', 'cpu', 'cuda') or 'auto'"),
    Case("unknown weight storage type", "CFN(dtype=\"float16\")", fit_with(dtype="float16"), ValueError,
         "dtype must be 'float32' or 'bfloat16', got 'float16'"),
    Case("bfloat16 storage on the GPU", "CFN(dtype=\"bfloat16\", backend=\"cuda\").fit(train)",
         fit_with(dtype="bfloat16", backend="cuda"), ValueError,
         r"re:bfloat16 weight storage is not on cuda yet; use backend=('cpu' or )?'numpy'",
         shown="bfloat16 weight storage is not on cuda yet; use backend='cpu' or 'numpy'"),
    Case("GPU requested but absent", "CFN(backend=\"cuda\").fit(train)", _cuda, BackendUnavailable,
         r"re:backend 'cuda' is unavailable: .+",
         shown="backend 'cuda' is unavailable: CuPy is not installed (pip install 'cfn_fast[cuda12]' or "
               "'cfn_fast[cuda13]')"),
    Case("sharding a blend", "CFN(shards=2).fit(train)", lambda: CFN(shards=2).fit(_TRAIN), ValueError,
         "shards must be None unless kind is 'item' or 'user' (sharding splits one network; a blend or kind='auto' "
         "trains several), got 2"),
    Case("network over the per-worker memory cap, unsharded", "CFN(\"user\", (64,), max_worker_bytes=20000)",
         fit_with(hidden=(64,), max_worker_bytes=20_000), ValueError,
         r"re:the network's parameters take [\d,]+ bytes per worker with shards=None, over max_worker_bytes=20,000: "
         r"train it with shards=\d+ or more \(CFN\(shards=\d+\), cfn fit --shards \d+\)",
         shown="the network's parameters take 116,128 bytes per worker with shards=None, over max_worker_bytes=20,000: "
               "train it with shards=7 or more (CFN(shards=7), cfn fit --shards 7)"),
    # ---------------------------------------------------------------- training
    Case("learning rate that diverges", "CFN(\"user\", lr=1e6, weight_decay=0).fit(train)",
         fit_with(lr=1e6, weight_decay=0.0), TrainingDiverged,
         r"re:training diverged at epoch 1: a parameter reached magnitude [0-9.e+]+ \(> 1e\+04: the tanh units "
         r"saturate\); the initial parameters are kept\. Lower lr \(now 1e\+06\) or raise lr_decay\.",
         shown="training diverged at epoch 1: a parameter reached magnitude 2.69e+05 (> 1e+04: the tanh units "
               "saturate); the initial parameters are kept. Lower lr (now 1e+06) or raise lr_decay."),
    Case("learning rate that makes the loss explode", "CFN(\"user\", lr=30, weight_decay=0).fit(train)",
         fit_with(lr=30.0, weight_decay=0.0), TrainingDiverged,
         r"re:training diverged at epoch 1: the mean loss per rating [0-9.]+ exceeds 3x the reference loss "
         r"[0-9.]+ \(predicting each sample's mean, or the network before this training\); the initial "
         r"parameters are kept\. Lower lr \(now 30\) or raise lr_decay\.",
         shown="training diverged at epoch 1: the mean loss per rating 0.5838 exceeds 3x the reference loss "
               "0.1692 (predicting each sample's mean, or the network before this training); the initial "
               "parameters are kept. Lower lr (now 30) or raise lr_decay."),
    Case("GPU out of memory (CuPy `OutOfMemoryError`)", "CFN(\"user\", hidden=(600,), backend=\"cuda\").fit(train)",
         _oom, DeviceOutOfMemory,
         "re:backend 'numpy' ran out of memory while training: 300 x 200 rating matrix with 5,400 ratings, "
         r"hidden \(600,\), batch_size 35, 12 side features\. Try a smaller batch_size or hidden, or "
         r"backend='cpu' \(Out of memory allocating .*\)",
         shown="backend 'cuda' ran out of memory while training: 300 x 200 rating matrix with 5,400 ratings, "
               "hidden (600,), batch_size 35, 12 side features. Try a smaller batch_size or hidden, or "
               "backend='cpu' (Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes).)"),
    # ---------------------------------------------------------------- prediction
    Case("predict before fit", "CFN().predict([1], [1])", lambda: CFN().predict([1], [1]), NotFittedError,
         "this CFN model is not fitted yet: call fit(train) first"),
    Case("unknown user at predict (U-CFN)", "ucfn.predict([999], [1])", lambda: fitted("user").predict([999], [1]),
         KeyError, "1 unknown user id(s), e.g. [999] (use fold_in to score a new user without retraining)"),
    Case("unknown user at predict (I-CFN)", "icfn.predict([999], [1])", lambda: fitted("item").predict([999], [1]),
         KeyError, "1 unknown user id(s), e.g. [999] (a new user is an input dimension of this I-CFN and needs "
                   "retraining)"),
    Case("unknown user at recommend", "ucfn.recommend(999)", lambda: fitted("user").recommend(999), KeyError,
         "1 unknown user id(s), e.g. [999] (use fold_in to score a new user without retraining)"),
    Case("string id for an integer-id model", "ucfn.predict([\"1\"], [1])",
         lambda: fitted("user").predict(["1"], [1]), KeyError,
         "1 unknown user id(s), e.g. ['1'] (use fold_in to score a new user without retraining)"),
    Case("ids of different lengths", "ucfn.predict([1, 2], [1])", lambda: fitted("user").predict([1, 2], [1]),
         ValueError, "user_ids and item_ids differ in length: 2 and 1"),
    Case("index out of range", "ucfn.predict_indices([300], [0])", lambda: fitted("user").predict_indices([300], [0]),
         IndexError, "user indices must lie in [0, 300), got [300]"),
    Case("several users to recommend", "ucfn.recommend([1, 2])", lambda: fitted("user").recommend([1, 2]),
         ValueError, "recommend takes one user id; use recommend_batch for several, got [1, 2]"),
    Case("negative n", "ucfn.recommend(1, n=-5)", lambda: fitted("user").recommend(1, n=-5), ValueError,
         "n must be an integer >= 0, got -5"),
    # ---------------------------------------------------------------- fold-in
    Case("new user folded into an I-CFN", "icfn.fold_in({1: 4.0}, new=\"user\")",
         lambda: fitted("item").fold_in({1: 4.0}, new="user"), FoldInError,
         "an I-CFN cannot fold in a new user: users are the input dimensions of its item autoencoder, so a new "
         "user needs retraining (a U-CFN model folds in new users)"),
    Case("fold-in without the model's side features", "ucfn.fold_in({1: 4.0})",
         lambda: fitted("user").fold_in({1: 4.0}), ValueError,
         "this model uses 12 user features: pass features= (a vector of 12 numbers) for the new user"),
    Case("fold-in features of the wrong length", "ucfn.fold_in({1: 4.0}, features=[1, 0])",
         lambda: fitted("user").fold_in({1: 4.0}, features=[1, 0]), ValueError,
         "fold-in features must have 12 values (the model's user features), got shape (2,)"),
    Case("fold-in rating outside the scale", "ucfn.fold_in({1: 7.0}, features=f)",
         lambda: fitted("user").fold_in({1: 7.0}, features=np.zeros(12)), ValueError,
         "1 fold-in rating(s) outside the scale [1, 5], e.g. 7"),
    Case("fold-in with an unknown item", "ucfn.fold_in({999: 4.0}, features=f)",
         lambda: fitted("user").fold_in({999: 4.0}, features=np.zeros(12)), KeyError,
         "1 unknown item id(s), e.g. [999] (a new item is an input dimension of this U-CFN and needs retraining)"),
    # ---------------------------------------------------------------- model files
    Case("missing model file", "CFN.load(\"missing.npz\")", _load("missing"), FileNotFoundError,
         "re:no model file at '.*missing.npz'", shown="no model file at 'missing.npz'", needs_tmp=True),
    Case("truncated model file", "CFN.load(\"truncated.npz\")", _load("truncated"), ModelFileError,
         r"re:.*truncated.npz is truncated or corrupted: cannot read it as an .npz file \(BadZipFile: .*\)",
         shown="truncated.npz is truncated or corrupted: cannot read it as an .npz file (BadZipFile: File is not "
               "a zip file)", needs_tmp=True),
    Case("tampered model file", "CFN.load(\"tampered.npz\")", _load("tampered"), ModelFileError,
         "re:.*tampered.npz failed its SHA-256 checksum: the file was modified or corrupted",
         shown="tampered.npz failed its SHA-256 checksum: the file was modified or corrupted", needs_tmp=True),
    Case("model file of another format version", "CFN.load(\"version.npz\")", _load("version"), ModelFileError,
         r"re:.*version.npz has cfn_fast model format version 9; this cfn_fast \(.*\) reads versions 1, 2, 3, 4, 5",
         shown="version.npz has cfn_fast model format version 9; this cfn_fast (0.1.0) reads versions 1, 2, 3, 4, 5",
         needs_tmp=True),
    Case("an .npz that is not a cfn model", "CFN.load(\"foreign.npz\")", _load("foreign"), ModelFileError,
         "re:.*foreign.npz is an .npz file but not a cfn_fast model \\(no 'cfn_format' entry\\)",
         shown="foreign.npz is an .npz file but not a cfn_fast model (no 'cfn_format' entry)", needs_tmp=True),
    # ---------------------------------------------------------------- warm start / stacking
    Case("warm start with layers of another width", "CFN(\"user\", (8,)).fit(train, initial_layers=layers_of_16)",
         lambda: CFN("user", (8,), 1, backend="numpy", use_side_info=False).fit(
             _TRAIN, initial_layers=init_layers(_TRAIN.n_items, (16,), 0, seed=0)), ValueError,
         "initial_layers[0].weight must have shape (8, 200), got (16, 200)"),
    Case("StackedCFN with one hidden width", "StackedCFN(hidden=(8,)).fit(train)",
         lambda: StackedCFN("user", (8,), backend="numpy").fit(_TRAIN), ValueError,
         "StackedCFN needs at least two hidden widths (e.g. (700, 500)), got (8,); use CFN for a one-hidden-layer "
         "network"),
    Case("StackedCFN pre-training setting misspelt", "StackedCFN(pretrain={\"epoch\": 5}).fit(train)",
         lambda: StackedCFN("user", (8, 4), pretrain={"epoch": 5}, backend="numpy").fit(_TRAIN), ValueError,
         "pretrain: unknown setting(s) ['epoch']; allowed: epochs, batch_size, lr, lr_decay, weight_decay, alpha, "
         "beta, mask_ratio"),
    # ---------------------------------------------------------------- issue 11: concurrency, files, labels, ids
    Case("a second fit while another thread trains the model", "model.fit(train)  # while thread A runs model.fit",
         lambda: _busy(read=False), ModelBusyError,
         "this CFN is busy: fit() is running in another thread; fit() cannot start until it returns (train one "
         "object from one thread at a time, or train copies)"),
    Case("predict while another thread trains the model", "model.predict([1], [1])  # while thread A runs fit",
         lambda: _busy(read=True), ModelBusyError,
         "this CFN is busy: fit() is running in another thread; predict() would see half-trained weights (wait "
         "for it to return)"),
    Case("CSV header with fewer fields than its rows",
         "load_ratings(\"shift.csv\")  # userId,movieId,rating / 1,2,3,99",
         _text_file("shift.csv", "userId,movieId,rating\n1,2,3,881250949\n"), ValueError,
         r"re:.*shift.csv: malformed generic rating file: the header has 3 field\(s\) \(userId, movieId, rating\) "
         r"but the data rows have 4: the columns would not line up; fix the header or the rows",
         shown="shift.csv: malformed generic rating file: the header has 3 field(s) (userId, movieId, rating) but "
               "the data rows have 4: the columns would not line up; fix the header or the rows", needs_tmp=True),
    Case("CSV header naming only some columns", "load_ratings(\"partial.csv\")  # customer,movieId,stars",
         _text_file("partial.csv", "customer,movieId,stars\n1,2,3\n"), ValueError,
         r"re:.*partial.csv: the header \(customer, movieId, stars\) names no user column; name the columns user, "
         r"item, rating \(or userId, movieId, rating\)",
         shown="partial.csv: the header (customer, movieId, stars) names no user column; name the columns user, "
               "item, rating (or userId, movieId, rating)", needs_tmp=True),
    Case("missing id (None)", "RatingSet.from_arrays([1, None], [1, 2], [3, 4])",
         from_arrays(np.array([1, None], dtype=object), [1, 2], [3, 4]), ValueError,
         "user ids contain 1 missing value(s) (None at position 1); every rating needs a user and an item id"),
    Case("missing id (NaN)", "RatingSet.from_arrays([1, 2], [nan, 2], [3, 4])",
         from_arrays([1, 2], [NAN, 2.0], [3, 4]), ValueError,
         "item ids contain 1 missing value(s) (nan at position 0); every rating needs a user and an item id"),
    Case("missing id (pandas NA)", "RatingSet.from_dataframe(frame_with_pd_NA_user)",
         _pandas_case(lambda pd: RatingSet.from_dataframe(pd.DataFrame(
             {"user": ["a", pd.NA], "item": [1, 2], "rating": [3.0, 4.0]}))), ValueError,
         r"re:user ids contain 1 missing value\(s\) \((<NA>|nan|None) at position 1\); every rating needs a user "
         r"and an item id",
         shown="user ids contain 1 missing value(s) (<NA> at position 1); every rating needs a user and an item id"),
    Case("feature DataFrame whose index lacks ids",
         "fit(train, user_features=DataFrame(rows, index=0..299))  # ids 1..",
         _pandas_case(lambda pd: CFN("user", (8,), 1, backend="numpy").fit(
             _TRAIN, user_features=pd.DataFrame(np.zeros((_TRAIN.n_users, 2)), index=_TRAIN.user_ids + 1))),
         ValueError,
         "user_features: its index lacks 1 of the 300 user ids, e.g. [0]; index the rows by user id "
         "(frame.set_index('user_id')) or pass frame.to_numpy() to use them in the rating set's sorted user-id order"),
    Case("feature DataFrame whose index repeats an id",
         "with_features(item_features=DataFrame(rows, index=[0, 0, 1, ...]))",
         _pandas_case(lambda pd: _TRAIN.with_features(item_features=pd.DataFrame(
             np.zeros((_TRAIN.n_items, 2)), index=np.r_[0, np.arange(_TRAIN.n_items - 1)]))), ValueError,
         "item_features: its index repeats item id(s) [0]; one row per item id"),
    Case("pandas Series with different indexes", "RatingSet.from_arrays(df.user, df.item, df.rating.sort_values())",
         _pandas_case(lambda pd: RatingSet.from_arrays(pd.Series([1, 2]), pd.Series([1, 2]),
                                                       pd.Series([3.0, 4.0], index=[1, 0]))), ValueError,
         "user and rating are pandas objects with different indexes, so their rows would pair up by position across "
         "different labels; take them from one DataFrame or reset their indexes"),
    Case("fold-in feature Series with unknown labels",
         "icfn.fold_in({1: 4.0}, features=pd.Series(v, index=[\"f0\", \"genre\"]))",
         _pandas_case(_fold_in_labels), ValueError,
         "fold-in features: its labels do not match the model's feature names (missing ['f1'], unknown ['genre'])"),
    Case("load_ratings of an unsupported object", "load_ratings(42)",
         lambda: __import__("cfn_fast").load_ratings(42), TypeError,
         "load_ratings takes a file path, a pandas DataFrame or a scipy.sparse matrix, got int"),
    Case("negative min_support", "ucfn.recommend(1, min_support=-1)",
         lambda: fitted("user").recommend(1, min_support=-1), ValueError,
         "min_support must be an integer >= 0, got -1"),
    # ---------------------------------------------------------------- command line (cfn ...)
    Case("output file that is the input", "cfn fit --ratings r.npz --save r.npz",
         _cli("fit", "--ratings", "{ratings}", "--save", "{tmp}/./r.npz"), ValueError,
         r"re:--save .*r.npz is the input given by --ratings \(.*r.npz\); writing it would destroy the input: "
         r"choose another output path",
         shown="--save r.npz is the input given by --ratings (r.npz); writing it would destroy the input: choose "
               "another output path", needs_tmp=True),
    Case("id beyond the model's id type", "cfn predict --model m.npz --user 99999999999999999999 --item 1",
         _cli("predict", "--model", "{model}", "--user", "99999999999999999999", "--item", "1"), KeyError,
         "--user: 1 unknown id(s), e.g. [99999999999999999999]: beyond the range of this model's int64 ids "
         "(-9223372036854775808..9223372036854775807)", needs_tmp=True),
    Case("negative split seed", "cfn fit --ratings r.npz --split-seed -1",
         _cli("fit", "--ratings", "{ratings}", "--split-seed", "-1"), ValueError,
         "--split-seed must be an integer >= 0, got -1", needs_tmp=True),
    Case("eval ratings outside the model's scale", "cfn eval --model m.npz --ratings ratings_x20.npz",
         _eval("scale"), ValueError,
         r"re:.*\.npz: 600 rating\(s\) outside the model's scale \[1, 5\], e.g. [0-9]+: these ratings are on "
         r"another scale than the training data",
         shown="ratings_x20.npz: 600 rating(s) outside the model's scale [1, 5], e.g. 80: these ratings are on "
               "another scale than the training data", needs_tmp=True),
    Case("eval ratings of an unknown user (no `--skip-unknown`)", "cfn eval --model m.npz --ratings new_user.npz",
         _eval("user"), KeyError,
         r"re:.*user.npz: 1 user id\(s\) the model does not know, e.g. \[999\], in 3 rating\(s\); pass "
         r"--skip-unknown to score the others",
         shown="new_user.npz: 1 user id(s) the model does not know, e.g. [999], in 3 rating(s); pass "
               "--skip-unknown to score the others", needs_tmp=True),
    Case("unknown ids repeated (counted once each)", "ucfn.predict([999, 999, 998], [1, 1, 1])",
         lambda: fitted("user").predict([999, 999, 998], [1, 1, 1]), KeyError,
         "2 unknown user id(s), e.g. [998, 999] (3 occurrences) (use fold_in to score a new user without "
         "retraining)"),
    Case("fold-in without saying what is new", "cfn fold-in --model icfn.npz --ratings-of-new new.csv",
         lambda tmp: (fitted("item").save(tmp / "i.npz"), (tmp / "n.csv").write_text("1,4\n"),
                      __import__("cfn_fast.cli").cli.run(["fold-in", "--model", str(tmp / "i.npz"),
                                                          "--ratings-of-new", str(tmp / "n.csv")])),
         UsageError,
         "--new is required: say what the new row is; this I-CFN model folds in a new item (--new item); a new "
         "user needs a U-CFN model (cfn fit --kind user)", needs_tmp=True),
    Case("fold-in without the model's side features (command line)",
         "cfn fold-in --model m.npz --new user --ratings-of-new new.csv",
         lambda tmp: ((tmp / "n.csv").write_text("1,4\n"),
                      _cli("fold-in", "--model", "{model}", "--new", "user", "--ratings-of-new", "{tmp}/n.csv")(tmp)),
         ValueError,
         "this model uses 12 user features: pass --features with 12 numbers (or one file holding them) for the "
         "new user", needs_tmp=True),
    Case("named data folder that does not exist", "cfn bench paper --data-dir /nonexistent --out report",
         _cli("bench", "paper", "--quick", "--data-dir", "{tmp}/nonexistent", "--out", "{tmp}/o", "--quiet"),
         FileNotFoundError, "re:--data-dir .*/nonexistent does not exist",
         shown="--data-dir /nonexistent does not exist", needs_tmp=True),
    Case("report folder that is the data folder", "cfn bench paper --data-dir data --out data",
         _cli("bench", "paper", "--quick", "--data-dir", "{tmp}", "--out", "{tmp}", "--quiet"), ValueError,
         r"re:--out .* is the input given by --data-dir \(.*\); writing it would destroy the input: choose "
         r"another output path",
         shown="--out data is the input given by --data-dir (data); writing it would destroy the input: choose "
               "another output path", needs_tmp=True),
    Case("figures without matplotlib installed", "cfn bench paper --quick --out report",
         _without_matplotlib, ModuleNotFoundError,
         "cfn bench paper draws its figures (table1, fig3, fig4, fig5) with matplotlib, which is not installed: "
         "pip install 'cfn_fast[bench]' (or pip install matplotlib)", needs_tmp=True),
    # ---------------------------------------------------------------- sparse ratings, ids (issue 21)
    Case("a (row, column) stored twice in a sparse rating matrix", "RatingSet.from_sparse(coo_matrix(([2, 3], "
         "([0, 0], [3, 3]))))", lambda: RatingSet.from_sparse(stored_as_given([2, 3], [0, 0], [3, 3])), ValueError,
         "the sparse matrix stores (row 0, column 3) more than once (entries 0 and 1; 1 repeated entry); a stored "
         "entry is one rating, which SciPy would add up: keep one entry per (row, column), or pass "
         "duplicates='last' or duplicates='mean' to merge them"),
    Case("explicit zero stored in a sparse rating matrix", "load_ratings(csr_matrix(([4, 0], ([0, 1], [2, 3]))))",
         lambda: load_ratings(stored_as_given([4, 0], [0, 1], [2, 3])), ValueError,
         "the sparse matrix stores 1 explicit zero(s), first at (row 1, column 3); a stored entry is a rating, and a "
         "stored 0 is more often left by arithmetic than meant: drop them with matrix.eliminate_zeros(), or, if 0 "
         "is a rating, pass the entries as arrays (RatingSet.from_arrays)"),
    Case("sparse rows given to encode with a (row, column) stored twice", "ucfn.encode(coo_matrix(([2, 3], ([0, 0], "
         "[3, 3])), shape=(1, 200)))", lambda: fitted("user").encode(stored_as_given([2, 3], [0, 0], [3, 3], (1, 200))),
         ValueError, "rows stores (row 0, column 3) more than once (entries 0 and 1; 1 repeated entry); a stored "
         "entry is one rating, which SciPy would add up: keep one entry per (row, column)"),
    Case("sparse rows given to encode with an explicit zero", "ucfn.encode(coo_matrix(([0.0], ([0], [3])), "
         "shape=(1, 200)))", lambda: fitted("user").encode(stored_as_given([0.0], [0], [3], (1, 200))), ValueError,
         "rows stores 1 explicit zero(s), first at (row 0, column 3); a stored entry is a rating, and a stored 0 is "
         "more often left by arithmetic than meant: drop them with rows.eliminate_zeros(), or, if 0 is a rating, "
         "pass dense rows (NaN for an unknown rating)"),
    Case("integer id of 65 bits", "RatingSet.from_arrays([2**64, 1], [1, 2], [3, 4])",
         from_arrays([2 ** 64, 1], [1, 2], [3, 4]), ValueError,
         "user ids must fit in 64 bits (at most 2**64 - 1); found 18446744073709551616"),
    Case("float ids beyond 2**53 (not exact)", "RatingSet.from_arrays([1e18, 1.0], [1, 2], [3, 4])",
         from_arrays([1e18, 1.0], [1, 2], [3, 4]), ValueError, "user ids are floats as large as 1e+18, "
         "beyond 2**53 where a float no longer holds every integer: pass them as integers (int64 or uint64)"),
    Case("fold-in rating one item twice", "ucfn.fold_in([5, 6, 5], [3, 4, 5])",
         lambda: fitted("user").fold_in([5, 6, 5], [3, 4, 5]), ValueError,
         "fold-in ratings name item id 5 more than once (positions 0 and 2); give one rating per item"),
]


# Each area keeps its rows in its own module (tests/bad_inputs_*.py); the table lists them in this order.
CASES: list[Case] = CORE_CASES + MODEL_FILE_CASES + KEPT_CASES + ENGINE_API_CASES + ONNX_CASES + CLI_CASES


def _message(exc: BaseException) -> str:
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input(case: Case, tmp_path) -> None:
    with pytest.raises(case.error) as info:
        case.run(tmp_path) if case.needs_tmp else case.run()
    assert type(info.value) is case.error or isinstance(info.value, case.error)
    text = _message(info.value)
    if case.message.startswith("re:"):
        assert re.fullmatch(case.message[3:], text), text
    else:
        assert text == case.message


def test_examples_shown_for_regex_messages_match_their_pattern() -> None:
    for case in CASES:
        if case.message.startswith("re:"):
            pattern = case.message[3:].replace("'numpy'", "'(numpy|cuda)'")
            assert re.fullmatch(pattern, case.shown) or re.fullmatch(pattern, "/tmp/" + case.shown), case.what


def test_no_error_for_rows_without_ratings() -> None:
    """A user or item with no ratings is not an error: it is predicted through the fallback."""
    train = _TRAIN.subset(_TRAIN.user != 7)
    m = CFN("user", (8,), 1, backend="numpy").fit(train)
    assert np.isfinite(m.predict([7], [0])).all()


def test_duplicate_policies_merge() -> None:
    last = RatingSet.from_arrays([1, 1], [2, 2], [3, 5], duplicates="last")
    mean = RatingSet.from_arrays([1, 1], [2, 2], [3, 5], duplicates="mean")
    assert last.rating.tolist() == [5.0] and mean.rating.tolist() == [4.0]


def render_table() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    lines = ["| # | bad input | example | error | message |", "|---|---|---|---|---|"]
    for n, case in enumerate(CASES, 1):
        lines.append(f"| {n} | {cell(case.what)} | `{cell(case.example)}` | `{case.error.__name__}` | "
                     f"`{cell(case.text)}` |")
    return "\n".join(lines)


@pytest.mark.parametrize("doc", [DOC, DOC.parents[1] / "README.md"], ids=["docs", "README"])
def test_document_lists_every_case(doc: Path) -> None:
    if not doc.exists():
        pytest.fail(f"{doc} is missing; regenerate the table with `python {Path(__file__).name}`")
    text = doc.read_text(encoding="utf-8")
    assert len(CASES) >= 15
    for line in render_table().splitlines():
        assert line in text, f"{doc.name} lacks the row: {line}"


if __name__ == "__main__":  # print the table for docs/bad_inputs.md
    sys.stdout.write(render_table() + "\n")
