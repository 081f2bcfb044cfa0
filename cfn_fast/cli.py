"""The ``cfn`` command line: ``demo``, ``fit``, ``eval``, ``predict`` (and more subcommands).

Every subcommand accepts ``--json`` to print one machine-readable result object on stdout.
Errors print one line on stderr (and, with ``--json``, one JSON error object on stdout) and exit
with status 2 (bad input), 1 (other failures) or 130 (interrupted); see :mod:`cfn_fast.cli_errors`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import re
import sys
import time
from typing import Any, Callable

import numpy as np

from .cli_errors import OneLineParser, command_name, report_failure
from .cli_io import (check_eval_ratings, check_writable_outputs, resolve_backend_early, save_split,
                     split_paths)

__all__ = ["main", "build_parser", "run"]

Handler = Callable[[argparse.Namespace], dict]
_COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return register


# ----------------------------------------------------------------------------- shared options
def _add_model_options(p: argparse.ArgumentParser, *, epochs: int = 20) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--kind", choices=("auto", "item", "user"), default="auto",
                   help="I-CFN (item), U-CFN (user) or auto: kind and centring chosen on a validation part of "
                        "the training set (up to 4 extra fits)")
    g.add_argument("--centring", choices=("sample", "bias"), default=None,
                   help="centre by each sample's mean (the paper's) or by the bias model mu + b_u + b_i "
                        "(default: sample for --kind item|user, chosen for auto)")
    g.add_argument("--hidden", type=_int_in(1), nargs="+", default=[600], help="hidden layer widths")
    g.add_argument("--epochs", type=_int_in(0), default=epochs, help="training epochs")
    for name in ("alpha", "beta", "mask-ratio", "lr", "lr-decay", "weight-decay", "batch-size"):
        g.add_argument(f"--{name}", type=_int_in(1) if name == "batch-size" else float, default=None,
                       help=f"{_HELP[name]} (default: {_per_kind_default(name)})")
    g.add_argument("--backend", default="auto", choices=("auto", "numpy", "cpu", "cuda"),
                   help="engine; auto = cuda when a GPU is usable, else cpu")
    g.add_argument("--no-side-info", action="store_true", help="train a plain CFN (no CFN++ side information)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and masking noise")


_HELP = {"alpha": "loss weight of masked known ratings", "beta": "loss weight of visible known ratings",
         "mask-ratio": "probability of masking a known input rating", "lr": "initial learning rate",
         "lr-decay": "lr_t = lr / (1 + t * lr_decay)", "weight-decay": "L2 weight decay on every parameter",
         "batch-size": "samples per mini-batch"}


def _int_in(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (argparse names the option in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _kind_label(model) -> str:
    """``I-CFN`` / ``U-CFN``, and whether ``--kind auto`` chose it."""
    label = "I-CFN" if model.kind_ == "item" else "U-CFN"
    if model.centring_ == "bias":
        label += ", bias centring"
    return f"{label} (chosen by --kind auto)" if model.kind == "auto" else label


def _announce_selection(model, quiet: bool) -> None:
    if model.kind == "auto" and not quiet:
        print("kind auto: comparing I-CFN and U-CFN with the sample and the bias centring on validation "
              f"({'the given centring only, ' if model.centring else ''}one fit each) ...", flush=True)


def _selection(model) -> dict:
    """``{"selection": ...}`` when ``--kind auto`` chose on validation, else nothing."""
    return {} if model.selection_ is None else {"selection": model.selection_.as_dict()}


def _per_kind_default(name: str) -> str:
    from .settings import DEFAULTS
    field = name.replace("-", "_")
    return f"{getattr(DEFAULTS['item'], field):g} for --kind item, {getattr(DEFAULTS['user'], field):g} for user"


def _model_from_args(args: argparse.Namespace):
    """The CFN the options describe, validated before any data is loaded; a bad value is reported
    under its option name (``--batch-size``, not ``batch_size``)."""
    from .model import CFN
    model = CFN(kind=args.kind, centring=args.centring, hidden=tuple(args.hidden), epochs=args.epochs, alpha=args.alpha, beta=args.beta,
                mask_ratio=args.mask_ratio, lr=args.lr, lr_decay=args.lr_decay, weight_decay=args.weight_decay,
                batch_size=args.batch_size, backend=args.backend, use_side_info=not args.no_side_info,
                seed=args.seed, verbose=min(int(getattr(args, "verbose", 0)), 1))
    try:
        model.resolved_params()
    except ValueError as exc:
        text = str(exc)
        for name in ("alpha", "beta", "mask_ratio", "lr_decay", "lr", "weight_decay", "batch_size", "hidden",
                     "epochs", "seed"):
            text = re.sub(rf"(?<![\w-]){name}(?![\w])", "--" + name.replace("_", "-"), text)
        raise ValueError(text) from None
    return model


def _epoch_printer(enabled: bool, label: str = "val RMSE"):
    def print_epoch(record) -> None:
        if enabled:
            val = "" if record.validation_rmse is None else f"  {label} {record.validation_rmse:.4f}"
            print(f"epoch {record.epoch:3d}  lr {record.lr:.4f}  loss {record.train_loss:.5f}{val}"
                  f"  {record.seconds:.2f}s", flush=True)
    return print_epoch


def _load(path: str, scale: list[float] | None = None):
    from .data import load_movielens, load_ratings
    from pathlib import Path
    p = Path(path)
    declared = None if scale is None else (float(scale[0]), float(scale[1]))
    return load_movielens(p, scale=declared) if p.is_dir() else load_ratings(p, scale=declared)


def _scale_note(ratings, scale: list[float] | None) -> str:
    """Which rating scale was used, and where it came from (never guessed from a file name)."""
    low, high = ratings.scale
    return f"scale [{low:g}, {high:g}] ({'declared with --scale' if scale else 'observed min..max; declare with --scale LOW HIGH'})"


def _add_scale_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="rating scale of the data (default: the observed min and max)")


# ----------------------------------------------------------------------------- commands
@command("demo")
def _demo(args: argparse.Namespace) -> dict:
    """The main job: CFN on the embedded synthetic rating set.

    The per-epoch RMSE is measured on a validation split carved from the training ratings; the
    test split is scored once, after training (nothing is chosen on it)."""
    from .baselines import ItemMean
    from .data import synthetic_ratings, train_validation_test_split
    model = _model_from_args(args)
    resolve_backend_early(args.backend)
    ratings = synthetic_ratings(args.users, args.items, args.n_ratings, seed=args.seed)
    train, validation, test = train_validation_test_split(ratings, 0.1, 0.1, seed=args.seed)
    if not args.json:
        print(f"data: {ratings} (synthetic, seed {args.seed}); {train.nnz:,} train / {validation.nnz:,} "
              f"validation / {test.nnz:,} test ratings")
        print(f"model: {dict(item='I-CFN', user='U-CFN').get(args.kind, 'CFN (kind auto)')}{'' if args.no_side_info else '++'} "
              f"hidden={tuple(args.hidden)} backend={model.backend if model.backend != 'auto' else 'auto'}")
    start = time.perf_counter()
    _announce_selection(model, args.json)
    model.fit(train, validation=validation, callbacks=(_epoch_printer(not args.json, "validation RMSE"),))
    seconds = time.perf_counter() - start
    baseline = ItemMean().fit(train).score(test)
    final = model.score(test)
    result = {"command": "demo", "data": "synthetic", "n_ratings": ratings.nnz, "kind": model.kind_,
              "centring": model.centring_, **_selection(model),
              "backend": model.backend_, "epochs": model.epochs_trained_, "train_seconds": round(seconds, 3),
              "test_rmse": final, "item_mean_rmse": baseline,
              "improvement_vs_item_mean": 1.0 - final / baseline,
              "validation_rmse_per_epoch": [r.validation_rmse for r in model.history_]}
    if not args.json:
        print(f"test RMSE {final:.4f} after the last epoch (per-item mean {baseline:.4f}, "
              f"{100 * result['improvement_vs_item_mean']:.1f}% better) with {_kind_label(model)} on backend "
              f"{model.backend_} in {seconds:.1f}s")
    return result


@command("fit")
def _fit(args: argparse.Namespace) -> dict:
    """Train on a rating file (held-out test split), report test RMSE, optionally save the model."""
    from .data import train_test_split, train_validation_test_split
    for option in ("test_ratio", "validation_ratio"):
        _check_ratio(args, option)
    if args.split_seed < 0:
        raise ValueError(f"--split-seed must be an integer >= 0, got {args.split_seed}")
    splits = split_paths(args.save_split, args.validation_ratio > 0) if args.save_split else None
    check_writable_outputs({"--save": args.save, "--save-split": splits, "--trace": args.trace},
                           {"--ratings": args.ratings},
                           {"--save-split": args.save_split})
    model = _model_from_args(args)
    resolve_backend_early(args.backend)
    ratings = _load(args.ratings, args.scale)
    if not args.json:
        print(f"data: {ratings.nnz:,} ratings, {_scale_note(ratings, args.scale)}", flush=True)
    if args.validation_ratio > 0:
        train, validation, test = train_validation_test_split(ratings, args.test_ratio, args.validation_ratio,
                                                              seed=args.split_seed)
    else:
        (train, test), validation = train_test_split(ratings, args.test_ratio, seed=args.split_seed), None
    if splits:
        save_split(splits, {"train": train, "validation": validation, "test": test})
    model.profile = bool(args.profile or args.trace)
    start = time.perf_counter()
    _announce_selection(model, args.json)
    model.fit(train, validation=validation, callbacks=(_epoch_printer(not args.json),))
    seconds = time.perf_counter() - start
    result = {"command": "fit", "ratings": str(args.ratings), "scale": list(ratings.scale),
              "scale_source": "declared" if args.scale else "observed", "kind": model.kind_,
              "centring": model.centring_, **_selection(model), "backend": model.backend_,
              "hidden": list(args.hidden), "epochs": model.epochs_trained_, "train_seconds": round(seconds, 3),
              "test_rmse": model.score(test),
              "validation_rmse": None if validation is None else model.history_[-1].validation_rmse
              if model.history_ else None,
              "params": {k: v for k, v in model.resolved_params().items() if k != "hidden"}}
    if args.save:
        model.save(args.save)
        result["saved"] = str(args.save)
    if splits:
        result["split_files"] = {part: str(path) for part, path in splits.items()}
    if model.profile:
        from .profiling import report_profile
        result.update(report_profile(model.profile_, args.trace, echo=not args.json))
    if not args.json:
        print(f"test RMSE {result['test_rmse']:.4f}  ({_kind_label(model)}, {seconds:.1f}s on {model.backend_})"
              + (f"; saved {args.save}" if args.save else "")
              + (f"; split written to {args.save_split}" if splits else ""))
    return result


def _check_ratio(args: argparse.Namespace, option: str) -> None:
    value = getattr(args, option)
    low_ok = value > 0 if option == "test_ratio" else value >= 0
    if not (low_ok and value < 1):
        bound = "(0, 1)" if option == "test_ratio" else "[0, 1)"
        raise ValueError(f"--{option.replace('_', '-')} must be in {bound}, got {value}")


@command("eval")
def _eval(args: argparse.Namespace) -> dict:
    """RMSE of a saved model on a rating file (ids matched to the model's)."""
    from .model import CFN
    model = CFN.load(args.model)
    ratings = _load(args.ratings, args.scale)
    ratings, skipped = check_eval_ratings(model, ratings, args.ratings, skip_unknown=args.skip_unknown)
    score = model.score(ratings)
    if not args.json:
        print(f"RMSE {score:.4f} on {ratings.nnz:,} ratings"
              + (f" (skipped {skipped['ratings']:,} rating(s) of {skipped['users']:,} unknown user(s) and "
                 f"{skipped['items']:,} unknown item(s))" if args.skip_unknown else ""))
    return {"command": "eval", "model": str(args.model), "ratings": str(args.ratings), "rmse": score,
            "n_ratings": ratings.nnz, "skipped": skipped if args.skip_unknown else None}


@command("predict")
def _predict(args: argparse.Namespace) -> dict:
    """Predicted ratings of a saved model for (user, item) pairs."""
    from .model import CFN
    model = CFN.load(args.model)
    users = _parse_ids(args.user, model.train_.user_ids, "--user")
    items = _parse_ids(args.item, model.train_.item_ids, "--item")
    if len(users) != len(items):
        raise ValueError(f"--user and --item give {len(users)} and {len(items)} ids; they must pair up")
    predicted = model.predict(users, items)
    rows = [{"user": _plain(u), "item": _plain(i), "rating": float(p)} for u, i, p in zip(users, items, predicted)]
    if not args.json:
        for row in rows:
            print(f"{row['user']}\t{row['item']}\t{row['rating']:.4f}")
    return {"command": "predict", "predictions": rows}


def _parse_ids(values: list[str], known: np.ndarray, option: str = "ids") -> np.ndarray:
    """Command-line ids arrive as strings: convert to the model's id type.  An integer beyond the
    range of that type cannot be one of the model's ids: a ``KeyError`` says so (not an
    ``OverflowError``)."""
    if known.dtype.kind in "iu":
        try:
            numbers = [int(v) for v in values]
        except ValueError as exc:
            raise ValueError(f"{option}: ids must be integers for this model: {exc}") from None
        info = np.iinfo(known.dtype)
        beyond = [n for n in numbers if not info.min <= n <= info.max]
        if beyond:
            raise KeyError(f"{option}: {len(beyond)} unknown id(s), e.g. {beyond[:3]}: beyond the range of this "
                           f"model's {known.dtype} ids ({info.min}..{info.max})")
        return np.array(numbers, dtype=known.dtype)
    return np.array(values, dtype=known.dtype)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cfn", description="Collaborative Filtering Networks (CFN / CFN++)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="progress bar and the library's informational messages on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train CFN on the embedded synthetic data set (the main job)",
                       description="Train CFN on a synthetic rating set: validation RMSE per epoch, then the test "
                                   "RMSE beside the per-item-mean baseline.")
    _add_model_options(p)
    p.add_argument("--users", type=_int_in(1), default=2000, help="number of synthetic users")
    p.add_argument("--items", type=_int_in(1), default=1000, help="number of synthetic items")
    p.add_argument("--n-ratings", type=_int_in(1), default=100_000, help="number of synthetic ratings")
    p.add_argument("--ratings", type=_deprecated_count, dest="n_ratings", help=argparse.SUPPRESS)
    _add_common(p)

    p = sub.add_parser("fit", help="train on a ratings file or MovieLens folder and report test RMSE")
    p.add_argument("--ratings", required=True, help="ratings file (.npz, .csv, u.data, ratings.dat, ...) or folder")
    _add_model_options(p)
    p.add_argument("--test-ratio", type=float, default=0.1, help="share of the ratings held out for the test RMSE")
    p.add_argument("--validation-ratio", type=float, default=0.0,
                   help="share of the training ratings carved out as a validation split (0: none)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--save", default=None, help="write the trained model to this .npz")
    p.add_argument("--save-split", default=None, metavar="DIR",
                   help="write the split into DIR (train.npz, test.npz[, validation.npz]: original ids) for "
                        "`cfn eval --ratings DIR/test.npz`")
    _add_scale_option(p)
    p.add_argument("--profile", action="store_true", help="print where each epoch's time goes, phase by phase")
    p.add_argument("--trace", default=None, metavar="FILE", help="write a Chrome trace (Perfetto) of the run")
    _add_common(p)

    p = sub.add_parser("eval", help="RMSE of a saved model on a ratings file")
    p.add_argument("--model", required=True, help="model file written by `cfn fit --save` or CFN.save")
    p.add_argument("--ratings", required=True, help="ratings file or folder (e.g. the test.npz of --save-split)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="skip ratings of users or items the model does not know (and report how many); "
                        "without it they are an error")
    _add_scale_option(p)
    _add_common(p)

    p = sub.add_parser("predict", help="predict ratings of (user, item) pairs with a saved model")
    p.add_argument("--model", required=True, help="model file written by `cfn fit --save` or CFN.save")
    p.add_argument("--user", nargs="+", required=True, help="user id(s), paired with --item")
    p.add_argument("--item", nargs="+", required=True, help="item id(s), paired with --user")
    _add_common(p)

    for module in _EXTENSION_MODULES:
        importlib.import_module(module).register(sub, command)
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the result, or {\"error\": ..., \"type\": ...})")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="progress bar and the library's informational messages on stderr")


def _deprecated_count(text: str) -> int:
    print("cfn demo: note: --ratings is deprecated for the number of ratings; use --n-ratings "
          "(`cfn fit --ratings` is a file)", file=sys.stderr)
    return _int_in(1)(text)


#: Modules that add further subcommands: each has ``register(subparsers, command_decorator)``.
_EXTENSION_MODULES = tuple(name for name in ("cfn_fast.cli_product", "cfn_fast.cli_export", "cfn_fast.paper.cli",
                                              "cfn_fast.tune.cli")
                           if importlib.util.find_spec(name.rsplit(".", 1)[0]) is not None
                           and importlib.util.find_spec(name) is not None)


def run(argv: list[str]) -> dict:
    """Parse ``argv`` and run the command; errors propagate as exceptions (``main`` reports them)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return _COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """The ``cfn`` entry point: every failure is one line (see :mod:`cfn_fast.cli_errors`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    json_mode = "--json" in argv
    try:
        result = run(argv)
        if json_mode:
            print(json.dumps(result, default=_plain), flush=True)
    except SystemExit:  # --help
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every failure into one line
        return report_failure(exc, command_name(argv), json_mode)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
