"""Fuzzing the engine API never crashes the interpreter (issue 21): 2,400 seeded malformed calls on the numpy and
cpu engines, in one child process (tests/_engine_fuzz_child.py) that this test watches.  Each case raises a clean
``TypeError`` / ``ValueError`` / ``IndexError`` with a one-line message, or works; a signal death fails the test
naming the case the child had announced last."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from children import TESTS, child_env  # tests/children.py

CASES, SEED = 2400, 21


def test_malformed_engine_calls_raise_clean_errors_and_never_kill_the_interpreter():
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(TESTS / "_engine_fuzz_child.py"), str(CASES), str(SEED)],
                              capture_output=True, text=True, timeout=120, env=child_env(OMP_NUM_THREADS="2"),
                              cwd=TESTS)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        last = [line for line in out.splitlines() if line.startswith("case ")][-1:]
        pytest.fail(f"the fuzzing child hung in {last[0] if last else 'its start-up'} (seed {SEED})")
    seconds = time.monotonic() - start
    lines = proc.stdout.splitlines()
    if proc.returncode < 0:
        last = [line for line in lines if line.startswith("case ")][-1:]
        pytest.fail(f"{last[0] if last else 'start-up'} (seed {SEED}) killed the interpreter: "
                    f"{signal.Signals(-proc.returncode).name}\n{proc.stderr[-1500:]}")
    unclean = [line for line in lines if line.startswith("unclean ")]
    assert not unclean, "\n".join(unclean[:20])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = lines[-1].split()
    assert summary[:3] == ["summary", "cases", str(CASES)], lines[-1]
    assert int(summary[4]) >= CASES // 2, lines[-1]          # most cases are malformed and must be refused
    assert seconds < 60, f"the fuzzing took {seconds:.0f} s"
