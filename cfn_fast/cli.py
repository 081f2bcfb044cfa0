"""The ``cfn`` command line: ``demo``, ``fit``, ``eval``, ``predict`` (and more subcommands).

Every subcommand accepts ``--json`` to print one machine-readable result object on stdout.
Errors print one line on stderr and exit with status 2 (bad input) or 1 (other failures).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
from typing import Any, Callable

import numpy as np

__all__ = ["main", "build_parser"]

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
                   help="I-CFN (item), U-CFN (user) or auto: the side with more ratings per sample")
    g.add_argument("--hidden", type=int, nargs="+", default=[600], help="hidden layer widths")
    g.add_argument("--epochs", type=int, default=epochs)
    for name in ("alpha", "beta", "mask-ratio", "lr", "lr-decay", "weight-decay"):
        g.add_argument(f"--{name}", type=float, default=None, help="default: per-kind DEFAULTS")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--backend", default="auto", choices=("auto", "numpy", "cpu", "cuda"))
    g.add_argument("--no-side-info", action="store_true", help="train a plain CFN (no CFN++ side information)")
    g.add_argument("--seed", type=int, default=0)


def _model_from_args(args: argparse.Namespace):
    from .model import CFN
    return CFN(kind=args.kind, hidden=tuple(args.hidden), epochs=args.epochs, alpha=args.alpha, beta=args.beta,
               mask_ratio=args.mask_ratio, lr=args.lr, lr_decay=args.lr_decay, weight_decay=args.weight_decay,
               batch_size=args.batch_size, backend=args.backend, use_side_info=not args.no_side_info,
               seed=args.seed, verbose=0)


def _epoch_printer(enabled: bool):
    def print_epoch(record) -> None:
        if enabled:
            val = "" if record.validation_rmse is None else f"  RMSE {record.validation_rmse:.4f}"
            print(f"epoch {record.epoch:3d}  lr {record.lr:.4f}  loss {record.train_loss:.5f}{val}"
                  f"  {record.seconds:.2f}s", flush=True)
    return print_epoch


def _load(path: str):
    from .data import load_movielens, load_ratings
    from pathlib import Path
    p = Path(path)
    return load_movielens(p) if p.is_dir() else load_ratings(p)


# ----------------------------------------------------------------------------- commands
@command("demo")
def _demo(args: argparse.Namespace) -> dict:
    """The main job: CFN on the embedded synthetic rating set, RMSE per epoch."""
    from .baselines import ItemMean
    from .data import synthetic_ratings, train_test_split
    ratings = synthetic_ratings(args.users, args.items, args.ratings, seed=args.seed)
    train, test = train_test_split(ratings, 0.1, seed=args.seed)
    model = _model_from_args(args)
    if not args.json:
        print(f"data: {ratings} (synthetic, seed {args.seed})")
        print(f"model: {dict(item='I-CFN', user='U-CFN').get(args.kind, 'CFN (kind auto)')}{'' if args.no_side_info else '++'} "
              f"hidden={tuple(args.hidden)} backend={model.backend if model.backend != 'auto' else 'auto'}")
    start = time.perf_counter()
    model.fit(train, validation=test, callbacks=(_epoch_printer(not args.json),))
    seconds = time.perf_counter() - start
    baseline = ItemMean().fit(train).score(test)
    final = model.score(test)
    result = {"command": "demo", "data": "synthetic", "n_ratings": ratings.nnz, "kind": model.kind_,
              "backend": model.backend_, "epochs": model.epochs_trained_, "train_seconds": round(seconds, 3),
              "test_rmse": final, "item_mean_rmse": baseline,
              "improvement_vs_item_mean": 1.0 - final / baseline,
              "rmse_per_epoch": [r.validation_rmse for r in model.history_]}
    if not args.json:
        print(f"test RMSE {final:.4f} (per-item mean {baseline:.4f}, {100 * result['improvement_vs_item_mean']:.1f}% "
              f"better) on backend {model.backend_} in {seconds:.1f}s")
    return result


@command("fit")
def _fit(args: argparse.Namespace) -> dict:
    """Train on a rating file (held-out test split), report test RMSE, optionally save the model."""
    from .data import train_test_split, train_validation_test_split
    ratings = _load(args.ratings)
    if args.validation_ratio > 0:
        train, validation, test = train_validation_test_split(ratings, args.test_ratio, args.validation_ratio,
                                                              seed=args.split_seed)
    else:
        (train, test), validation = train_test_split(ratings, args.test_ratio, seed=args.split_seed), None
    model = _model_from_args(args)
    start = time.perf_counter()
    model.fit(train, validation=validation, callbacks=(_epoch_printer(not args.json),))
    seconds = time.perf_counter() - start
    result = {"command": "fit", "ratings": str(args.ratings), "kind": model.kind_, "backend": model.backend_,
              "hidden": list(args.hidden), "epochs": model.epochs_trained_, "train_seconds": round(seconds, 3),
              "test_rmse": model.score(test),
              "validation_rmse": None if validation is None else model.history_[-1].validation_rmse
              if model.history_ else None,
              "params": {k: v for k, v in model.resolved_params().items() if k != "hidden"}}
    if args.save:
        model.save(args.save)
        result["saved"] = str(args.save)
    if not args.json:
        print(f"test RMSE {result['test_rmse']:.4f}  ({seconds:.1f}s on {model.backend_})"
              + (f"; saved {args.save}" if args.save else ""))
    return result


@command("eval")
def _eval(args: argparse.Namespace) -> dict:
    """RMSE of a saved model on a rating file (ids matched to the model's)."""
    from .model import CFN
    model = CFN.load(args.model)
    ratings = _load(args.ratings)
    score = model.score(ratings)
    if not args.json:
        print(f"RMSE {score:.4f} on {ratings.nnz:,} ratings")
    return {"command": "eval", "model": str(args.model), "ratings": str(args.ratings), "rmse": score,
            "n_ratings": ratings.nnz}


@command("predict")
def _predict(args: argparse.Namespace) -> dict:
    """Predicted ratings of a saved model for (user, item) pairs."""
    from .model import CFN
    model = CFN.load(args.model)
    users, items = _parse_ids(args.user, model.train_.user_ids), _parse_ids(args.item, model.train_.item_ids)
    if len(users) != len(items):
        raise ValueError(f"--user and --item give {len(users)} and {len(items)} ids; they must pair up")
    predicted = model.predict(users, items)
    rows = [{"user": _plain(u), "item": _plain(i), "rating": float(p)} for u, i, p in zip(users, items, predicted)]
    if not args.json:
        for row in rows:
            print(f"{row['user']}\t{row['item']}\t{row['rating']:.4f}")
    return {"command": "predict", "predictions": rows}


def _parse_ids(values: list[str], known: np.ndarray) -> np.ndarray:
    """Command-line ids arrive as strings: convert to the model's id type."""
    if known.dtype.kind in "iu":
        try:
            return np.array([int(v) for v in values], dtype=known.dtype)
        except ValueError as exc:
            raise ValueError(f"ids must be integers for this model: {exc}") from None
    return np.array(values, dtype=known.dtype)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfn", description="Collaborative Filtering Networks (CFN / CFN++)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log per-epoch details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train CFN on the embedded synthetic data set (the main job)")
    _add_model_options(p)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--ratings", type=int, default=100_000)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fit", help="train on a ratings file or MovieLens folder and report test RMSE")
    p.add_argument("--ratings", required=True, help="ratings file (.npz, .csv, u.data, ratings.dat, ...) or folder")
    _add_model_options(p)
    p.add_argument("--test-ratio", type=float, default=0.1)
    p.add_argument("--validation-ratio", type=float, default=0.0, help="carve a validation split from train")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained model to this .npz")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("eval", help="RMSE of a saved model on a ratings file")
    p.add_argument("--model", required=True)
    p.add_argument("--ratings", required=True)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="predict ratings of (user, item) pairs with a saved model")
    p.add_argument("--model", required=True)
    p.add_argument("--user", nargs="+", required=True)
    p.add_argument("--item", nargs="+", required=True)
    p.add_argument("--json", action="store_true")

    for module in _EXTENSION_MODULES:
        importlib.import_module(module).register(sub, command)
    return parser


#: Modules that add further subcommands: each has ``register(subparsers, command_decorator)``.
_EXTENSION_MODULES = tuple(name for name in ("cfn_fast.cli_product", "cfn_fast.paper.cli")
                           if importlib.util.find_spec(name.rsplit(".", 1)[0]) is not None
                           and importlib.util.find_spec(name) is not None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        result = _COMMANDS[args.command](args)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        print(f"cfn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, FloatingPointError) as exc:
        print(f"cfn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(result, default=_plain))
    return 0


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
