"""Profiling: per-phase tables, Chrome traces, NVTX ranges (through a stand-in ``nvtx`` module)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from children import TESTS, child_env  # tests/children.py

from cfn_fast import CFN, synthetic_ratings
from cfn_fast.cli import main
from cfn_fast.profiling import DOMAIN, Nvtx, Profile, ProfiledEngine, cuda_compile_options

ROOT = Path(__file__).resolve().parents[1]


class StandInNvtx:
    """Records push_range / pop_range calls like the ``nvtx`` package receives them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str]] = []

    def push_range(self, message=None, color=None, domain=None, **kwargs):
        self.calls.append(("push", message, domain))

    def pop_range(self, domain=None):
        self.calls.append(("pop", None, domain))


def assert_balanced(calls: list[tuple[str, str | None, str]]) -> list[str]:
    """Every push is closed by a pop, properly nested, all in the cfn_fast domain; the pushed names."""
    depth, names = 0, []
    for kind, name, domain in calls:
        assert domain == DOMAIN
        depth += 1 if kind == "push" else -1
        assert depth >= 0, "a range was closed that was never opened"
        if kind == "push":
            names.append(name)
    assert depth == 0, "a range was left open"
    return names


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings(300, 200, 8000, seed=1)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_profile_table_accounts_for_the_epoch(ratings, backend):
    model = CFN("item", (16,), 2, backend=backend, batch_size=40, profile=True).fit(ratings)
    summary = model.profile_.as_dict()
    n_batches = -(-ratings.n_items // 40)
    assert summary["epochs"] == 2 and summary["backend"] == backend
    rows = {row["phase"]: row for row in summary["phases"]}
    first = "gather" if backend == "cpu" else "batch_setup"
    assert rows[first]["calls"] == 2 * n_batches
    assert abs(sum(r["total_s"] for r in rows.values()) - summary["phase_seconds"]) < 1e-12
    # the phases are timed inside the epoch: they cannot exceed it and cover most of it
    assert 0.5 < summary["phase_coverage"] <= 1.0 + 1e-6
    for row in rows.values():
        assert row["mean_ms"] == pytest.approx(1e3 * row["total_s"] / row["calls"])
        assert row["share"] == pytest.approx(row["total_s"] / summary["epoch_seconds"])
    text = model.profile_.format_table()
    assert first in text and "sum of phases" in text


def test_profiling_changes_no_result(ratings):
    plain = CFN("user", (12, 8), 2, backend="cpu", batch_size=32).fit(ratings)
    profiled = CFN("user", (12, 8), 2, backend="cpu", batch_size=32, profile=True).fit(ratings)
    assert plain.profile_ is None
    for a, b in zip(plain.layers_, profiled.layers_):
        np.testing.assert_array_equal(a.weight, b.weight)
    phases = {row["phase"] for row in profiled.profile_.table()}
    assert {"dense_forward", "dense_backward", "encode", "output", "input_update"} <= phases


def test_partial_fit_adds_to_the_profile(ratings):
    model = CFN("item", (8,), 1, backend="cpu", profile=True).fit(ratings)
    model.partial_fit(2)
    assert [e for e, _, _ in model.profile_.epochs] == [1, 2, 3]


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_nvtx_ranges_open_and_close_in_pairs(ratings, backend):
    model = CFN("item", (8,), 2, backend=backend, batch_size=50).fit(ratings)
    fake = StandInNvtx()
    engine = ProfiledEngine(model.engine_, nvtx=Nvtx(fake))
    engine.train_epoch(3, 0.01)
    names = assert_balanced(fake.calls)
    assert names[0] == "epoch 3"
    n_batches = -(-ratings.n_items // 50)
    if backend == "cpu":
        assert names.count("mini-batch") == n_batches
        assert names.count("gather") == n_batches and names.count("output") == n_batches
    else:
        assert names.count("forward") == n_batches
    # one range per timed phase, the epoch and (cpu) the mini-batches and the epoch's final flush of
    # the deferred input update (timed into the last batch's input_update)
    assert len(names) == len(engine.profile.events) + 1 + (n_batches + 1 if backend == "cpu" else 0)


def test_without_the_nvtx_package(monkeypatch, ratings):
    monkeypatch.setitem(sys.modules, "nvtx", None)          # import nvtx raises ImportError
    nvtx = Nvtx()
    assert not nvtx.enabled
    with nvtx.range("nothing"):
        nvtx.push("x")
        nvtx.pop()
    model = CFN("item", (8,), 1, backend="cpu", profile=True).fit(ratings)
    assert model.profile_.table()


def test_nvtx_switched_off_by_environment(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", StandInNvtx())
    assert Nvtx().enabled
    monkeypatch.setenv("CFN_FAST_NVTX", "0")
    assert not Nvtx().enabled


def test_chrome_trace_is_valid_json_with_one_event_per_phase_per_batch(tmp_path, ratings):
    model = CFN("item", (8,), 2, backend="cpu", batch_size=64, profile=True).fit(ratings)
    path = model.profile_.write_trace(tmp_path / "run.trace.json")
    trace = json.loads(path.read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    epochs = [e for e in events if e["cat"] == "epoch"]
    phases = [e for e in events if e["cat"] == "phase"]
    assert [e["name"] for e in epochs] == ["epoch 1", "epoch 2"]
    assert len(phases) == len(model.profile_.events)
    n_batches = -(-ratings.n_items // 64)
    for name in ("gather", "sort", "encode", "output", "input_update"):
        batches = sorted((e["args"]["epoch"], e["args"]["batch"]) for e in phases if e["name"] == name)
        assert batches == [(epoch, b) for epoch in (1, 2) for b in range(n_batches)]
    for e in events:
        assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["pid"], int) and isinstance(e["tid"], int)
    # every phase lies inside its epoch (same clock: Python's monotonic and the kernel's timers)
    span = {e["args"]["epoch"]: (e["ts"], e["ts"] + e["dur"]) for e in epochs}
    for e in phases:
        lo, hi = span[e["args"]["epoch"]]
        assert lo - 1 <= e["ts"] and e["ts"] + e["dur"] <= hi + 1


def test_cli_fit_profile_and_trace(tmp_path, capsys, ratings):
    data = tmp_path / "r.npz"
    np.savez(data, user=ratings.user_ids[ratings.user], item=ratings.item_ids[ratings.item], rating=ratings.rating)
    trace = tmp_path / "t.json"
    code = main(["fit", "--ratings", str(data), "--hidden", "8", "--epochs", "1", "--backend", "cpu",
                 "--profile", "--trace", str(trace), "--json"])
    out = json.loads(capsys.readouterr().out)
    # the default blend: one profile of every network it trained (four candidates, then the refits)
    assert code == 0 and out["profile"]["backend"] == "cpu" and out["trace"] == str(trace)
    assert out["profile"]["epochs"] == 4 + len(out["blend"]["members"])
    assert {row["phase"] for row in out["profile"]["phases"]} >= {"gather", "encode", "output"}
    json.loads(trace.read_text())
    code = main(["fit", "--ratings", str(data), "--hidden", "8", "--epochs", "1", "--backend", "cpu", "--profile"])
    text = capsys.readouterr().out
    assert code == 0 and "share" in text and "input_update" in text


def test_profile_parameter_is_checked(ratings):
    with pytest.raises(ValueError, match="profile"):
        CFN("item", (8,), 1, profile="yes").fit(ratings)
    assert CFN(profile=True).get_params()["profile"] is True


def test_profile_of_an_empty_run_and_unknown_engine():
    assert Profile("cpu").as_dict()["phase_coverage"] == 0.0

    class Other:
        name = "tpu"
    with pytest.raises(ValueError, match="tpu"):
        ProfiledEngine(Other())


def test_lineinfo_switch(monkeypatch):
    monkeypatch.delenv("CFN_FAST_CUDA_LINEINFO", raising=False)
    assert cuda_compile_options(("-std=c++17",)) == ("-std=c++17",)
    monkeypatch.setenv("CFN_FAST_CUDA_LINEINFO", "1")
    assert cuda_compile_options(("-std=c++17",)) == ("-std=c++17", "-lineinfo")


def test_cuda_kernel_events_in_host_emulation():
    """The CUDA engine's profiled epoch on the emulated kernels (tests/cuda_emulator's fake CuPy): one timed
    range per kernel launch, graphs off while profiling and back on after, results unchanged."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the kernels cannot be emulated here")
    script = textwrap.dedent("""
        import numpy as np
        import cuda_emulator as g
        g.install_fake_cupy()
        from cfn_fast.backends.base import TrainConfig
        from cfn_fast.backends.cuda_backend import CudaEngine
        from cfn_fast.network import init_layers
        from cfn_fast.profiling import Nvtx, ProfiledEngine
        from test_profiling import StandInNvtx, assert_balanced
        samples, side = g.random_problem(np.random.default_rng(0), 12, 17, 0.3, 2)
        layers = init_layers(17, (6,), 2, seed=0)
        cfg = TrainConfig(batch_size=5, seed=3)
        kw = dict(graphs=True, block_threads=64, blocks_per_sm=2, min_per_warp=8)
        plain, profiled = CudaEngine(layers, cfg, samples, side, **kw), CudaEngine(layers, cfg, samples, side, **kw)
        fake = StandInNvtx()
        wrapped = ProfiledEngine(profiled, nvtx=Nvtx(fake))
        for epoch in (1, 2):
            assert plain.train_epoch(epoch, 0.05) == wrapped.train_epoch(epoch, 0.05)
        assert profiled.uses_graphs and profiled._kernels is plain._kernels
        names = assert_balanced(fake.calls)
        table = {row["phase"]: row["calls"] for row in wrapped.profile.table()}
        assert table["cfn_batch_setup"] == 2 * 3 and table["cfn_encode"] == 6 and table["cfn_output"] == 6
        assert names.count("cfn_output") == 6 and names[0] == "epoch 1"
        for a, b in zip(plain.get_layers(), profiled.get_layers()):
            np.testing.assert_array_equal(a.weight, b.weight)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=TESTS, timeout=600,
                            env=child_env())   # the emulator and this module from tests/
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
