"""A model file is untrusted input (issue 21): an edited and re-hashed file is refused by ``CFN.load`` with a
one-line ``ModelFileError`` naming the file and the entry, before any kernel touches it; files written by this
release and by 0.1.0 still load.  The fuzzing of many edited files is tests/test_model_file_fuzz.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from children import child_env  # tests/children.py
from model_files import TINY, fit_tiny_models, tampered, tiny_models, with_config  # tests/model_files.py

import cfn_fast
from cfn_fast import CFN, available_backends
from cfn_fast.fitted.persistence import ModelFileError

HERE = Path(__file__).resolve().parent
BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return tiny_models(tmp_path_factory.mktemp("models"))


def _set(name: str, index: int | tuple, value) -> callable:
    def edit(arrays):
        arrays[name][index] = value
    return edit


def _entry(name: str, value) -> callable:
    def edit(arrays):
        arrays[name] = value(arrays[name]) if callable(value) else value
    return edit


def _config(change) -> callable:
    return lambda arrays: with_config(arrays, change)


def _decreasing_indptr(arrays):
    arrays["input_indptr"][2] = arrays["input_indptr"][-1]      # row 1 ends after the last row starts


def _duplicate_pair(arrays):
    arrays["train_user"][1], arrays["train_item"][1] = arrays["train_user"][0], arrays["train_item"][0]


def _drop(name: str) -> callable:
    def edit(arrays):
        del arrays[name]
    return edit


def _narrow_layer1(arrays):
    for part in ("weight", "bias", "side_weight"):
        arrays[f"layer1_{part}"] = arrays[f"layer1_{part}"][:2].copy()


def _v1_with_offsets(arrays):
    arrays["cfn_version"] = np.array([1])


def _side_without_columns(arrays):
    arrays["side"] = np.zeros((30, 0), dtype=np.float32)
    return with_config(arrays, lambda c: c.update(has_side=True))


def _selection_of_another_kind(config):
    config["selection"]["kind"] = "item"


# (case, model, edit, message regex): one row per way a file can lie
CASES = [
    # the findings of issue 21
    ("input index out of range", "item_side", _set("input_indices", 3, 10**6),
     r"input_indices must lie in \[0, 30\), found \[1000000\]"),
    ("negative input index", "user_bias", _set("input_indices", 0, -1), r"input_indices must lie in \[0, 20\)"),
    ("decreasing input_indptr", "item_side", _decreasing_indptr, "input_indptr must never decrease"),
    ("input_indptr not starting at 0", "item_side", _set("input_indptr", 0, 1), "input_indptr must start at 0"),
    ("unknown kind", "item_side", _config(lambda c: c.update(kind="both")),
     "config.kind must be 'item' or 'user', got 'both'"),
    ("duplicate user ids", "item_side", _set("user_ids", 1, 0), "user_ids must be sorted and unique, found a "
                                                                  "duplicate id"),
    ("item ids out of order", "user_bias", _entry("item_ids", lambda ids: ids[::-1].copy()),
     "item_ids must be sorted and unique, found ids out of order"),
    ("reversed scale in pre_scalars", "item_side", _entry("pre_scalars", np.array([5.0, 1.0, 0.0])),
     r"pre_scalars must start with the rating scale \[1.0, 5.0\]"),
    ("reversed scale in config", "item_side", _config(lambda c: c.update(scale=[5.0, 1.0])),
     "config.scale must have low < high"),
    # every other structure
    ("training user out of range", "user_plain", _set("train_user", 0, 30), r"train_user must lie in \[0, 30\)"),
    ("duplicate training pair", "user_plain", _duplicate_pair, r"repeat the \(user, item\) index pair"),
    ("rating off the scale", "item_side", _set("train_rating", 0, 9.0), "train_rating has values outside the "
                                                                      "scale"),
    ("NaN rating", "item_side", _set("train_rating", 0, np.nan), "train_rating holds NaN"),
    ("edited sample mean", "item_side", _set("pre_sample_mean", 0, 0.9), "pre_sample_mean does not match"),
    ("edited global mean", "item_side", _set("pre_scalars", 2, 0.7), r"pre_scalars\[2\] \(the global mean\) does "
                                                                     "not match"),
    ("edited sample count", "user_plain", _set("pre_sample_count", 0, 0), "pre_sample_count does not match"),
    ("edited input offset", "user_bias", _set("pre_input_offset", 0, 1.5), "pre_input_offset does not match"),
    ("input offsets in a version-1 file", "user_bias", _v1_with_offsets, "needs format version 2"),
    ("edited input value", "item_side", _set("input_data", 0, 1.75), "input_data does not match"),
    ("input_shape of the other kind", "item_side", _entry("input_shape", np.array([30, 20])),
     r"input_shape must be \[20, 30\]"),
    ("truncated input_indices", "item_side", _entry("input_indices", lambda a: a[:-1]),
     "input_indices must have shape"),
    ("NaN weight", "item_side", _set("layer1_weight", (0, 0), np.nan), "layer1_weight holds NaN or infinite"),
    ("infinite bias", "user_plain", _set("layer0_bias", 0, np.inf), "layer0_bias holds NaN or infinite"),
    ("transposed weight", "user_plain", _entry("layer1_weight", lambda w: w.T.copy()),
     r"layer1_weight must have shape \(20, 4\)"),
    ("layers that do not chain", "stacked", _narrow_layer1,
     r"layer2_weight must have shape \(n, 2\)"),
    ("integer weights", "user_plain", _entry("layer0_weight", lambda w: w.astype(np.int32)),
     "layer0_weight must hold floating-point values"),
    ("missing side weight", "item_side", _drop("layer0_side_weight"), "entry 'layer0_side_weight' is missing"),
    ("side weight without side information", "user_plain",
     _entry("layer0_side_weight", np.zeros((4, 2), dtype=np.float32)), "layer0_side_weight' is present but"),
    ("one layer too many declared", "item_side", _config(lambda c: c.update(n_layers=3)),
     "entry 'layer2_weight' is missing"),
    ("side flag that lies", "item_side", _config(lambda c: c.update(has_side=False)), "config.has_side"),
    ("side of too few rows", "item_side", _entry("side", lambda s: s[:-1].copy()), r"side must have shape \(20, n\)"),
    ("side without columns", "user_plain", _side_without_columns, "side has no columns"),
    ("feature names of another width", "item_side", _entry("user_feature_names", lambda n: n[:-1].copy()),
     r"user_feature_names must have shape \(12,\)"),
    ("unknown entry", "item_side", _entry("notes", np.array(["hello"])), "unknown entry 'notes'"),
    ("missing entry", "item_side", _drop("train_rating"), "entry 'train_rating' is missing"),
    ("config that is not JSON", "item_side", _entry("config", np.array(["{not json"])), "config is not valid JSON"),
    ("config that is a list", "item_side", _entry("config", np.array(["[1, 2]"])), "config must be a JSON object"),
    ("unknown parameter", "item_side", _config(lambda c: c["params"].update(depth=3)),
     r"config.params has unknown parameter\(s\) \['depth'\]"),
    ("bad parameter value", "item_side", _config(lambda c: c["params"].update(batch_size=0)),
     "config.params: batch_size must be a positive integer, got 0"),
    ("bad kind parameter", "item_side", _config(lambda c: c["params"].update(kind="film")),
     "config.params: kind must be 'blend', 'item', 'user' or 'auto', got 'film'"),
    ("unknown backend", "item_side", _config(lambda c: c["params"].update(backend="tpu")), "backend must be 'auto'"),
    ("unknown training backend", "item_side", _config(lambda c: c.update(backend_trained="tpu")),
     "config.backend_trained must be one of"),
    ("negative epochs", "item_side", _config(lambda c: c.update(epochs_trained=-1)),
     r"config.epochs_trained must be an integer in \[0, "),
    ("history beyond the epochs trained", "item_side", _config(lambda c: c["history"][0].update(epoch=7)),
     r"config.history\[0\].epoch must lie in \(0, 1\]"),
    ("history record without fields", "item_side", _config(lambda c: c["history"].append({"epoch": 2})),
     r"config.history\[1\] must be an object with the fields"),
    ("best epoch never trained", "item_side", _config(lambda c: c.update(best_epoch=5)), "config.best_epoch"),
    ("selection of another kind", "auto", _config(_selection_of_another_kind), "config.selection chose 'item'"),
    ("too many layers declared", "item_side", _config(lambda c: c.update(n_layers=10**12)), "config.n_layers must be"),
]


@pytest.mark.parametrize("case, model, edit, message", CASES, ids=[c[0] for c in CASES])
def test_each_inconsistent_entry_is_refused_naming_the_file_and_the_entry(models, tmp_path, case, model, edit,
                                                                           message):
    path = tampered(models[model], tmp_path / "edited.npz", edit)
    with pytest.raises(ModelFileError, match=message) as info:
        CFN.load(path)
    text = str(info.value)
    assert text.startswith(f"{path} is not a valid cfn_fast model: ") and "\n" not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_of_every_model_shape_load_and_predict_as_saved(tmp_path, backend):
    """Untouched files of this release load: I-/U-CFN, side information, the bias centring, a StackedCFN, auto."""
    users, items = TINY.user_ids[TINY.user], TINY.item_ids[TINY.item]
    for name, model in fit_tiny_models(backend).items():
        path = model.save(tmp_path / f"{name}.npz")
        again = tampered(path, tmp_path / f"{name}-rehashed.npz", lambda arrays: None)  # re-hashing is no edit
        for loaded in (CFN.load(path), CFN.load(again)):
            assert loaded.backend_ == backend
            np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
            a, b = loaded.recommend(TINY.user_ids[0], n=3), model.recommend(TINY.user_ids[0], n=3)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_model_file_error_is_public():
    assert cfn_fast.ModelFileError is ModelFileError and "ModelFileError" in cfn_fast.__all__
    assert issubclass(ModelFileError, ValueError)


def test_reversed_scale_no_longer_predicts_one_everywhere(models, tmp_path):
    """Reversed constants in both places (config and pre_scalars) made every prediction 1.0."""
    def reverse(arrays):
        arrays["pre_scalars"][:2] = arrays["pre_scalars"][1::-1].copy()
        return with_config(arrays, lambda c: c.update(scale=c["scale"][::-1]))
    with pytest.raises(ModelFileError, match="config.scale must have low < high"):
        CFN.load(tampered(models["item_side"], tmp_path / "reversed.npz", reverse))


_CLI_CHILD = """
import contextlib, io, json, sys
from cfn_fast.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    results.append([code, err.getvalue(), out.getvalue()])
print(json.dumps(results))
"""


def test_command_line_refuses_a_tampered_file_in_one_line(models, tmp_path):
    """``cfn recommend`` / ``cfn export`` / ``cfn predict`` on an edited, re-hashed file: exit 2 and one line (they
    crashed the interpreter).  Run in a child so that a crash fails this test instead of the whole run."""
    path = tampered(models["item_side"], tmp_path / "bad.npz", _set("input_indices", 3, 10**6))
    user, item = str(TINY.user_ids[0]), str(TINY.item_ids[0])
    commands = [["recommend", "--model", str(path), "--user", user],
                ["export", "--model", str(path), "--onnx", str(tmp_path / "m.onnx")],
                ["predict", "--model", str(path), "--user", user, "--item", item]]
    proc = subprocess.run([sys.executable, "-c", _CLI_CHILD, json.dumps(commands)], capture_output=True, text=True,
                          timeout=120, env=child_env(), cwd=HERE)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    for argv, (code, err, out) in zip(commands, json.loads(proc.stdout)):
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, code, err)
        assert err.startswith(f"cfn {argv[0]}: error: {path} is not a valid cfn_fast model: input_indices must lie "
                              f"in [0, 30)"), err
