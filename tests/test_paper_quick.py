"""`cfn bench paper --quick` end to end on a small synthetic set: report, figures, stored hyper-parameters."""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from cfn_fast import cli
from cfn_fast.tools.paper import published
from cfn_fast.tools.paper.methods import PRESETS, TABLE1_METHODS, method_table, sample_params
from cfn_fast.tools.paper.search import load_store, save_store, store_path

SHAPE = ["150", "90", "3000"]
NUMBER = re.compile(r"\d\.\d{4}")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    empty = tmp_path_factory.mktemp("nodata")
    argv = ["bench", "paper", "--quick", "--data-dir", str(empty), "--out", str(out), "--synthetic", *SHAPE,
            "--quiet", "--json"]
    return out, empty, argv


def run_cli(argv: list[str]) -> dict:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(argv) == 0
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick_result(quick_run):
    return run_cli(quick_run[2])


def test_report_and_figures_exist(quick_run, quick_result):
    out = quick_run[0]
    assert quick_result["quick"] is True and not quick_result["failures"]
    report = (out / "report.md").read_text()
    for heading in ("## Table 1", "## Table 2", "## Table 3", "## Figures", "## Non-linearity", "## Protocol"):
        assert heading in report, heading
    names = {p.name for p in out.glob("*.png")}
    key = quick_result["datasets"][0]
    assert key.startswith("synthetic")
    for stem in ("table1", "figure3", "figure4", "figure5"):
        assert f"{stem}_{key}.png" in names
        assert (out / f"{stem}_{key}.png").stat().st_size > 5000
    assert json.loads((out / "results.json").read_text())["meta"]["quick"] is True


def test_table1_rows_hold_numbers(quick_run, quick_result):
    report = (quick_run[0] / "report.md").read_text()
    table1 = report.split("## Table 1")[1].split("\n\n")[1]
    for name in TABLE1_METHODS:
        row = next(line for line in table1.splitlines() if line.startswith(f"| {name} |"))
        assert NUMBER.search(row.split("|")[2]), row
    rows = quick_result["table1"][quick_result["datasets"][0]]
    assert set(rows) == set(TABLE1_METHODS)
    assert all(0.3 < r["mean"] < 2.0 for r in rows.values())


def test_table2_and_table3_hold_numbers(quick_run, quick_result):
    report = (quick_run[0] / "report.md").read_text()
    t2 = report.split("## Table 2")[1].split("## Table 3")[0]
    assert "**90/10**" in t2 and "**50/50**" in t2
    assert len(NUMBER.findall(t2)) >= 24
    t3 = report.split("## Table 3")[1].split("## Figures")[0]
    lines = [ln for ln in t3.splitlines() if ln.startswith(("| U-CFN", "| I-CFN"))]
    assert len(lines) == 2 and all("failed" not in ln for ln in lines)


def test_hyperparameters_are_stored_and_reused(quick_run, quick_result):
    out, empty, _ = quick_run
    key = quick_result["datasets"][0]
    store = load_store(store_path(out, key))
    assert store["preset"] == "quick"
    for name in ("U-CFN", "I-CFN", "I-AutoRec", "ALS-WR", "BPMF", "SVDFeature", "LLORMA", "Linear I-CFN"):
        entry = store["methods"][name]
        assert entry["validation_rmse"] > 0 and entry["search_seed"] == 0 and entry["trials"]
    # --from-json: no search, same stored values, Table 1 only
    out2 = out / "rerun"
    argv2 = ["bench", "paper", "--quick", "--data-dir", str(empty), "--out", str(out2), "--synthetic", *SHAPE,
             "--from-json", "--hyperparams-dir", str(out), "--parts", "table1", "--quiet", "--json"]
    result = run_cli(argv2)
    assert not any(out2.glob("hyperparams_*.json"))
    first = quick_result["table1"][key]
    again = result["table1"][key]
    for name in ("ALS-WR", "BPMF", "LLORMA", "I-CFN"):   # deterministic for a seed
        assert again[name]["mean"] == pytest.approx(first[name]["mean"], rel=1e-6), name


def test_store_round_trip_and_bad_files(tmp_path):
    path = save_store(tmp_path / "hyperparams_x.json", {"dataset": "x", "methods": {"A": {"params": {"k": 1}}}})
    assert load_store(path)["methods"]["A"]["params"] == {"k": 1}
    assert load_store(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_store(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"methods": {"A": {}}}))
    with pytest.raises(ValueError, match="params"):
        load_store(tmp_path / "bad2.json")


def test_search_space_sampling_is_reproducible():
    import numpy as np
    methods = method_table(PRESETS["full"], "numpy")
    for m in methods.values():
        if m.space:
            a = sample_params(m.space, np.random.default_rng(3))
            b = sample_params(m.space, np.random.default_rng(3))
            assert a == b and set(a) == set(m.space)
    assert methods["I-CFN++"].tuned_as == "I-CFN" and methods["U-CFN++"].tuned_as == "U-CFN"
    assert methods["I-CFN++ 2-layer"].tuned_as == "I-CFN 2-layer"


def test_published_numbers_are_the_papers():
    assert published.TABLE1["I-CFN"]["ml-1m"] == 0.8321
    assert published.TABLE1["U-CFN"]["ml-1m"] == 0.8574
    assert published.TABLE3["item"]["ml-1m"]["seconds"] == 123
    assert published.TABLE3["user"]["ml-20m"]["mib"] == 1044
    # the 2-layer rows (the authors' ML-1M recipe) have no published figure of their own
    assert set(published.TABLE1) == set(TABLE1_METHODS) - {"I-CFN 2-layer", "I-CFN++ 2-layer"}


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--parts", "table9", "--quiet"]) == 2
    assert "unknown part" in capsys.readouterr().err


def test_table3_worker_extrapolates_past_its_budget(tmp_path):
    from cfn_fast.tools.paper.timing import save_synthetic, time_cell
    path = save_synthetic(tmp_path / "s.npz", (300, 200, 6000))
    spec = {"source": "npz", "path": str(path), "kind": "item", "backend": "numpy", "hidden": 16, "epochs": 20,
            "budget_s": 0.001}
    result = time_cell(spec, timeout=120)
    assert "error" not in result, result
    assert result["measured"] is False and "extrapolated" in result["how"]
    assert result["seconds"] > 0 and result["peak_rss_mib"] >= result["rss_ready_mib"] > 0
    assert result["params"] == 2 * 300 * 16 + 16 + 300
