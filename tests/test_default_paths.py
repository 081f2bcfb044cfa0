"""Every command's default path, end to end, through the installed ``cfn`` console script on tiny data.

CI runs the suite against the installed wheel (scripts/test_wheel.sh), so these runs use what a user gets from
``pip install``: the entry point, the compiled kernels and the package data. ``cfn bench suite`` and ``cfn tune``
(each ``--algo``) run end to end in tests/test_benchsuite.py and tests/test_tune.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from children import TESTS, child_env  # tests/children.py

from cfn_fast import synthetic_ratings, train_test_split

pytestmark = pytest.mark.smoke


def cfn_command() -> list[str]:
    """The ``cfn`` script installed beside this interpreter (``python -m cfn_fast.cli`` for a source tree)."""
    script = Path(sys.executable).with_name("cfn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cfn_fast.cli"]


def cfn(*argv: str, cwd: Path = TESTS, timeout: float = 300) -> dict:
    """Run one command with ``--json``; returns its JSON object after checking the exit status and stdout."""
    done = subprocess.run([*cfn_command(), *argv, "--json"], capture_output=True, text=True, cwd=cwd,
                          env=child_env(), timeout=timeout)
    assert done.returncode == 0, f"cfn {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout of cfn {argv[0]} is not one JSON line: {done.stdout[:2000]}"
    return json.loads(lines[0])


def write_csv(path: Path, ratings) -> Path:
    rows = np.column_stack([ratings.user_ids[ratings.user], ratings.item_ids[ratings.item], ratings.rating])
    np.savetxt(path, rows, fmt=["%d", "%d", "%g"], delimiter=",", header="userId,movieId,rating", comments="")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("default_paths")
    train, test = train_test_split(synthetic_ratings(90, 60, 2400, seed=3), 0.1, seed=0)
    return {"folder": folder, "train": write_csv(folder / "train.csv", train),
            "test": write_csv(folder / "test.csv", test), "model": folder / "model.npz",
            "user": str(int(train.user_ids[0])), "item": str(int(train.item_ids[0]))}


@pytest.fixture(scope="module")
def saved_model(workspace) -> dict:
    """``cfn fit`` with its defaults (the blend), a few epochs on tiny data."""
    result = cfn("fit", "--ratings", str(workspace["train"]), "--epochs", "3", "--hidden", "8",
                 "--save", str(workspace["model"]))
    assert workspace["model"].is_file()
    return result


def test_console_script_is_installed_beside_the_interpreter():
    if not Path(sys.executable).with_name("cfn").exists():
        pytest.skip("no cfn script beside this interpreter (a source tree run: CFN_FAST_TEST_SOURCE=1)")
    done = subprocess.run([*cfn_command(), "--help"], capture_output=True, text=True, cwd=TESTS, env=child_env())
    assert done.returncode == 0 and "demo" in done.stdout and "tune" in done.stdout


def test_demo_with_every_default():
    result = cfn("demo", timeout=600)
    assert 0 < result["test_rmse"] < result["item_mean_rmse"], result


def test_fit_with_defaults_saves_a_model(saved_model):
    assert saved_model["kind"] == "blend" and np.isfinite(saved_model["test_rmse"])
    assert saved_model["blend"]["bias_rmse"] >= saved_model["blend"]["blend_rmse"]


def test_eval(saved_model, workspace):
    result = cfn("eval", "--model", str(workspace["model"]), "--ratings", str(workspace["test"]))
    assert 0 < result["rmse"] < 2.5


def test_predict(saved_model, workspace):
    result = cfn("predict", "--model", str(workspace["model"]), "--user", workspace["user"],
                 "--item", workspace["item"])
    rating = result["predictions"][0]["rating"]
    assert 1 <= rating <= 5


def test_recommend(saved_model, workspace):
    result = cfn("recommend", "--model", str(workspace["model"]), "--user", workspace["user"])
    assert len(result["recommendations"][0]["items"]) == 10


@pytest.mark.parametrize("new", [None, "user", "item"])
def test_fold_in(saved_model, workspace, new):
    """A blend folds in a new user (the default) or a new item."""
    known = workspace["user"] if new == "item" else workspace["item"]
    ratings = workspace["folder"] / "new.csv"
    ratings.write_text(f"{known},4\n")
    result = cfn("fold-in", "--model", str(workspace["model"]), *(["--new", new] if new else []),
                 "--ratings-of-new", str(ratings), "--min-support", "0")
    assert len(result["recommendations"]) == 10 and result["new"] == (new or "user")


def test_export(saved_model, workspace):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    out = workspace["folder"] / "model.onnx"
    result = cfn("export", "--model", str(workspace["model"]), "--onnx", str(out))
    assert out.is_file() and out.stat().st_size > 0 and result["graph"]


def test_bench_paper_quick(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    result = cfn("bench", "paper", "--quick", "--data-dir", str(empty), "--out", str(tmp_path / "report"),
                 "--synthetic", "120", "80", "2400", "--quiet", timeout=600)
    assert (tmp_path / "report" / "report.md").is_file(), result
