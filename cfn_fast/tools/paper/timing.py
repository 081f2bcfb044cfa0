"""Table 3: training time and peak memory of a 2-layer CFN (one hidden layer), one subprocess per cell.

Each cell runs ``python -m cfn_fast.tools.paper.timing '<json>'`` so its peak memory is its own: the
maximum resident set size of that process (``resource.getrusage``), data and model included; the
RSS after loading the data and building the model is reported beside it.  A cell whose full run
would exceed its time budget trains a probe of whole mini-batches and extrapolates to all epochs
(the report says so).  The data are a real data set folder or a synthetic set saved as ``.npz`` by
the parent (shape-matched stand-ins for ML-10M / ML-20M).  Where Linux allows it, the high-water mark
is reset after setup, so the training peak is reported apart from the data-loading peak (resetting
also resets ``getrusage``'s figure, hence the process peak is the larger of the two readings).  On Linux
``getrusage(RUSAGE_SELF).ru_maxrss`` of a freshly exec'd worker also counts its parent's RSS at fork
time, so the worker reads its own ``VmHWM`` there and ``getrusage`` only where /proc is missing.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "save_synthetic", "time_cell"]


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float | None:
    """VmHWM: peak RSS since the last reset, MiB (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2 ** 20


def save_synthetic(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """Generate a shape-matched synthetic set once and save it (ids, ratings) for the workers."""
    from cfn_fast.data.synthetic import synthetic_ratings
    r = synthetic_ratings(*shape, seed=seed, side_info=False)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, user=r.user, item=r.item, rating=r.rating, n_users=r.n_users, n_items=r.n_items)
    os.replace(tmp, path)
    return path


def _load(spec: dict[str, Any]):
    from cfn_fast.data.ratings import RatingSet
    if spec["source"] == "npz":
        with np.load(spec["path"]) as z:
            return RatingSet.from_arrays(z["user"], z["item"], z["rating"], scale=(1.0, 5.0),
                                         user_ids=np.arange(int(z["n_users"])), item_ids=np.arange(int(z["n_items"])))
    from .datasets import load
    return load(spec["key"], Path(spec["path"]))


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    from cfn_fast.backends import epoch_order
    from cfn_fast.model import CFN
    from cfn_fast.network import n_parameters
    from cfn_fast.training.trainer import learning_rate
    ratings = _load(spec)
    model = CFN(kind=spec["kind"], hidden=(int(spec["hidden"]),), epochs=0, backend=spec["backend"],
                use_side_info=False, seed=0)
    t0 = time.perf_counter()
    model.fit(ratings)                                   # preprocessing + engine, no epoch
    setup = time.perf_counter() - t0
    rss_ready = _rss_mib()
    # Linux's getrusage ru_maxrss of an exec'd child starts from its parent's RSS at fork time, so the
    # peak is read from this process's own VmHWM where available (getrusage elsewhere).
    load_peak = _hwm_mib() or _peak_mib()                # peak so far (loading + setup)
    reset = _reset_peak()                                # training peak, apart from the loading peak
    engine, p = model.engine_, model.resolved_params()
    epochs, budget = int(spec["epochs"]), float(spec["budget_s"])
    n_batches = -(-len(engine.trainable) // p["batch_size"])
    # probe: whole mini-batches of epoch 1 for at most a tenth of the budget (or one epoch)
    order = epoch_order(model.seed, 1, engine.trainable)
    lr = learning_rate(p["lr"], p["lr_decay"], 1)
    probe_batches, t0 = 0, time.perf_counter()
    while probe_batches < n_batches and (time.perf_counter() - t0) < 0.1 * budget:
        rows = order[probe_batches * p["batch_size"]:(probe_batches + 1) * p["batch_size"]]
        engine.sgd_step(rows, 1, lr)
        probe_batches += 1
    per_batch = (time.perf_counter() - t0) / max(probe_batches, 1)
    estimate = per_batch * n_batches * epochs
    if estimate <= 0.9 * budget:
        t0 = time.perf_counter()
        model.partial_fit(epochs)                        # the real thing: `epochs` full epochs
        seconds, measured, how = time.perf_counter() - t0, True, f"{epochs} epochs run"
    else:
        seconds, measured = estimate, False
        how = f"extrapolated from {probe_batches} of {n_batches} mini-batches x {epochs} epochs"
    gpu_mib = None
    # the engine says where it runs ("host" or "cuda"); getattr until every engine has ``device``
    if getattr(model.engine_, "device", None) == "cuda":  # pragma: no cover - needs a GPU
        try:
            import cupy
            gpu_mib = cupy.get_default_memory_pool().total_bytes() / 2 ** 20
        except Exception:  # noqa: BLE001 - best effort: a GPU pool figure is optional
            gpu_mib = None
    return {"seconds": seconds, "measured": measured, "how": how, "setup_seconds": setup,
            "backend": model.backend_, "params": int(n_parameters(model.engine_.get_layers())),
            "rss_ready_mib": rss_ready,
            "peak_rss_mib": max(load_peak, (_hwm_mib() if reset else None) or _peak_mib()),
            "train_peak_rss_mib": _hwm_mib() if reset else None, "gpu_pool_mib": gpu_mib,
            "n_ratings": ratings.nnz, "n_users": ratings.n_users, "n_items": ratings.n_items}


def time_cell(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one Table 3 cell in a fresh interpreter; returns its JSON result or an ``error``."""
    cmd = [sys.executable, "-m", "cfn_fast.tools.paper.timing", json.dumps(spec)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])  # the folder holding cfn_fast/
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[:300]
        return {"error": f"worker exited with {done.returncode}: {tail}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"worker printed no result: {done.stdout[-200:]!r}"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cfn_fast.tools.paper.timing '<json spec>'", file=sys.stderr)
        return 2
    print(json.dumps(_worker(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
