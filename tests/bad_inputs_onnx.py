"""Bad-input rows for exported ONNX graphs and, in their own blocks, for ``output="cupy"`` and input files;
tests/test_bad_input.py runs them and renders the table.

A graph cannot raise, so it refuses the run (cfn_fast.export.onnx, "Invalid inputs"): onnxruntime raises its
``Fail`` and the message names the refusing node, whose name is the rule broken.  The ids below are those of a
40-item, 60-user synthetic set.
"""
from __future__ import annotations

import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from bad_input_case import Case  # tests/bad_input_case.py
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException  # the test extras install it

from cfn_fast import CFN, synthetic_ratings

N_USERS, N_ITEMS = 60, 40
#: A blend keeps networks only where they beat the bias model on validation: a larger, denser set.
BLEND_USERS, BLEND_ITEMS = 300, 150


@lru_cache(maxsize=None)
def _model(kind: str, side: bool) -> CFN:
    if kind == "blend":
        ratings = synthetic_ratings(BLEND_USERS, BLEND_ITEMS, 20_000, seed=3, side_info=side)
        model = CFN(hidden=(32,), epochs=10, backend="cpu", seed=0).fit(ratings)
        assert model.fitted_.networks, "the blend of these cases must hold networks"
        return model
    ratings = synthetic_ratings(N_USERS, N_ITEMS, 1200, seed=0, side_info=side)
    assert (ratings.n_users, ratings.n_items) == (N_USERS, N_ITEMS)  # the messages below name these sizes
    return CFN(kind, (8,), 1, backend="numpy", seed=0).fit(ratings)


def _run(kind: str, graph: str, feeds: dict, *, side: bool = False, input_format: str = "dense") -> object:
    import onnxruntime as ort

    from cfn_fast.export.onnx import build_onnx
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the refusal is the expected outcome: keep onnxruntime's log quiet
    proto = build_onnx(_model(kind, side).runtime_, graph, input_format=input_format)
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    try:
        return session.run(None, feeds)
    except RuntimeException as exc:   # onnxruntime 1.19 (the oldest supported) reports the refusal so; later: Fail
        raise Fail(str(exc)) from exc


def _rows(n: int = 2) -> np.ndarray:
    return np.full((n, N_ITEMS), np.nan, dtype=np.float32)


def _refusal(rule: str) -> tuple[str, str]:
    """``(message pattern, shown text)`` of onnxruntime's error for the node named after ``rule``."""
    head = "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. "
    name = f"Name:'refused: {rule}'"
    either_code = re.escape(head).replace(re.escape("1 : FAIL"), "(1 : FAIL|6 : RUNTIME_EXCEPTION)")
    return (f"re:(?s){either_code}{re.escape(name)} Status Message: .*",
            f"{head}{name} Status Message: … A dimension cannot be less than -1, got -2")


def _case(what: str, example: str, run, rule: str) -> Case:
    pattern, shown = _refusal(rule)
    return Case(what, example, run, Fail, pattern, shown=shown)


_K = np.array([5], np.int64)

CASES: list[Case] = [
    # ---------------------------------------------------------------- issue 21: ONNX graphs refuse bad indices
    _case("ONNX predict graph: column index -1 (no wrap-around to the last item)",
          'session.run(None, {"ratings": rows, "columns": [[0, -1], [1, 2]]})  # predict graph, 40 items',
          lambda: _run("user", "predict", {"ratings": _rows(), "columns": np.array([[0, -1], [1, 2]])}),
          "columns: indices must lie in [0, 40)"),
    _case("ONNX predict graph: column index out of range",
          'session.run(None, {"ratings": rows, "columns": [[0, 40], [1, 2]]})  # predict graph, 40 items',
          lambda: _run("user", "predict", {"ratings": _rows(), "columns": np.array([[0, 40], [1, 2]])}),
          "columns: indices must lie in [0, 40)"),
    _case("ONNX sparse rows: index below -1 (the padding)",
          'session.run(None, {"indices": [[3, -2]], "values": [[4.0, 0.0]]})  # reconstruct graph, sparse',
          lambda: _run("user", "reconstruct", {"indices": np.array([[3, -2]]),
                                                "values": np.array([[4.0, 0.0]], np.float32)}, input_format="sparse"),
          "indices: column indices must lie in [0, 40), or be -1 for padding"),
    _case("ONNX sparse rows: a column twice in one row",
          'session.run(None, {"indices": [[3, 3]], "values": [[4.0, 2.0]]})  # reconstruct graph, sparse',
          lambda: _run("user", "reconstruct", {"indices": np.array([[3, 3]]),
                                                "values": np.array([[4.0, 2.0]], np.float32)}, input_format="sparse"),
          "indices: a column at most once per row"),
    _case("ONNX sparse rows: values shaped unlike indices",
          'session.run(None, {"indices": [[3, 5]], "values": [[4.0]]})  # reconstruct graph, sparse',
          lambda: _run("user", "reconstruct", {"indices": np.array([[3, 5]]),
                                                "values": np.array([[4.0]], np.float32)}, input_format="sparse"),
          "values: must have the shape of indices"),
    _case("ONNX predict graph: one row of columns for two rows of ratings",
          'session.run(None, {"ratings": two_rows, "columns": [[0, 1]]})  # predict graph',
          lambda: _run("user", "predict", {"ratings": _rows(2), "columns": np.array([[0, 1]])}),
          "columns: one row per row of the ratings (the same batch size)"),
    _case("ONNX graph with side information: features for another batch size",
          'session.run(None, {"ratings": two_rows, "features": one_row})  # reconstruct graph, CFN++',
          lambda: _run("user", "reconstruct", {"ratings": _rows(2), "features": _model("user", True).side_[:1]},
                       side=True),
          "features: one row per row of the ratings (the same batch size)"),
    _case("ONNX I-CFN recommend graph: user index -1",
          'session.run(None, {"users": [-1], "exclude": [[-1]], "k": [5]})  # I-CFN recommend graph',
          lambda: _run("item", "recommend", {"users": np.array([-1]), "exclude": np.array([[-1]]), "k": _K}),
          "users: indices must lie in [0, 60)"),
    _case("ONNX I-CFN recommend graph: excluded item out of range",
          'session.run(None, {"users": [0], "exclude": [[40]], "k": [5]})  # I-CFN recommend graph, 40 items',
          lambda: _run("item", "recommend", {"users": np.array([0]), "exclude": np.array([[40]]), "k": _K}),
          "exclude: item indices must lie in [0, 40), or be -1 for padding"),
    _case("ONNX I-CFN recommend graph: exclude for another batch size",
          'session.run(None, {"users": [0, 1], "exclude": [[-1]], "k": [5]})  # I-CFN recommend graph',
          lambda: _run("item", "recommend", {"users": np.array([0, 1]), "exclude": np.array([[-1]]), "k": _K}),
          "exclude: one row per user (the same batch size as users)"),
    # ---------------------------------------------------------------- a blend's graphs take training indices
    _case("ONNX blend predict graph: user index out of range",
          'session.run(None, {"users": [0, 300], "items": [1, 2]})  # blend predict graph, 300 users',
          lambda: _run("blend", "predict", {"users": np.array([0, 300]), "items": np.array([1, 2])}),
          "users: indices must lie in [0, 300)"),
    _case("ONNX blend predict graph: item index -1 (no wrap-around to the last item)",
          'session.run(None, {"users": [0, 1], "items": [-1, 2]})  # blend predict graph, 150 items',
          lambda: _run("blend", "predict", {"users": np.array([0, 1]), "items": np.array([-1, 2])}),
          "items: indices must lie in [0, 150)"),
    _case("ONNX blend predict graph: items and users of different lengths",
          'session.run(None, {"users": [0, 1], "items": [2]})  # blend predict graph',
          lambda: _run("blend", "predict", {"users": np.array([0, 1]), "items": np.array([2])}),
          "items: one per user (the same length as users)"),
    Case("ONNX reconstruct graph of a blend", 'blend.to_onnx("m.onnx", graph="reconstruct")',
         lambda: _run("blend", "reconstruct", {}), ValueError,
         r"re:graph 'reconstruct' completes one network's input rows, and a blend has no single input row \(its "
         r"I-CFN rows are items over users, its U-CFN rows users over items\): export one of its (\d+) network\(s\) "
         r"alone with member=k, k in \[0, \1\), or the blend's 'predict' or 'recommend' graph",
         shown="graph 'reconstruct' completes one network's input rows, and a blend has no single input row (its "
               "I-CFN rows are items over users, its U-CFN rows users over items): export one of its 3 network(s) "
               "alone with member=k, k in [0, 3), or the blend's 'predict' or 'recommend' graph"),
]


# ---------------------------------------------------------------- issue 21: output="cupy" without a GPU
def _cupy_output_without_gpu() -> object:
    import importlib.util

    import pytest

    from cfn_fast import available_backends
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed (output='cupy' then raises ImportError naming cupy)")
    if "cuda" in available_backends():
        pytest.skip("a CUDA GPU is present")
    return _model("user", False).predict_indices([0], [0], output="cupy")


CASES += [
    Case("output='cupy' on a machine where CuPy reaches no GPU", 'model.predict([1], [1], output="cupy")  # no GPU',
         _cupy_output_without_gpu, ValueError,
         r"re:output='cupy' needs a CUDA GPU, and CuPy reaches none \(.+\); use output='numpy' \(the default\) on "
         r"this machine",
         shown="output='cupy' needs a CUDA GPU, and CuPy reaches none (CuPy found no CUDA GPU); use output='numpy' "
               "(the default) on this machine"),
]


# ---------------------------------------------------------------- issue 21: pipes and /dev/stdin as input files
_NOT_REGULAR = (r" is not a regular file \(a pipe, socket or device such as /dev/stdin\): inputs are read from regular "
                r"files only; save the data to a file and pass its path")


def _cli_with_special_file(*argv: str) -> Callable[[Path], object]:
    """``cfn`` in-process with ``{fifo}`` a named pipe nobody writes to, ``{stdin}`` /dev/stdin and ``{model}``
    a saved model, all in the test's folder."""
    def run(tmp: Path) -> object:
        import pytest

        from cfn_fast import cli
        if any("{stdin}" in a for a in argv) and (not os.path.exists("/dev/stdin")
                                                 or stat.S_ISREG(os.stat("/dev/stdin").st_mode)):
            pytest.skip("/dev/stdin is a regular file here (stdin redirected from a file), or absent")
        os.mkfifo(tmp / "fifo")
        _model("user", False).save(tmp / "m.npz")
        (tmp / "new.csv").write_text("1,4\n")
        files = {"fifo": str(tmp / "fifo"), "stdin": "/dev/stdin", "model": str(tmp / "m.npz"),
                 "new": str(tmp / "new.csv")}
        return cli.run([a.format(**files) for a in argv])
    return run


def _special_file_case(what: str, example: str, argv: tuple, role: str, path: str) -> Case:
    shown_path = "/dev/stdin" if path == "/dev/stdin" else "fifo"
    return Case(what, example, _cli_with_special_file(*argv), ValueError,
                f"re:{role} '{re.escape(path) if path == '/dev/stdin' else '(.*/)?fifo'}'{_NOT_REGULAR}",
                shown=f"{role} '{shown_path}'" + _NOT_REGULAR.replace("\\", ""), needs_tmp=True)


CASES += [
    _special_file_case("ratings file that is a named pipe", "cfn fit --ratings fifo  # mkfifo fifo",
                       ("fit", "--ratings", "{fifo}"), "ratings file", "fifo"),
    _special_file_case("ratings file that is /dev/stdin", "cfn fit --ratings /dev/stdin",
                       ("fit", "--ratings", "{stdin}"), "ratings file", "/dev/stdin"),
    _special_file_case("new ratings file that is a named pipe (same message as fit)",
                       "cfn fold-in --model m.npz --new user --ratings-of-new fifo",
                       ("fold-in", "--model", "{model}", "--new", "user", "--ratings-of-new", "{fifo}"),
                       "ratings file", "fifo"),
    _special_file_case("model file that is a named pipe", "cfn predict --model fifo --user 1 --item 1",
                       ("predict", "--model", "{fifo}", "--user", "1", "--item", "1"), "model file", "fifo"),
]
