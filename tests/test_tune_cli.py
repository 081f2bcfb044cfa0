"""``cfn tune`` at its edges: bad arguments and unreachable addresses fail in seconds, before Ray starts, on one
line; Ctrl-C exits 130 naming what was saved where, with ``--json`` output still one JSON object."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from children import TESTS, child_env  # tests/children.py
from interrupts import sigint_as_at_a_terminal  # tests/interrupts.py

from cfn_fast.data import synthetic_ratings

FAST = 15.0          # seconds: the bound for a refusal


def _ratings_csv(path: Path, shape=(120, 80, 2500)) -> Path:
    data = synthetic_ratings(*shape, seed=2)
    path.write_text("user,item,rating\n" + "".join(f"{u},{i},{r:g}\n" for u, i, r in
                                                   zip(data.user, data.item, data.rating)))
    return path


@pytest.fixture
def no_ray_start(monkeypatch):
    """Starting (or joining) Ray fails the test: the refusal must come first."""
    ray = pytest.importorskip("ray", reason="the 'tune' extra (ray[tune]) is not installed")

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the arguments were checked")
    monkeypatch.setattr(ray, "init", refuse)
    return ray


def _cfn_tune(tmp_path: Path, *extra: str) -> tuple[int, str, str, float]:
    """Run ``cfn tune`` in-process: (exit status, stdout, stderr, seconds)."""
    import contextlib
    import io

    from cfn_fast.cli import main
    ratings = _ratings_csv(tmp_path / "r.csv")
    argv = ["tune", "--ratings", str(ratings), "--out", str(tmp_path / "hyperparams_r.json"), "--trials", "2",
            "--epochs", "1", "--hidden", "4", "--quiet", *extra]
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


@pytest.mark.parametrize("extra, message", [
    (["--hidden", "0"], "argument --hidden: must be an integer in [1, 2147483647], got 0"),
    (["--batch-size", "-3"], "argument --batch-size: must be an integer in [1, 2147483647], got -3"),
    (["--epochs", "0"], "argument --epochs: must be an integer in [1, 2147483647], got 0"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number > 0, got nan"),
    (["--test-ratio", "1.5"], "--test-ratio must be a number in (0, 1), got 1.5"),
    (["--num-cpus", "1", "--cpus-per-trial", "2"], "--cpus-per-trial 2 exceeds the CPUs of the embedded Ray "
                                                   "(--num-cpus 1): no trial could start"),
    (["--address", "127.0.0.1:99999"], "--address must be 'auto', HOST:PORT or ray://HOST:PORT, got "
                                       "'127.0.0.1:99999'"),
])
def test_bad_arguments_fail_fast_before_ray_starts(no_ray_start, tmp_path, extra, message):
    code, out, err, seconds = _cfn_tune(tmp_path, *extra, "--json")
    assert code == 2 and seconds < FAST, (code, seconds, err)
    assert err.splitlines() == [f"cfn tune: error: {message}" + (" (see `cfn tune --help`)" if "argument" in
                                                                 message else "")], err
    assert json.loads(out)["exit_code"] == 2
    assert not list(tmp_path.glob(".cfn_tune_*"))


def test_bad_out_and_storage_are_named_before_ray_starts(no_ray_start, tmp_path, capsys):
    """Reported under the user's paths (not Ray's temporary folder), before Ray starts; outputs never overwrite
    inputs."""
    from cfn_fast.cli import main
    data = tmp_path / "data"
    data.mkdir()
    ratings = _ratings_csv(data / "r.csv")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = str(tmp_path / "hyperparams_r.json")
    cases = [
        ([str(ratings), "--out", f"{tmp_path}/missing/h.json"],
         f"--out {tmp_path}/missing/h.json: folder {tmp_path}/missing does not exist"),
        ([str(ratings), "--out", out, "--storage", str(notes)], f"--storage {notes} is a file, not a folder"),
        ([str(ratings), "--out", out, "--storage", f"{notes}/sub"],
         f"--storage {notes}/sub: {notes} is a file, not a folder"),
        ([str(ratings), "--out", str(ratings)],
         f"--out {ratings} is the input given by --ratings ({ratings}); writing it would destroy the input: "
         f"choose another output path"),
        ([str(data), "--out", out, "--storage", str(data)],
         f"--storage {data} is the input given by --ratings ({data}); writing it would destroy the input: choose "
         f"another output path"),
        ([str(ratings), "--out", str(notes)],
         f"--out {notes} exists and is not a hyperparams JSON ({notes}: not valid JSON (Expecting value: line 1 "
         f"column 1 (char 0))); choose another --out"),
    ]
    for argv, message in cases:
        start = time.perf_counter()
        code = main(["tune", "--quiet", "--ratings", *argv])
        err = capsys.readouterr().err
        assert code == 2 and time.perf_counter() - start < FAST, (argv, code, err)
        assert err.splitlines() == [f"cfn tune: error: {message}"], err
    assert notes.read_text() == "mine" and not list(tmp_path.rglob(".cfn_tune_*"))


def test_unreachable_addresses_fail_within_seconds(tmp_path):
    """Nothing listening, or a server that is not a Ray cluster (Ray itself retries for minutes on both)."""
    pytest.importorskip("ray", reason="the 'tune' extra (ray[tune]) is not installed")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()                                        # accepts connections, never answers
    try:
        for address, says in (("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1 (Connection refused)"),
                              (f"127.0.0.1:{silent.getsockname()[1]}", "does not answer as a Ray cluster")):
            code, out, err, seconds = _cfn_tune(tmp_path, "--address", address)
            assert code == 1 and seconds < FAST, (address, code, seconds, err)
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"cfn tune: error: --address {address}: ") \
                and says in lines[0], err
    finally:
        silent.close()


def test_ray_client_address_without_its_package_names_the_extra(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the 'tune' extra (ray[tune]) is not installed")
    monkeypatch.setitem(sys.modules, "grpc", None)      # Ray Client's package (ray[client]) missing
    code, out, err, seconds = _cfn_tune(tmp_path, "--address", "ray://127.0.0.1:10001")
    assert code == 1 and seconds < FAST
    assert err.splitlines() == ['cfn tune: error: --address ray://127.0.0.1:10001 needs Ray Client, whose package '
                                'grpcio (ray[client]) is not installed; install the extra: pip install '
                                '"cfn_fast[tune]" (ray[tune,client] and optuna)'], err


def test_the_tune_extra_brings_ray_client():
    """``ray://`` addresses need ``ray[client]``: the ``tune`` extra installs it."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    line = next(line for line in text.splitlines() if line.startswith("tune = ["))
    assert '"ray[tune,client]>=' in line, line


def test_ctrl_c_exits_130_naming_the_partial_result(ray_cluster, tmp_path):
    """Ctrl-C in a search (a child ``cfn tune --json --quiet`` joining the test's Ray by address): exit 130; one
    error line naming the file that keeps the trials that had finished; --out untouched; stdout one JSON object."""
    ratings = _ratings_csv(tmp_path / "r.csv", shape=(400, 250, 12_000))
    out = tmp_path / "hyperparams_r.json"
    address = ray_cluster.get_runtime_context().gcs_address
    child = subprocess.Popen(
        [sys.executable, "-m", "cfn_fast.cli", "tune", "--ratings", str(ratings), "--out", str(out), "--trials",
         "12", "--algo", "random", "--epochs", "30", "--hidden", "8", "--address", address, "--json", "--quiet"],
        cwd=TESTS, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_at_a_terminal)
    lines: list[str] = []
    first_trial_ended = threading.Event()

    def read_stderr() -> None:
        for line in child.stderr:
            lines.append(line)
            if line.startswith("tune: trial 1/12 ended"):
                first_trial_ended.set()
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert first_trial_ended.wait(240), "".join(lines)[-3000:]
        child.send_signal(signal.SIGINT)
        stdout = child.stdout.read()
        code = child.wait(120)
    finally:
        if child.poll() is None:
            child.kill()
    reader.join(10)
    err = "".join(lines)
    assert code == 130, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("cfn tune: error:")]
    partial = tmp_path / "hyperparams_r.partial.json"
    assert len(error_lines) == 1 and error_lines == [err.splitlines()[-1]], err[-3000:]
    assert error_lines[0].startswith("cfn tune: error: interrupted (Ctrl-C): ") and str(partial) in error_lines[0] \
        and f"{out} unchanged" in error_lines[0], error_lines
    assert "Traceback" not in err, err[-3000:]
    result = json.loads(stdout)                          # the whole of stdout: one JSON object
    assert result["exit_code"] == 130 and result["type"] == "SearchInterrupted"
    assert not out.exists()
    saved = json.loads(partial.read_text())
    assert saved["partial"] is True and saved["tune"]["interrupted"] and saved["tune"]["trials_requested"] == 12
    trials = saved["methods"]["I-CFN"]["trials"]
    assert 1 <= len(trials) < 12 and all(t["epochs"] == 30 and t["validation_rmse"] for t in trials)
