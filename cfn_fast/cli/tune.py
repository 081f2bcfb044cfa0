"""``cfn tune``: hyper-parameter search on Ray Tune (:mod:`cfn_fast.tools.tune`; nothing here imports Ray)."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import common
from .common import command, int_in
from .files import check_writable_outputs

__all__ = ["tune"]

#: The arguments of ``tune_cfn`` as ``cfn tune`` names them in errors.
_OPTIONS = {name: "--" + name.replace("_", "-") for name in (
    "kind", "trials", "algo", "address", "num_cpus", "cpus_per_trial", "gpus_per_trial", "out", "hidden", "epochs",
    "batch_size", "backend", "split_seed", "test_ratio", "validation_ratio", "seed", "search_seed", "population",
    "pbt_interval", "max_failures", "storage")}


def _tune_parser(sub: Any) -> None:
    """Add ``tune`` to the ``cfn`` parser (nothing here imports Ray)."""
    p = sub.add_parser(
        "tune", help="hyper-parameter search on Ray Tune (random, NSGA-II, PBT); needs the 'tune' extra",
        description="Searches CFN settings on a validation part carved from the training part of a split, refits "
                    "the best on the whole training part and scores it once on the test part. Writes --out in the "
                    "schema of bench/paper/hyperparams_<dataset>.json (read by `cfn bench paper --from-json`) and "
                    "<out>_progress.png beside it. Ray starts inside the process unless --address is given.")
    p.add_argument("--ratings", required=True, help="rating file or MovieLens folder")
    p.add_argument("--kind", choices=("item", "user", "auto"), default="item",
                   help="I-CFN, U-CFN, or auto: search the kind too (each kind's best is stored)")
    p.add_argument("--trials", type=int_in(1), default=24, help="trials (the population size for pbt)")
    p.add_argument("--algo", choices=("random", "nsga2", "pbt"), default="nsga2")
    p.add_argument("--address", default=None,
                   help="join a Ray cluster: 'auto' (the cluster started on this machine), HOST:PORT (its head's "
                        "GCS port) or ray://HOST:PORT (Ray Client); default: start Ray inside this process")
    p.add_argument("--num-cpus", type=int_in(1), default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial; its OpenMP threads follow")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial; a fraction (e.g. 0.25) packs several trials on one card")
    p.add_argument("--out", required=True, help="result JSON (e.g. runs/hyperparams_ml-1m.json); updated, not "
                                                "clobbered, when it exists")
    p.add_argument("--dataset", default=None, help="data set name in the JSON (default: from --out or --ratings)")
    p.add_argument("--hidden", type=int_in(1), nargs="+", default=[600], help="hidden layer widths")
    p.add_argument("--epochs", type=int_in(1), default=20, help="epochs of every trial")
    p.add_argument("--batch-size", type=int_in(1), default=35, help="samples per mini-batch")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "cpu", "cuda"))
    p.add_argument("--split-seed", type=int_in(0), default=1, help="the split (as Table 1's split 1 by default)")
    p.add_argument("--test-ratio", type=float, default=0.1)
    p.add_argument("--validation-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int_in(0), default=0, help="model seed (initialisation, order, corruption)")
    p.add_argument("--search-seed", type=int_in(0), default=0, help="seed of the sampler")
    p.add_argument("--population", type=int_in(2), default=None,
                   help="NSGA-II population (default max(4, trials/3))")
    p.add_argument("--pbt-interval", type=int_in(1), default=4, help="epochs between PBT exploit/explore steps")
    p.add_argument("--max-failures", type=int_in(0), default=3, help="retries of a trial whose worker dies")
    p.add_argument("--storage", default=None,
                   help="folder for Ray's trial state and checkpoints, reachable by every node (default: a "
                        "temporary folder beside --out, removed afterwards)")
    p.add_argument("--kill-worker-once", metavar="MARKER", default=None,
                   help="fault drill: kill the worker of the first trial to reach epoch 2 (once, keyed by the "
                        "MARKER file) to watch it resume from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no live table of trials (one line per finished trial "
                                                        "remains on stderr)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (the result, or "
                                                       "{\"error\": ...}); Ray's and Optuna's output go to stderr")


@command("tune", _tune_parser)
def tune(args: argparse.Namespace) -> dict:
    from cfn_fast.tools.tune.faults import KillWorkerOnce
    from cfn_fast.tools.tune.search import tune_cfn
    out = Path(args.out)
    _check_before_ray(args, out)
    ratings = common.read_ratings(args.ratings)
    dataset = args.dataset or (None if out.stem.startswith("hyperparams_") else Path(args.ratings).stem)
    with _stdout_to_stderr():
        store = tune_cfn(
            ratings, out=out, kind=args.kind, trials=args.trials, algo=args.algo, address=args.address,
            num_cpus=args.num_cpus, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            dataset=dataset, hidden=tuple(args.hidden), epochs=args.epochs, batch_size=args.batch_size,
            backend=args.backend, split_seed=args.split_seed, test_ratio=args.test_ratio,
            validation_ratio=args.validation_ratio, seed=args.seed, search_seed=args.search_seed,
            population=args.population, pbt_interval=args.pbt_interval, max_failures=args.max_failures,
            storage=args.storage,
            epoch_hook=KillWorkerOnce(args.kill_worker_once) if args.kill_worker_once else None,
            progress=not args.quiet, command="cfn " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            option_names=_OPTIONS)
    chosen = store["tune"]["chosen"]
    entry = store["methods"][chosen]
    if not args.json:
        print(f"{chosen}: validation RMSE {entry['validation_rmse']:.4f}, test RMSE {entry['test_rmse']:.4f} "
              f"({store['tune']['trials']} trials, {store['tune']['wall_seconds']:.0f}s) -> {out}")
    return {"command": "tune", "out": str(out), "chosen": chosen, "params": entry["params"],
            "validation_rmse": entry["validation_rmse"], "test_rmse": entry["test_rmse"], "tune": store["tune"]}


def _check_before_ray(args: argparse.Namespace, out: Path) -> None:
    """Every argument, output path, optional package and the cluster's address, before the ratings are read and
    Ray starts (a mistake costs a second, not Ray's start-up); errors name the options."""
    from cfn_fast.fileio import check_outputs_not_inputs
    from cfn_fast.tools.tune.checks import check_address, check_arguments, check_paths, partial_path, plot_path
    from cfn_fast.tools.tune.search import require_extras

    def label(name: str) -> str:
        return _OPTIONS.get(name, name)

    check_arguments(
        kind=args.kind, trials=args.trials, algo=args.algo, epochs=args.epochs, hidden=tuple(args.hidden),
        batch_size=args.batch_size, backend=args.backend, seed=args.seed, search_seed=args.search_seed,
        split_seed=args.split_seed, test_ratio=args.test_ratio, validation_ratio=args.validation_ratio,
        num_cpus=args.num_cpus, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        population=args.population, pbt_interval=args.pbt_interval, max_failures=args.max_failures,
        address=args.address, label=label)
    inputs = {"--ratings": args.ratings}
    check_writable_outputs({"--out": out}, inputs)
    storage = args.storage if args.storage is not None and "://" not in args.storage else None
    check_outputs_not_inputs({"--out's progress figure": plot_path(out), "--out's partial result": partial_path(out),
                              "--storage": storage}, inputs)
    check_paths(out, args.storage, label)
    check_address(args.address, label)
    require_extras(args.algo)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Ray and Optuna print on stdout (Ray Tune's experiment table even when told to be quiet); stdout carries the
    command's result (one JSON object with --json), so while the search runs whatever they print goes to stderr,
    redirected at the file descriptor: Ray's own processes, started meanwhile, inherit it."""
    sys.stdout.flush()
    try:
        target, source = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # not a real file (a test's capture)
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    saved = os.dup(target)
    os.dup2(source, target)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        os.dup2(saved, target)
        os.close(saved)
