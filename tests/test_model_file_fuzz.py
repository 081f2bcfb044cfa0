"""Fuzzing model files never crashes the interpreter (issue 21).

At least 2,000 mutated model files (tests/_model_file_fuzz_child.py: a seeded mutator over tiny saved models, each
file re-hashed so that it passes the checksum) are loaded and used in ONE child process.  The child prints every
case before running it, so when it dies by a signal this test names the case that killed it.  Every case must
work or raise a clean exception; ``CFN.load`` must refuse a bad file with ``ModelFileError``.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from children import child_env  # tests/children.py

HERE = Path(__file__).resolve().parent
SEED = 21
RANDOM_CASES = 1950          # plus 15 targeted edits on each of the 5 base models: 2,025 files


def _died(proc: subprocess.CompletedProcess | subprocess.TimeoutExpired, code: int | None) -> str:
    stdout = proc.stdout if isinstance(proc.stdout, str) else (proc.stdout or b"").decode(errors="replace")
    stderr = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode(errors="replace")
    cases = [line for line in stdout.splitlines() if line.startswith("case ")]
    last = cases[-1][len("case "):] if cases else "(before the first case)"
    how = "timed out" if code is None else f"died by {signal.Signals(-code).name}" if code < 0 else \
        f"exited with status {code}"
    return f"the fuzzing child {how} in case {last}; its stderr ends: {stderr[-1500:]}"


def test_two_thousand_mutated_model_files_never_crash_the_interpreter(tmp_path):
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / "_model_file_fuzz_child.py"), str(tmp_path), str(SEED),
                               str(RANDOM_CASES)], capture_output=True, text=True, timeout=300, env=child_env(),
                              cwd=HERE)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(_died(exc, None))
    if proc.returncode != 0:
        pytest.fail(_died(proc, proc.returncode))
    lines = proc.stdout.splitlines()
    bad = [line for line in lines if line.startswith("bad ")]
    assert not bad, f"{len(bad)} case(s) ended in an unclean error:\n" + "\n".join(bad[:20])
    summary = json.loads(lines[-1][len("summary "):])
    cases = sum(line.startswith("case ") for line in lines)
    assert summary["cases"] == cases >= 2000
    # the mutator reaches both sides: files refused, and files still valid that are used every way
    assert summary.get("refused", 0) >= 1000 and summary.get("used", 0) >= 50, summary
    print(f"{cases} mutated files in {time.perf_counter() - start:.1f} s: {summary}")
