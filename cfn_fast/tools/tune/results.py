"""What a search leaves: each trial as the controller saw it end, the hyperparams store (the paper bench's schema),
the partial result of an interrupted search, and the progress figure."""
from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cfn_fast.tools.paper.methods import PRESETS
from cfn_fast.tools.paper.search import FORMAT

from .space import TUNED, method_name
from .trainable import METRIC

__all__ = ["SearchInterrupted", "best_so_far", "hyperparams_store", "is_complete", "make_trial_log",
           "partial_store", "progress_plot", "stored_trial", "trial_history"]


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a search; the message says what was saved where (``cfn tune`` exits with 130)."""


def _silent(line: str) -> None:
    """The log of an unpickled trial log (the caller's log function is not pickled with it)."""


def make_trial_log(tune: Any, log: Callable[[str], None], requested: int) -> Any:
    """A Tune callback keeping, per trial, its worker restarts after a failure, the nodes it ran on, the settings
    it trained with (PBT changes them) and how it ended; ``log`` gets one line per finished trial."""

    class TrialLog(tune.Callback):
        def __init__(self) -> None:
            self.attempts: dict[str, dict[str, Any]] = {}
            self.ends: dict[str, dict[str, Any]] = {}
            self.log = log

        def __getstate__(self) -> dict[str, Any]:
            # Ray pickles its callbacks with the Tuner: the caller's log function (a logger with a lock, a closure)
            # need not be picklable.
            return {"attempts": self.attempts, "ends": self.ends}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.attempts, self.ends, self.log = state["attempts"], state["ends"], _silent

        def _end(self, trial: Any, error: str | None) -> None:
            metrics = dict(trial.last_result or {})
            self.ends[trial.trial_id] = {"config": dict(trial.config), "metrics": metrics, "error": error}
            rmse = metrics.get(METRIC)
            score = f"validation RMSE {rmse:.4f}" if error is None and _finite(rmse) else \
                (error or metrics.get("error") or "no score")
            self.log(f"tune: trial {len(self.ends)}/{requested} ended after epoch {metrics.get('epoch')}: {score}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial, None)

        def _entry(self, trial: Any) -> dict[str, Any]:
            return self.attempts.setdefault(trial.trial_id, {"retries": 0, "nodes": [], "errors": [], "schedule": []})

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            node = result.get("node_ip")
            entry = self._entry(trial)
            if node and node not in entry["nodes"]:
                entry["nodes"].append(node)
            params = {name: float(value) for name, value in (result.get("config") or {}).items()
                      if name in TUNED}
            if not entry["schedule"] or entry["schedule"][-1]["params"] != params:   # PBT changed the settings
                entry["schedule"].append({"from_epoch": result.get("epoch"), "params": params})

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._entry(trial)["retries"] += 1

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._entry(trial)["errors"].append(str(getattr(trial, "error_file", "") or "error"))
            self._end(trial, f"failed after {self._entry(trial)['retries']} retries, see {trial.error_file}")

    return TrialLog()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def trial_history(results: Any, trial_log: Any, kinds: tuple[str, ...], started: float,
                  epochs: int, interrupted: bool) -> list[dict[str, Any]]:
    """One row per trial, in the order trials finished: the controller's view of each trial as the callback saw
    it end (a reused actor may report a stale ``trial_id`` in its metrics), else Ray's result grid (Ray Client,
    where callbacks run remotely).  A trial that ended before its last epoch without an error is *stopped* (not
    scored) when the search was ``interrupted`` (Ctrl-C), else a failed trial: only the user's stop makes a search
    incomplete."""
    ends = list(trial_log.ends.items()) or [
        ((r.metrics or {}).get("trial_id"), {"config": r.config or {}, "metrics": r.metrics or {},
                                              "error": None if r.error is None else str(r.error)})
        for r in (results or [])]
    history = []
    for trial_id, end in ends:
        metrics, config = end["metrics"], end["config"]
        rmse = metrics.get(METRIC)
        ended_early = end["error"] is None and not metrics.get("diverged") and (metrics.get("epoch") or 0) < epochs
        stopped = ended_early and interrupted
        ok = end["error"] is None and _finite(rmse) and not metrics.get("diverged") and not ended_early
        error = None if ok else (
            f"stopped after epoch {metrics.get('epoch') or 0} of {epochs}" if stopped else
            f"ended after epoch {metrics.get('epoch') or 0} of {epochs} without an error" if ended_early else
            metrics.get("error") or " ".join(str(end["error"] or "no result").split())[:200])
        params = {name: float(config[name]) for name in TUNED if name in config}   # exactly what trained
        attempt = trial_log.attempts.get(trial_id, {})
        history.append({
            "trial_id": trial_id, "kind": config.get("kind", kinds[0]),
            "params": params, "validation_rmse": float(rmse) if ok else None,
            "epochs": metrics.get("epoch"), "seconds": round(float(metrics.get("time_total_s", 0.0)), 2),
            "finished_s": float(metrics.get("timestamp", time.time())) - started,
            "node_ip": metrics.get("node_ip"), "node_id": metrics.get("node_id"), "pid": metrics.get("pid"),
            "backend": metrics.get("backend"), "threads": metrics.get("threads"), "nodes": attempt.get("nodes", []),
            "restarts": attempt.get("retries", 0),
            "schedule": attempt.get("schedule", []), "stopped": stopped,
            "resumed_from_epoch": metrics.get("resumed_from"), "error": error})
    history.sort(key=lambda t: t["finished_s"])
    return history


def is_complete(history: list[dict[str, Any]], trials: int) -> bool:
    """Every requested trial ran all its epochs or failed (False when the search was stopped)."""
    return len(history) == trials and not any(t["stopped"] for t in history)


def stored_trial(trial: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "validation_rmse", "seconds", "epochs", "trial_id", "node_ip", "node_id", "pid", "threads",
            "nodes", "restarts", "resumed_from_epoch")
    row = {k: trial[k] for k in keys}
    if len(trial["schedule"]) > 1:                   # population-based training changed its settings
        row["schedule"] = trial["schedule"]
    if trial["error"]:
        row["error"] = trial["error"]
    return row


def best_so_far(history: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float | None]]:
    best = math.inf
    for trial in history:
        if trial["validation_rmse"] is not None:
            best = min(best, trial["validation_rmse"])
        yield trial, (best if math.isfinite(best) else None)


def hyperparams_store(existing, dataset, ratings, entries, split_seed, test_ratio, validation_ratio, hidden, epochs,
                      batch_size) -> dict[str, Any]:
    full = PRESETS["full"]
    preset = "full" if (tuple(hidden), epochs, batch_size) == (full.cfn_hidden, full.cfn_epochs, 35) else "custom"
    store = dict(existing) if existing else {}
    store.update({"dataset": dataset, "format": FORMAT, "preset": store.get("preset", preset),
                  "created": _dt.datetime.now().isoformat(timespec="seconds"),
                  "protocol": {"split_seed": split_seed, "test_ratio": test_ratio,
                               "validation_ratio": validation_ratio,
                               "score": "validation RMSE after the last epoch / iteration",
                               "note": "validation carved from the training part of the split; the chosen settings "
                                       "refitted on the whole training part and scored once on the test part"},
                  "n_ratings": ratings.nnz})
    store["methods"] = {**store.get("methods", {}), **entries}
    return store


def partial_store(history: list[dict[str, Any]], kinds: tuple[str, ...], dataset: str, algo: str, trials: int,
                  command: str | None) -> dict[str, Any]:
    """The trials of an interrupted search that ran all their epochs, each kind's best so far: not refitted, no
    test RMSE (``cfn bench paper --from-json`` reads only ``hyperparams_<dataset>.json``, never this file)."""
    finished = [t for t in history if not t["stopped"]]
    methods = {}
    for kind in kinds:
        mine = [t for t in finished if t["kind"] == kind]
        scored = [t for t in mine if t["validation_rmse"] is not None]
        if mine:
            best = min(scored, key=lambda t: t["validation_rmse"]) if scored else None
            methods[method_name(kind)] = {"params": best["params"] if best else {},
                                          "validation_rmse": best["validation_rmse"] if best else None,
                                          "n_trials": len(mine), "trials": [stored_trial(t) for t in mine]}
    return {"dataset": dataset, "format": FORMAT, "partial": True,
            "note": "interrupted search: the trials that ran all their epochs; not refitted, no test RMSE",
            "created": _dt.datetime.now().isoformat(timespec="seconds"), "methods": methods,
            "tune": {"algo": algo, "command": command, "trials": len(finished), "trials_requested": trials,
                     "complete": False, "interrupted": True}}


def progress_plot(history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Best validation RMSE so far against trials finished and against wall time (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = [(i + 1, t["finished_s"], b) for i, (t, b) in enumerate(best_so_far(history)) if b is not None]
    if not points:
        return None
    n, seconds, best = zip(*points)
    scored = [(i + 1, t) for i, t in enumerate(history) if t["validation_rmse"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    left.step(n, best, where="post")
    left.scatter([i for i, _ in scored], [t["validation_rmse"] for _, t in scored], s=12, alpha=0.5)
    left.set_xlabel("trials finished")
    left.set_ylabel("validation RMSE (dots: each trial, line: best so far)")
    right.step(seconds, best, where="post")
    right.scatter([t["finished_s"] for _, t in scored], [t["validation_rmse"] for _, t in scored], s=12, alpha=0.5)
    right.set_xlabel("seconds since the search started")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
