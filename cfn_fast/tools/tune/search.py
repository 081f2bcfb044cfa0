"""``tune_cfn``: a CFN hyper-parameter search on Ray Tune, refit of the chosen settings, result JSON.

Protocol (the paper bench's, :mod:`cfn_fast.tools.paper.search`): split ``split_seed`` is made as Table 1
makes it; ``validation_ratio`` of its training ratings are carved out as the validation part; every
trial trains on the rest and is scored on the validation part at its final epoch.  The best trial's
settings are then refitted on the whole training part and scored once on the test part; the test
part is read by nothing else.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cfn_fast.data.ratings import RatingSet
from cfn_fast.data.split import train_test_split, train_validation_test_split
from cfn_fast.tools.paper.methods import PRESETS
from cfn_fast.tools.paper.search import FORMAT, load_store, save_store

from .extra import require
from .space import KINDS, TUNED, clip_to_space, first_points, method_name, tune_space
from .trainable import METRIC, TrialSetup, run_trial

__all__ = ["ALGORITHMS", "tune_cfn"]

ALGORITHMS = ("random", "nsga2", "pbt")


def tune_cfn(ratings: RatingSet, *, out: str | Path, kind: str = "item", trials: int = 24, algo: str = "nsga2",
             address: str | None = None, num_cpus: int | None = None, cpus_per_trial: float = 1.0,
             gpus_per_trial: float = 0.0, dataset: str | None = None, hidden: tuple[int, ...] = (600,),
             epochs: int = 20, batch_size: int = 35, backend: str = "auto", split_seed: int = 1,
             test_ratio: float = 0.1, validation_ratio: float = 0.1, seed: int = 0, search_seed: int = 0,
             population: int | None = None, pbt_interval: int = 4, max_failures: int = 3,
             storage: str | Path | None = None, epoch_hook: Callable[[int], None] | None = None,
             progress: bool = True, command: str | None = None,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Search CFN settings on Ray Tune; write ``out`` (hyperparams JSON) and a progress plot beside it.

    ``kind``: ``"item"``, ``"user"`` or ``"auto"`` (the kind is searched too; each kind's best gets
    its entry).  ``algo``: ``"random"``, ``"nsga2"`` (Optuna's NSGA-II, ``population`` per
    generation, default ``max(4, trials // 3)``) or ``"pbt"`` (``trials`` models trained together,
    the worst quarter copying the best quarter every ``pbt_interval`` epochs, settings perturbed).
    ``address``: None starts Ray inside this process (``num_cpus`` CPUs, default all); ``"auto"``
    or ``"ray://HOST:PORT"`` joins that cluster.  A trial whose worker dies is retried from its last
    epoch's checkpoint up to ``max_failures`` times.  ``storage``: where Ray keeps trial state and
    checkpoints (a folder all nodes can reach; default a temporary folder beside ``out``, removed
    afterwards).  ``epoch_hook`` is called in the trial before each epoch (fault injection).

    Returns the stored JSON object (``methods[...]['test_rmse']`` holds each refit's test RMSE).
    """
    kinds = _check_args(kind, trials, algo, cpus_per_trial, gpus_per_trial, epochs, population, pbt_interval,
                        max_failures, ratings)
    out = Path(out).resolve()
    existing = _existing_store(out)
    dataset = dataset or (existing or {}).get("dataset") or out.stem.removeprefix("hyperparams_")
    train, validation, _ = train_validation_test_split(ratings, test_ratio, validation_ratio, seed=split_seed)
    log(f"tune: {algo}, {trials} trial(s) of {'/'.join(method_name(k) for k in kinds)} on {train.nnz:,} training / "
        f"{validation.nnz:,} validation ratings of split {split_seed}")
    setup = TrialSetup(train, validation, kind, tuple(hidden), int(epochs), int(batch_size), backend, int(seed),
                       float(cpus_per_trial), epoch_hook)
    started = time.time()
    run = _run_search(setup, kinds, trials, algo, address, num_cpus, cpus_per_trial, gpus_per_trial, population,
                      pbt_interval, max_failures, storage, out, search_seed, progress)
    wall = time.time() - started
    history = _trial_history(run["results"], run["trial_log"], kinds, started)
    ran_on = sorted({t["backend"] for t in history if t.get("backend")})     # what "auto" resolved to
    fixed = {"hidden": list(hidden), "epochs": int(epochs), "batch_size": int(batch_size),
             "backend": ran_on[0] if len(ran_on) == 1 else backend, "side_info": False}
    entries: dict[str, Any] = {}
    for k in kinds:
        mine = [t for t in history if t["kind"] == k]
        scored = [t for t in mine if t["validation_rmse"] is not None]
        if not scored:
            log(f"tune: no {method_name(k)} trial succeeded"
                + (f"; last error: {mine[-1]['error']}" if mine else " (none ran: more --trials)"))
            continue
        best = min(scored, key=lambda t: t["validation_rmse"])
        log(f"tune: refitting {method_name(k)} {best['params']} on all {train.nnz + validation.nnz:,} training "
            f"ratings, scoring the test part once")
        test_rmse, refit_seconds = _refit_and_test(ratings, k, best["params"], hidden, epochs, batch_size, backend,
                                                   seed, split_seed, test_ratio)
        entries[method_name(k)] = {
            "params": best["params"], "validation_rmse": best["validation_rmse"], "search_seed": int(search_seed),
            "n_trials": len(mine), "fixed": fixed, "trials": [_stored_trial(t) for t in mine],
            "test_rmse": test_rmse, "refit_seconds": round(refit_seconds, 2)}
    if not entries:
        errors = [t["error"] for t in history if t["error"]]
        raise RuntimeError(f"every trial failed; last error: {errors[-1] if errors else 'no trial ran'}")
    chosen = min(entries, key=lambda name: entries[name]["validation_rmse"])
    plot = _plot(history, out, f"{dataset}: {algo}, {len(history)} trials")
    store = _store(existing, dataset, ratings, entries, split_seed, test_ratio, validation_ratio, hidden, epochs,
                   batch_size)
    store["tune"] = {
        "algo": algo, "command": command, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "chosen": chosen, "test_rmse": entries[chosen]["test_rmse"], "wall_seconds": round(wall, 1),
        "trials": len(history), "trials_requested": trials, "complete": _complete(history, trials),
        "address": address or "embedded", "cluster": run["cluster"],
        "nodes": sorted({t["node_ip"] for t in history if t.get("node_ip")}),
        "node_ids": sorted({t["node_id"] for t in history if t.get("node_id")}),
        "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, "max_failures": max_failures,
        "retried_trials": sum(1 for t in history if t["restarts"]), "population": run.get("population"),
        "versions": run["versions"], "plot": plot.name if plot else None,
        "best_so_far": [{"trial": i + 1, "seconds": round(t["finished_s"], 1), "validation_rmse": b}
                        for i, (t, b) in enumerate(_best_so_far(history))]}
    save_store(out, store)
    log(f"tune: {chosen} validation RMSE {entries[chosen]['validation_rmse']:.4f}, test RMSE "
        f"{entries[chosen]['test_rmse']:.4f}; {len(history)} trials in {wall:.0f}s; wrote {out}"
        + (f" and {plot}" if plot else ""))
    return store


# ----------------------------------------------------------------------------- checks
def _check_args(kind, trials, algo, cpus, gpus, epochs, population, pbt_interval, max_failures, ratings):
    if not isinstance(ratings, RatingSet):
        raise TypeError(f"ratings must be a RatingSet, got {type(ratings).__name__}")
    if kind not in (*KINDS, "auto"):
        raise ValueError(f"kind must be 'item', 'user' or 'auto', got {kind!r}")
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {', '.join(ALGORITHMS)}, got {algo!r}")
    for name, value, low in (("trials", trials, 1), ("epochs", epochs, 1), ("pbt_interval", pbt_interval, 1),
                             ("max_failures", max_failures, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if algo == "pbt" and trials < 2:
        raise ValueError("pbt needs a population: trials must be >= 2")
    if population is not None and (not isinstance(population, int) or population < 2):
        raise ValueError(f"population must be an integer >= 2, got {population!r}")
    if not (isinstance(cpus, (int, float)) and cpus > 0):
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus!r}")
    if not (isinstance(gpus, (int, float)) and 0 <= gpus and (gpus <= 1 or float(gpus).is_integer())):
        raise ValueError(f"gpus_per_trial must be a fraction in [0, 1] or a whole number of GPUs, got {gpus!r}")
    return KINDS if kind == "auto" else (kind,)


def _existing_store(out: Path) -> dict[str, Any] | None:
    """An existing result at ``out`` is updated, never clobbered: its other methods are kept."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a JSON file name, e.g. {out / 'hyperparams_mydata.json'}")
    if not out.exists():
        return None
    try:
        return load_store(out)
    except ValueError as exc:
        raise ValueError(f"{out} exists and is not a hyperparams JSON ({exc}); choose another --out") from None


# ----------------------------------------------------------------------------- Ray
def _run_search(setup: TrialSetup, kinds, trials, algo, address, num_cpus, cpus_per_trial, gpus_per_trial,
                population, pbt_interval, max_failures, storage, out, search_seed, progress) -> dict[str, Any]:
    ray = require("ray")
    tune = require("ray.tune")
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            # Ray runs workers at nice 15 by default: on a shared machine trials then crawl behind every
            # other process; the embedded cluster runs them at normal priority (RAY_worker_niceness wins).
            system = {} if "RAY_worker_niceness" in os.environ else {"worker_niceness": 0}
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                     _system_config=system)
        else:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    # num_to_keep bounds the disk (a checkpoint per epoch); the experiment snapshots it forces are cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cleanup = storage is None
    storage = Path(storage) if storage is not None else Path(tempfile.mkdtemp(prefix=".cfn_tune_", dir=out.parent))
    try:
        versions = {"ray": ray.__version__}
        search_alg, scheduler, extra = _algorithm(algo, kinds, trials, population, pbt_interval, search_seed,
                                                  setup.epochs, versions)
        trial_log = _trial_log(tune)
        trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=tune_space(kinds),
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", num_samples=trials, search_alg=search_alg,
                                        # no process start per trial; PBT's pause/clone needs fresh actors
                                        scheduler=scheduler, reuse_actors=algo != "pbt"),
            run_config=tune.RunConfig(
                name=f"cfn_tune_{algo}", storage_path=str(storage.resolve()),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if algo == "pbt" else 2),
                callbacks=[trial_log], verbose=1 if progress else 0))   # verbose 1: Ray's live table of trials
        results = tuner.fit()
        cluster = {"resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
                   "nodes": [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]}
        return {"results": results, "cluster": cluster, "versions": versions, "trial_log": trial_log, **extra}
    finally:
        if started_here:
            ray.shutdown()
        if cleanup:
            shutil.rmtree(storage, ignore_errors=True)


def _algorithm(algo, kinds, trials, population, pbt_interval, search_seed, epochs, versions):
    """(search algorithm, scheduler, facts for the JSON) of ``algo``."""
    require("ray.tune")  # fails here, naming the extra, when Ray Tune is missing
    points = first_points(kinds)[:trials]
    if algo == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator
        return BasicVariantGenerator(points_to_evaluate=points, random_state=search_seed), None, {}
    if algo == "nsga2":
        optuna = require("optuna")
        require("ray.tune.search.optuna")
        from ray.tune.search.optuna import OptunaSearch
        versions["optuna"] = optuna.__version__
        size = population or max(4, trials // 3)
        sampler = optuna.samplers.NSGAIISampler(population_size=size, seed=search_seed)
        return OptunaSearch(sampler=sampler, points_to_evaluate=points), None, {"population": size}
    from ray.tune.schedulers import PopulationBasedTraining
    mutations = {name: dist for name, dist in tune_space(kinds).items() if name in TUNED}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=pbt_interval, hyperparam_mutations=mutations,
        custom_explore_fn=lambda config: clip_to_space(config, config.get("kind", kinds[0])),
        synch=True)   # trials compared at the same epoch (asynchronously, the one arriving later always looks better)
    from ray.tune.search.basic_variant import BasicVariantGenerator
    return BasicVariantGenerator(points_to_evaluate=points, random_state=search_seed), scheduler, \
        {"population": trials, "pbt_interval": pbt_interval}


# ----------------------------------------------------------------------------- results
def _trial_log(tune: Any) -> Any:
    """A Tune callback keeping, per trial, its worker restarts after a failure, the nodes it ran on, the settings
    it trained with (PBT changes them) and how it ended."""

    class TrialLog(tune.Callback):
        def __init__(self) -> None:
            self.attempts: dict[str, dict[str, Any]] = {}
            self.ends: dict[str, dict[str, Any]] = {}

        def _end(self, trial: Any, error: str | None) -> None:
            self.ends[trial.trial_id] = {"config": dict(trial.config), "metrics": dict(trial.last_result or {}),
                                         "error": error}

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


def _trial_history(results: Any, trial_log: Any, kinds: tuple[str, ...], started: float) -> list[dict[str, Any]]:
    """One row per trial, in the order trials finished: the controller's view of each trial as the callback saw
    it end (a reused actor may report a stale ``trial_id`` in its metrics), else Ray's result grid (Ray Client,
    where callbacks run remotely)."""
    ends = list(trial_log.ends.items()) or [
        ((r.metrics or {}).get("trial_id"), {"config": r.config or {}, "metrics": r.metrics or {},
                                              "error": None if r.error is None else str(r.error)}) for r in results]
    history = []
    for trial_id, end in ends:
        metrics, config = end["metrics"], end["config"]
        rmse = metrics.get(METRIC)
        ok = end["error"] is None and rmse is not None and math.isfinite(rmse) and not metrics.get("diverged")
        error = None if ok else (metrics.get("error") or " ".join(str(end["error"] or "no result").split())[:200])
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
            "schedule": attempt.get("schedule", []),
            "resumed_from_epoch": metrics.get("resumed_from"), "error": error})
    history.sort(key=lambda t: t["finished_s"])
    return history


def _complete(history: list[dict[str, Any]], trials: int) -> bool:
    """Every requested trial ran all its epochs or was scored (False after Ctrl-C: the refit then uses the
    trials that finished)."""
    return len(history) == trials and all(t["validation_rmse"] is not None or t["error"] for t in history)


def _stored_trial(trial: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "validation_rmse", "seconds", "epochs", "trial_id", "node_ip", "node_id", "pid", "threads",
            "nodes", "restarts", "resumed_from_epoch")
    row = {k: trial[k] for k in keys}
    if len(trial["schedule"]) > 1:                   # population-based training changed its settings
        row["schedule"] = trial["schedule"]
    if trial["error"]:
        row["error"] = trial["error"]
    return row


def _best_so_far(history: list[dict[str, Any]]):
    best = math.inf
    for trial in history:
        if trial["validation_rmse"] is not None:
            best = min(best, trial["validation_rmse"])
        yield trial, (best if math.isfinite(best) else None)


def _refit_and_test(ratings, kind, params, hidden, epochs, batch_size, backend, seed, split_seed, test_ratio):
    from cfn_fast.model import CFN
    train, test = train_test_split(ratings, test_ratio, seed=split_seed)
    model = CFN(kind=kind, hidden=tuple(hidden), epochs=epochs, batch_size=batch_size, backend=backend,
                use_side_info=False, seed=seed, **params)
    start = time.perf_counter()
    model.fit(train)
    return float(model.score(test)), time.perf_counter() - start


def _store(existing, dataset, ratings, entries, split_seed, test_ratio, validation_ratio, hidden, epochs,
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


def _plot(history: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Best validation RMSE so far against trials finished and against wall time."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = [(i + 1, t["finished_s"], b) for i, (t, b) in enumerate(_best_so_far(history)) if b is not None]
    if not points:
        return None
    n, seconds, best = zip(*points)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    left.step(n, best, where="post")
    left.scatter([i + 1 for i, t in enumerate(history) if t["validation_rmse"] is not None],
                 [t["validation_rmse"] for t in history if t["validation_rmse"] is not None], s=12, alpha=0.5)
    left.set_xlabel("trials finished")
    left.set_ylabel("validation RMSE (dots: each trial, line: best so far)")
    right.step(seconds, best, where="post")
    right.scatter([t["finished_s"] for t in history if t["validation_rmse"] is not None],
                  [t["validation_rmse"] for t in history if t["validation_rmse"] is not None], s=12, alpha=0.5)
    right.set_xlabel("seconds since the search started")
    fig.suptitle(title)
    fig.tight_layout()
    path = out.with_name(out.stem + "_progress.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
