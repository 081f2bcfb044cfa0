"""``tune_cfn``: a CFN hyper-parameter search on Ray Tune, refit of the chosen settings, result JSON.

Protocol (the paper bench's, :mod:`cfn_fast.tools.paper.search`): split ``split_seed`` is made as Table 1
makes it; ``validation_ratio`` of its training ratings are carved out as the validation part; every
trial trains on the rest and is scored on the validation part at its final epoch.  The best trial's
settings are then refitted on the whole training part and scored once on the test part; the test
part is read by nothing else.

Every argument, path and the cluster's address are checked before Ray starts (:mod:`.checks`).  Ctrl-C
stops the search: the trials that finished are saved beside ``out`` (:func:`.checks.partial_path`), ``out``
is left unchanged, and :class:`SearchInterrupted` (a ``KeyboardInterrupt``) says what was saved where.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cfn_fast.data.ratings import RatingSet
from cfn_fast.data.split import train_test_split, train_validation_test_split
from cfn_fast.settings import check_hidden
from cfn_fast.tools.paper.search import save_store

from .checks import check_address, check_arguments, check_paths, existing_store, partial_path, plot_path
from .extra import require
from .results import (
    SearchInterrupted,
    best_so_far,
    hyperparams_store,
    is_complete,
    make_trial_log,
    partial_store,
    progress_plot,
    stored_trial,
    trial_history,
)
from .space import TUNED, clip_to_space, first_points, method_name, tune_space
from .trainable import METRIC, TrialSetup, run_trial

__all__ = ["ALGORITHMS", "SearchInterrupted", "tune_cfn"]

ALGORITHMS = ("random", "nsga2", "pbt")


def tune_cfn(ratings: RatingSet, *, out: str | Path, kind: str = "item", trials: int = 24, algo: str = "nsga2",
             address: str | None = None, num_cpus: int | None = None, cpus_per_trial: float = 1.0,
             gpus_per_trial: float = 0.0, dataset: str | None = None, hidden: tuple[int, ...] = (600,),
             epochs: int = 20, batch_size: int = 35, backend: str = "auto", split_seed: int = 1,
             test_ratio: float = 0.1, validation_ratio: float = 0.1, seed: int = 0, search_seed: int = 0,
             population: int | None = None, pbt_interval: int = 4, max_failures: int = 3,
             storage: str | Path | None = None, epoch_hook: Callable[[int], None] | None = None,
             progress: bool = True, command: str | None = None,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
             option_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Search CFN settings on Ray Tune; write ``out`` (hyperparams JSON) and a progress plot beside it.

    ``kind``: ``"item"``, ``"user"`` or ``"auto"`` (the kind is searched too; each kind's best gets
    its entry).  ``algo``: ``"random"``, ``"nsga2"`` (Optuna's NSGA-II, ``population`` per
    generation, default ``max(4, trials // 3)``) or ``"pbt"`` (``trials`` models trained together,
    the worst quarter copying the best quarter every ``pbt_interval`` epochs, settings perturbed).
    ``address``: None starts Ray inside this process (``num_cpus`` CPUs, default all); ``"auto"``,
    ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins that cluster.  A trial whose worker dies is retried from its
    last epoch's checkpoint up to ``max_failures`` times.  ``storage``: where Ray keeps trial state and
    checkpoints (a folder all nodes can reach; default a temporary folder beside ``out``, removed
    afterwards).  ``epoch_hook`` is called in the trial before each epoch (fault injection).
    ``option_names`` maps argument names to the names errors use (``cfn tune`` passes its options).

    Every argument is checked before Ray starts (``ValueError``; ``ConnectionError`` for an address where no
    Ray cluster answers).  Ctrl-C raises :class:`SearchInterrupted` after saving the trials that finished
    beside ``out`` (``out`` unchanged).  Returns the stored JSON object (``methods[...]['test_rmse']`` holds each
    refit's test RMSE).
    """
    names = dict(option_names or {})

    def label(name: str) -> str:
        return names.get(name, name)

    if not isinstance(ratings, RatingSet):
        raise TypeError(f"ratings must be a RatingSet, got {type(ratings).__name__}")
    kinds = check_arguments(
        kind=kind, trials=trials, algo=algo, epochs=epochs, hidden=hidden, batch_size=batch_size, backend=backend,
        seed=seed, search_seed=search_seed, split_seed=split_seed, test_ratio=test_ratio,
        validation_ratio=validation_ratio, num_cpus=num_cpus, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, population=population, pbt_interval=pbt_interval, max_failures=max_failures,
        address=address, label=label)
    out = Path(out)
    check_paths(out, storage, label)
    check_address(address, label)
    require_extras(algo)
    existing = existing_store(out, label)
    dataset = dataset or (existing or {}).get("dataset") or out.stem.removeprefix("hyperparams_")
    hidden = check_hidden(hidden)                                # checked above: as a tuple of ints
    train, validation, _ = train_validation_test_split(ratings, test_ratio, validation_ratio, seed=split_seed)
    log(f"tune: {algo}, {trials} trial(s) of {'/'.join(method_name(k) for k in kinds)} on {train.nnz:,} training / "
        f"{validation.nnz:,} validation ratings of split {split_seed}")
    setup = TrialSetup(train, validation, kind, hidden, int(epochs), int(batch_size), backend, int(seed),
                       float(cpus_per_trial), epoch_hook)
    trial_log = make_trial_log(require("ray.tune"), log, trials)
    started = time.time()
    try:
        run = _run_search(setup, trial_log, kinds, trials, algo, address, num_cpus, cpus_per_trial, gpus_per_trial,
                          population, pbt_interval, max_failures, storage, out, search_seed, progress, label)
        wall = time.time() - started
        history = trial_history(run["results"], trial_log, kinds, started, int(epochs), run["stopped"])
        if run["stopped"] or not is_complete(history, trials):
            raise KeyboardInterrupt
        entries = _refit_entries(history, ratings, kinds, hidden, epochs, batch_size, backend, seed, search_seed,
                                 split_seed, test_ratio, log)
    except KeyboardInterrupt:
        history = trial_history(None, trial_log, kinds, started, int(epochs), True)
        raise _interrupted(history, kinds, dataset, algo, trials, command, out, storage, label) from None
    chosen = min(entries, key=lambda name: entries[name]["validation_rmse"])
    plot = progress_plot(history, plot_path(out), f"{dataset}: {algo}, {len(history)} trials")
    store = hyperparams_store(existing, dataset, ratings, entries, split_seed, test_ratio, validation_ratio, hidden,
                              epochs, batch_size)
    store["tune"] = _tune_block(history, run, algo, command, chosen, entries, wall, trials, address,
                                cpus_per_trial, gpus_per_trial, max_failures, plot)
    save_store(out, store)
    log(f"tune: {chosen} validation RMSE {entries[chosen]['validation_rmse']:.4f}, test RMSE "
        f"{entries[chosen]['test_rmse']:.4f}; {len(history)} trials in {wall:.0f}s; wrote {out}"
        + (f" and {plot}" if plot else ""))
    return store


def require_extras(algo: str) -> None:
    """Fail now, naming the extra, when a package the search needs is missing."""
    require("ray")
    require("ray.tune")
    if algo == "nsga2":
        require("optuna")
        require("ray.tune.search.optuna")


def _refit_entries(history, ratings, kinds, hidden, epochs, batch_size, backend, seed, search_seed, split_seed,
                   test_ratio, log) -> dict[str, Any]:
    """Each kind's best trial refitted on the whole training part and scored once on the test part."""
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
        log(f"tune: refitting {method_name(k)} {best['params']} on the whole training part, scoring the test part "
            f"once")
        test_rmse, refit_seconds = _refit_and_test(ratings, k, best["params"], hidden, epochs, batch_size, backend,
                                                   seed, split_seed, test_ratio)
        entries[method_name(k)] = {
            "params": best["params"], "validation_rmse": best["validation_rmse"], "search_seed": int(search_seed),
            "n_trials": len(mine), "fixed": fixed, "trials": [stored_trial(t) for t in mine],
            "test_rmse": test_rmse, "refit_seconds": round(refit_seconds, 2)}
    if not entries:
        errors = [t["error"] for t in history if t["error"]]
        raise RuntimeError(f"every trial failed; last error: {errors[-1] if errors else 'no trial ran'}")
    return entries


def _tune_block(history, run, algo, command, chosen, entries, wall, trials, address, cpus_per_trial, gpus_per_trial,
                max_failures, plot) -> dict[str, Any]:
    return {
        "algo": algo, "command": command, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "chosen": chosen, "test_rmse": entries[chosen]["test_rmse"], "wall_seconds": round(wall, 1),
        "trials": len(history), "trials_requested": trials, "complete": is_complete(history, trials),
        "address": address or "embedded", "cluster": run["cluster"],
        "nodes": sorted({t["node_ip"] for t in history if t.get("node_ip")}),
        "node_ids": sorted({t["node_id"] for t in history if t.get("node_id")}),
        "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial, "max_failures": max_failures,
        "retried_trials": sum(1 for t in history if t["restarts"]), "population": run.get("population"),
        "versions": run["versions"], "plot": plot.name if plot else None,
        "best_so_far": [{"trial": i + 1, "seconds": round(t["finished_s"], 1), "validation_rmse": b}
                        for i, (t, b) in enumerate(best_so_far(history))]}


def _interrupted(history, kinds, dataset, algo, trials, command, out: Path, storage, label) -> SearchInterrupted:
    """Save the trials that ran all their epochs beside ``out`` (``out`` is left unchanged); say where."""
    finished = [t for t in history if not t["stopped"]]
    kept = f"; Ray's trial state is in {label('storage')} {storage}" if storage is not None else ""
    if not finished:
        return SearchInterrupted(f"no trial had finished: nothing saved, {out} unchanged{kept}")
    where = partial_path(out)
    partial = partial_store(history, kinds, dataset, algo, trials, command)
    save_store(where, partial)
    best = [f"{name} validation RMSE {entry['validation_rmse']:.4f}" for name, entry in partial["methods"].items()
            if entry["validation_rmse"] is not None]
    return SearchInterrupted(f"{len(finished)} of {trials} trials had finished: saved to {where} (best so far: "
                             f"{', '.join(best) or 'none scored'}; not refitted, no test RMSE), {out} unchanged"
                             f"{kept}")


# ----------------------------------------------------------------------------- Ray
def _run_search(setup: TrialSetup, trial_log, kinds, trials, algo, address, num_cpus, cpus_per_trial,
                gpus_per_trial, population, pbt_interval, max_failures, storage, out, search_seed, progress,
                label) -> dict[str, Any]:
    ray = require("ray")
    tune = require("ray.tune")
    from .stopping import StopOnRequest, ctrl_c_stops
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(ray, address, num_cpus)
    # num_to_keep bounds the disk (a checkpoint per epoch); the experiment snapshots it forces are cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cleanup = storage is None
    folder = str(storage) if storage is not None and "://" in str(storage) else \
        str(Path(storage).resolve()) if storage is not None else \
        str(Path(tempfile.mkdtemp(prefix=".cfn_tune_", dir=out.parent)).resolve())
    try:
        if started_here and address is None:
            _check_resources(ray, cpus_per_trial, gpus_per_trial, label)
        versions = {"ray": ray.__version__}
        stopper = StopOnRequest()
        with _quiet_optuna(algo == "nsga2" and not progress):
            search_alg, scheduler, extra = _algorithm(algo, kinds, trials, population, pbt_interval, search_seed,
                                                      versions)
            trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
            tuner = tune.Tuner(
                trainable, param_space=tune_space(kinds),
                tune_config=tune.TuneConfig(metric=METRIC, mode="min", num_samples=trials, search_alg=search_alg,
                                            # no process start per trial; PBT's pause/clone needs fresh actors
                                            scheduler=scheduler, reuse_actors=algo != "pbt"),
                run_config=tune.RunConfig(
                    name=f"cfn_tune_{algo}", storage_path=folder, stop=stopper,
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints_kept(algo, pbt_interval)),
                    callbacks=[trial_log], verbose=1 if progress else 0))   # verbose 1: Ray's live table of trials
            with ctrl_c_stops(stopper):
                results = tuner.fit()
        stopped = stopper.requested
        stopper.forget()
        cluster = {"resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")},
                   "nodes": [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]}
        return {"results": results, "cluster": cluster, "versions": versions, "stopped": stopped, **extra}
    finally:
        if started_here:
            ray.shutdown()
        if cleanup:
            shutil.rmtree(folder, ignore_errors=True)


def checkpoints_kept(algo: str, pbt_interval: int) -> int:
    """Checkpoints kept per trial: the last two (a retried trial resumes from the last), and for PBT every one a
    copy may still need: a trial copies another's checkpoint of the perturbation point after the others have gone
    on (with more trials than CPUs, up to ``pbt_interval`` epochs, to the next point, where they wait); a copy
    whose checkpoint was deleted fails (Ray: "checkpoint ... does not exist on storage anymore")."""
    return max(4, pbt_interval + 2) if algo == "pbt" else 2


def _start_ray(ray: Any, address: str | None, num_cpus: int | None) -> None:
    if address is None:
        # Ray runs workers at nice 15 by default: on a shared machine trials then crawl behind every
        # other process; the embedded cluster runs them at normal priority (RAY_worker_niceness wins).
        system = {} if "RAY_worker_niceness" in os.environ else {"worker_niceness": 0}
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 _system_config=system)
    else:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)


def _check_resources(ray: Any, cpus_per_trial: float, gpus_per_trial: float, label) -> None:
    """On the embedded Ray, a trial asking for more than the machine has would wait forever: say so now."""
    have = ray.cluster_resources()
    for name, key, wanted in (("cpus_per_trial", "CPU", cpus_per_trial), ("gpus_per_trial", "GPU", gpus_per_trial)):
        if wanted > have.get(key, 0):
            raise ValueError(f"{label(name)} {wanted:g} exceeds the {have.get(key, 0):g} {key}(s) the embedded Ray "
                             f"found on this machine: no trial could start")


@contextlib.contextmanager
def _quiet_optuna(quiet: bool) -> Iterator[None]:
    """Optuna logs each study it creates at INFO: not with ``progress=False``."""
    if not quiet:
        yield
        return
    optuna = require("optuna")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _algorithm(algo, kinds, trials, population, pbt_interval, search_seed, versions):
    """(search algorithm, scheduler, facts for the JSON) of ``algo``."""
    from ray.tune.search.basic_variant import BasicVariantGenerator
    points = first_points(kinds)[:trials]
    if algo == "random":
        return BasicVariantGenerator(points_to_evaluate=points, random_state=search_seed), None, {}
    if algo == "nsga2":
        from ray.tune.search.optuna import OptunaSearch

        # Optuna >= 5.1's sampler holds a lock Ray cannot pickle: this one re-creates it instead
        from .sampler import PicklableNSGAIISampler
        versions["optuna"] = require("optuna").__version__
        size = population or max(4, trials // 3)
        sampler = PicklableNSGAIISampler(population_size=size, seed=search_seed)
        return OptunaSearch(sampler=sampler, points_to_evaluate=points), None, {"population": size}
    from .pbt import UnstrandedPBT
    mutations = {name: dist for name, dist in tune_space(kinds).items() if name in TUNED}
    # synchronous (trials compared at the same epoch: asynchronously, the one arriving later always looks better),
    # and unable to strand the population when a trial ends between two perturbation points (see .pbt)
    scheduler = UnstrandedPBT(time_attr="training_iteration", perturbation_interval=pbt_interval,
                              hyperparam_mutations=mutations,
                              custom_explore_fn=lambda config: clip_to_space(config, config.get("kind", kinds[0])))
    return BasicVariantGenerator(points_to_evaluate=points, random_state=search_seed), scheduler, \
        {"population": trials, "pbt_interval": pbt_interval}


def _refit_and_test(ratings, kind, params, hidden, epochs, batch_size, backend, seed, split_seed, test_ratio):
    from cfn_fast.model import CFN
    train, test = train_test_split(ratings, test_ratio, seed=split_seed)
    model = CFN(kind=kind, hidden=tuple(hidden), epochs=epochs, batch_size=batch_size, backend=backend,
                use_side_info=False, seed=seed, **params)
    start = time.perf_counter()
    model.fit(train)
    return float(model.score(test)), time.perf_counter() - start
