"""The GPU check (bench/gpu_check.sh + bench/gpu_stages.py) without a GPU: its time budget, and one
stage end to end on tiny shapes with the kernels in host emulation (JSON lines, then the table)."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from children import child_env  # tests/children.py

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _stage_budgets() -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^stage (\w+)\s+(\d+)", SCRIPT.read_text(), re.M)}


def test_stage_budgets_fit_in_eight_minutes(monkeypatch):
    """Every stage has its own timeout; with the table they sum to at most 7 minutes (8 allowed)."""
    budgets = _stage_budgets()
    # the script puts the checkout first on sys.path for its own runs: undo that here, or later tests
    # (a spawned worker) would import the uncompiled checkout instead of the installed package
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("gpu_stages", ROOT / "bench" / "gpu_stages.py")
    gpu_stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_stages)
    assert list(budgets) == list(gpu_stages.STAGES), "gpu_check.sh must run every stage, in order of value"
    table = int(re.search(r"timeout (\d+) \$PY bench/gpu_stages.py table", SCRIPT.read_text()).group(1))
    assert sum(budgets.values()) + table <= 420, budgets
    assert 'timeout -k 5 "$budget"' in SCRIPT.read_text()


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: no host emulation")
def test_a_stage_appends_json_lines_and_the_table_reads_them(tmp_path):
    results = tmp_path / "gpu_check.jsonl"
    env = child_env()   # + the emulator
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_stages.py"), "ml20m", "--smoke", "--emulate",
           "--results", str(results)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r.get("what") for r in records[:1]] == ["data"]
    timed = [r for r in records if r.get("run") == "ML-20M I-CFN" and "seconds" in r]
    assert len(timed) == 1 and timed[0]["epochs"] == 2 and timed[0]["finite"] and timed[0]["seconds"] > 0
    assert timed[0]["plan_mib"]["total"] > 0 and records[-1]["status"] == "done"
    table = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_stages.py"), "table", "--results",
                            str(results)], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    text = (tmp_path / "gpu_table.md").read_text()
    assert "| ML-20M I-CFN |" in text
