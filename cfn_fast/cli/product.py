"""The product subcommands of ``cfn``: ``demo``, ``fit``, ``eval``, ``predict``, ``recommend`` and ``fold-in``.

    cfn recommend --model M --user U [U ...] [-n 10] [--include-seen] [--json]
    cfn fold-in   --model M --new user|item --ratings-of-new FILE [--features F [F ...] | FILE]
                  [-n 10] [--predict ID [ID ...]] [--json]

``FILE`` for ``--ratings-of-new`` is a CSV of ``id,rating`` lines (a header line is allowed)
giving the new row's ratings over the other side: items for a U-CFN (a new user), users for
an I-CFN (a new item); ``--new`` must say which, so that a new user is never folded in as an
item by mistake.  Errors exit with status 2 (bad input) or 1 and one line on stderr.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfn_fast.fileio import check_input_file

from . import common
from .common import (
    MODEL_HELP,
    add_common_options,
    add_model_options,
    add_scale_option,
    command,
    int_in,
    parse_ids,
    plain,
)
from .errors import UsageError
from .files import check_eval_ratings, check_writable_outputs, resolve_backend_early, save_split, split_paths

__all__ = ["demo", "eval_model", "fit", "fold_in", "parse_features", "predict", "read_ratings_of_new", "recommend"]


# ----------------------------------------------------------------------------- demo, fit
def _kind_label(model) -> str:
    """``I-CFN`` / ``U-CFN``, and whether ``--kind auto`` chose it; what a blend holds."""
    if model.kind_ == "blend":
        return model.blend_.summary().replace("×", " x")
    label = "I-CFN" if model.kind_ == "item" else "U-CFN"
    if model.centring_ == "bias":
        label += ", bias centring"
    return f"{label} (chosen by --kind auto)" if model.kind == "auto" else label


def _announce_selection(model, quiet: bool, validation: Any = None) -> None:
    if model.kind == "blend" and not quiet:
        networks = "more" if model.quality == "best" else "four"
        how = "on the training split and weighing them on the validation split" if validation is not None else \
            "on a validation part, weighing them there, then training the chosen ones on all of the training set"
        print(f"kind blend: training the bias model, factors and {networks} CFN networks {how} ...", flush=True)
    if model.kind == "auto" and not quiet:
        print("kind auto: comparing I-CFN and U-CFN with the sample and the bias centring on validation "
              f"({'the given centring only, ' if model.centring else ''}one fit each) ...", flush=True)


def _selection(model) -> dict:
    """``{"selection": ...}`` when ``--kind auto`` chose on validation, ``{"blend": ...}`` for a blend (its
    members, weights and validation figures), else nothing; and the centring trained (None for a blend)."""
    if model.kind_ == "blend":
        blend = model.blend_
        members = [{"kind": p["kind"], "centring": p["centring"], "hidden": list(p["hidden"]), "epochs": p["epochs"],
                    "seed": p["seed"], "weight": float(w)} for p, w in zip(blend.member_params, blend.weights)]
        report = {k: v for k, v in blend.report.items() if k != "cv_rmse"}
        return {"centring": None, "blend": {"members": members, **report}}
    chosen = {} if model.selection_ is None else {"selection": model.selection_.as_dict()}
    return {"centring": model.centring_, **chosen}


def _epoch_callbacks(model, enabled: bool, label: str = "val RMSE") -> tuple:
    """The per-epoch printer (a blend trains several networks and prints none)."""
    return () if model.kind == "blend" else (_epoch_printer(enabled, label),)


def _epoch_printer(enabled: bool, label: str = "val RMSE"):
    def print_epoch(record) -> None:
        if enabled:
            val = "" if record.validation_rmse is None else f"  {label} {record.validation_rmse:.4f}"
            print(f"epoch {record.epoch:3d}  lr {record.lr:.4f}  loss {record.train_loss:.5f}{val}"
                  f"  {record.seconds:.2f}s", flush=True)
    return print_epoch


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train CFN on the embedded synthetic data set (the main job)",
                       description="Train CFN on a synthetic rating set: validation RMSE per epoch, then the test "
                                   "RMSE beside the per-item-mean baseline.")
    add_model_options(p)
    p.add_argument("--users", type=int_in(1), default=2000, help="number of synthetic users")
    p.add_argument("--items", type=int_in(1), default=1000, help="number of synthetic items")
    p.add_argument("--n-ratings", type=int_in(1), default=100_000, help="number of synthetic ratings")
    p.add_argument("--ratings", type=_deprecated_count, dest="n_ratings", help=argparse.SUPPRESS)
    add_common_options(p)


def _deprecated_count(text: str) -> int:
    print("cfn demo: note: --ratings is deprecated for the number of ratings; use --n-ratings "
          "(`cfn fit --ratings` is a file)", file=sys.stderr)
    return int_in(1)(text)


@command("demo", _demo_parser)
def demo(args: argparse.Namespace) -> dict:
    """The main job: CFN on the embedded synthetic rating set.

    The per-epoch RMSE is measured on a validation split carved from the training ratings; the
    test split is scored once, after training (nothing is chosen on it)."""
    from cfn_fast.data import synthetic_ratings, train_validation_test_split
    from cfn_fast.tools.baselines import ItemMean
    model = common.model_from_args(args)
    resolve_backend_early(args.backend, args.dtype, args.dropout)
    ratings = synthetic_ratings(args.users, args.items, args.n_ratings, seed=args.seed)
    train, validation, test = train_validation_test_split(ratings, 0.1, 0.1, seed=args.seed)
    if not args.json:
        print(f"data: {ratings} (synthetic, seed {args.seed}); {train.nnz:,} train / {validation.nnz:,} "
              f"validation / {test.nnz:,} test ratings")
        name = {"item": "I-CFN", "user": "U-CFN", "blend": "blend of CFN"}.get(args.kind, "CFN (kind auto)")
        print(f"model: {name}{'++' if args.use_side_info else ''} "
              f"hidden={tuple(args.hidden)} backend={model.backend if model.backend != 'auto' else 'auto'}")
    start = time.perf_counter()
    _announce_selection(model, args.json, validation)
    model.fit(train, validation=validation, callbacks=_epoch_callbacks(model, not args.json, "validation RMSE"))
    seconds = time.perf_counter() - start
    baseline = ItemMean().fit(train).score(test)
    final = model.score(test)
    result = {"command": "demo", "data": "synthetic", "n_ratings": ratings.nnz, "kind": model.kind_,
              **_selection(model),
              "backend": model.backend_, "epochs": model.epochs_trained_, "train_seconds": round(seconds, 3),
              "test_rmse": final, "item_mean_rmse": baseline,
              "improvement_vs_item_mean": 1.0 - final / baseline,
              "validation_rmse_per_epoch": [r.validation_rmse for r in model.history_]}
    if not args.json:
        print(f"test RMSE {final:.4f} after the last epoch (per-item mean {baseline:.4f}, "
              f"{100 * result['improvement_vs_item_mean']:.1f}% better) with {_kind_label(model)} on backend "
              f"{model.backend_} in {seconds:.1f}s")
    return result


def _fit_parser(sub: Any) -> None:
    p = sub.add_parser("fit", help="train on a ratings file or MovieLens folder and report test RMSE")
    p.add_argument("--ratings", required=True, help="ratings file (.npz, .csv, u.data, ratings.dat, ...) or folder")
    add_model_options(p)
    p.add_argument("--test-ratio", type=float, default=0.1, help="share of the ratings held out for the test RMSE")
    p.add_argument("--validation-ratio", type=float, default=0.0,
                   help="share of the training ratings carved out as a validation split (0: none)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--save", default=None, help="write the trained model to this .npz")
    p.add_argument("--save-split", default=None, metavar="DIR",
                   help="write the split into DIR (train.npz, test.npz[, validation.npz]: original ids) for "
                        "`cfn eval --ratings DIR/test.npz`")
    add_scale_option(p)
    p.add_argument("--profile", action="store_true", help="print where each epoch's time goes, phase by phase")
    p.add_argument("--trace", default=None, metavar="FILE", help="write a Chrome trace (Perfetto) of the run")
    add_common_options(p)


@command("fit", _fit_parser)
def fit(args: argparse.Namespace) -> dict:
    """Train on a rating file (held-out test split), report test RMSE, optionally save the model."""
    from cfn_fast.data import train_test_split, train_validation_test_split
    for option in ("test_ratio", "validation_ratio"):
        _check_ratio(args, option)
    if args.split_seed < 0:
        raise ValueError(f"--split-seed must be an integer >= 0, got {args.split_seed}")
    splits = split_paths(args.save_split, args.validation_ratio > 0) if args.save_split else None
    check_writable_outputs({"--save": args.save, "--save-split": splits, "--trace": args.trace},
                           {"--ratings": args.ratings},
                           {"--save-split": args.save_split})
    model = common.model_from_args(args)
    resolve_backend_early(args.backend, args.dtype, args.dropout)
    ratings = common.read_ratings(args.ratings, args.scale)
    if not args.json:
        print(f"data: {ratings.nnz:,} ratings, {common.scale_note(ratings, args.scale)}", flush=True)
    if args.validation_ratio > 0:
        train, validation, test = train_validation_test_split(ratings, args.test_ratio, args.validation_ratio,
                                                              seed=args.split_seed)
    else:
        (train, test), validation = train_test_split(ratings, args.test_ratio, seed=args.split_seed), None
    if splits:
        save_split(splits, {"train": train, "validation": validation, "test": test})
    model.profile = bool(args.profile or args.trace)
    start = time.perf_counter()
    _announce_selection(model, args.json, validation)
    model.fit(train, validation=validation, callbacks=_epoch_callbacks(model, not args.json))
    seconds = time.perf_counter() - start
    result = {"command": "fit", "ratings": str(args.ratings), "scale": list(ratings.scale),
              "scale_source": "declared" if args.scale else "observed", "kind": model.kind_,
              **_selection(model), "backend": model.backend_,
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
        from cfn_fast.profiling import report_profile
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


# ----------------------------------------------------------------------------- eval, predict
def _eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="RMSE of a saved model on a ratings file")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--ratings", required=True, help="ratings file or folder (e.g. the test.npz of --save-split)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="skip ratings of users or items the model does not know (and report how many); "
                        "without it they are an error")
    add_scale_option(p)
    add_common_options(p)


@command("eval", _eval_parser)
def eval_model(args: argparse.Namespace) -> dict:
    """RMSE of a saved model on a rating file (ids matched to the model's)."""
    from cfn_fast.model import CFN
    model = CFN.load(args.model)
    ratings = common.read_ratings(args.ratings, args.scale)
    ratings, skipped = check_eval_ratings(model, ratings, args.ratings, skip_unknown=args.skip_unknown)
    score = model.score(ratings)
    if not args.json:
        print(f"RMSE {score:.4f} on {ratings.nnz:,} ratings"
              + (f" (skipped {skipped['ratings']:,} rating(s) of {skipped['users']:,} unknown user(s) and "
                 f"{skipped['items']:,} unknown item(s))" if args.skip_unknown else ""))
    return {"command": "eval", "model": str(args.model), "ratings": str(args.ratings), "rmse": score,
            "n_ratings": ratings.nnz, "skipped": skipped if args.skip_unknown else None}


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict ratings of (user, item) pairs with a saved model")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--user", nargs="+", required=True, help="user id(s), paired with --item")
    p.add_argument("--item", nargs="+", required=True, help="item id(s), paired with --user")
    add_common_options(p)


@command("predict", _predict_parser)
def predict(args: argparse.Namespace) -> dict:
    """Predicted ratings of a saved model for (user, item) pairs."""
    from cfn_fast.model import CFN
    model = CFN.load(args.model)
    users = parse_ids(args.user, model.train_.user_ids, "--user")
    items = parse_ids(args.item, model.train_.item_ids, "--item")
    if len(users) != len(items):
        raise ValueError(f"--user and --item give {len(users)} and {len(items)} ids; they must pair up")
    predicted = model.predict(users, items)
    rows = [{"user": plain(u), "item": plain(i), "rating": float(p)} for u, i, p in zip(users, items, predicted)]
    if not args.json:
        for row in rows:
            print(f"{row['user']}\t{row['item']}\t{row['rating']:.4f}")
    return {"command": "predict", "predictions": rows}


# ----------------------------------------------------------------------------- recommend, fold-in
def _recommend_parser(sub: Any) -> None:
    p = sub.add_parser("recommend", help="top-n items for users of a saved model")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--user", nargs="+", required=True, help="user id(s) known to the model")
    p.add_argument("-n", type=int, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="also rank the user's training items")
    p.add_argument("--min-support", type=int, default=None, metavar="K",
                   help="only recommend items with at least K training ratings (default "
                        f"{_default_min_support()}; 0 keeps every item)")
    p.add_argument("--backend", default=None, choices=("auto", "numpy", "cpu", "cuda"),
                   help="engine to load the model on (default: the saved one if available)")
    add_common_options(p)


def _fold_in_parser(sub: Any) -> None:
    p = sub.add_parser("fold-in", help="score a new user (U-CFN) or new item (I-CFN) without retraining")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--new", choices=("user", "item"), default=None,
                   help="what the new row is: 'user' for a U-CFN model, 'item' for an I-CFN one (required for "
                        "those); a blend (the default model) folds in either (default: user)")
    p.add_argument("--ratings-of-new", required=True, metavar="FILE",
                   help="CSV of id,rating: the new row's ratings (item ids for U-CFN, user ids for I-CFN)")
    p.add_argument("--features", nargs="+", default=None, metavar="F",
                   help="the new row's side-information values, or one file holding them")
    p.add_argument("-n", type=int, default=10, help="how many recommendations")
    p.add_argument("--min-support", type=int, default=None, metavar="K",
                   help="only recommend ids with at least K training ratings (default "
                        f"{_default_min_support()}; 0 keeps every id)")
    p.add_argument("--predict", nargs="+", default=None, metavar="ID",
                   help="also predict the new row's rating for these ids of the other side")
    p.add_argument("--backend", default=None, choices=("auto", "numpy", "cpu", "cuda"),
                   help="engine to load the model on (default: the saved one if available)")
    add_common_options(p)


def _default_min_support() -> int:
    from cfn_fast.fitted.ranking import DEFAULT_MIN_SUPPORT
    return DEFAULT_MIN_SUPPORT


def _min_support(args: argparse.Namespace) -> int:
    value = _default_min_support() if args.min_support is None else args.min_support
    if value < 0:
        raise ValueError(f"--min-support must be >= 0, got {value}")
    return value


@command("recommend", _recommend_parser)
def recommend(args: argparse.Namespace) -> dict:
    from cfn_fast.model import CFN
    if args.n < 0:
        raise ValueError(f"-n must be >= 0, got {args.n}")
    model = CFN.load(args.model, backend=args.backend)
    users = parse_ids(args.user, model.train_.user_ids, "--user")
    min_support = _min_support(args)
    lists = model.recommend_batch(users, args.n, exclude_seen=not args.include_seen, min_support=min_support)
    rows = [{"user": plain(u), "items": [{"item": plain(i), "score": float(s)} for i, s in zip(ids, scores)]}
            for u, (ids, scores) in zip(users, lists)]
    if not args.json:
        for row in rows:
            for rank, entry in enumerate(row["items"], 1):
                print(f"{row['user']}\t{rank}\t{entry['item']}\t{entry['score']:.4f}")
    return {"command": "recommend", "model": str(args.model), "n": args.n,
            "exclude_seen": not args.include_seen, "min_support": min_support, "recommendations": rows}


@command("fold-in", _fold_in_parser)
def fold_in(args: argparse.Namespace) -> dict:
    from cfn_fast.model import CFN
    if args.n < 0:
        raise ValueError(f"-n must be >= 0, got {args.n}")
    model = CFN.load(args.model, backend=args.backend)
    new, other = ("user", "item") if model.kind_ == "user" or (model.kind_ == "blend" and args.new != "item") \
        else ("item", "user")
    if args.new is None and model.kind_ != "blend":
        raise UsageError(f"--new is required: say what the new row is; this {'U' if new == 'user' else 'I'}-CFN "
                         f"model folds in a new {new} (--new {new})"
                         + ("" if new == "user" else "; a new user needs a U-CFN model (cfn fit --kind user)"))
    known = model.train_.item_ids if other == "item" else model.train_.user_ids
    raw_ids, ratings = read_ratings_of_new(args.ratings_of_new)
    ids = parse_ids(raw_ids, known, "--ratings-of-new") if raw_ids else np.zeros(0, dtype=known.dtype)
    features = None if args.features is None else parse_features(args.features)
    if args.new in (new, None):
        _check_features(model, features, new)
    fold = model.fold_in(ids, ratings, features=features, new=new if model.kind_ == "blend" else args.new)
    best, scores = fold.recommend(args.n, min_support=_min_support(args))
    result: dict[str, Any] = {
        "command": "fold-in", "model": str(args.model), "new": new, "n_ratings": len(ratings),
        "recommendations": [{other: plain(i), "score": float(s)} for i, s in zip(best, scores)]}
    if args.predict:
        wanted = parse_ids(args.predict, known, "--predict")
        result["predictions"] = [{other: plain(i), "rating": float(r)}
                                 for i, r in zip(wanted, fold.predict(wanted))]
    if not args.json:
        print(f"folded in a new {new} with {len(ratings)} rating(s); top {len(best)} {other}s:")
        for rank, entry in enumerate(result["recommendations"], 1):
            print(f"{rank}\t{entry[other]}\t{entry['score']:.4f}")
        for entry in result.get("predictions", []):
            print(f"predict\t{entry[other]}\t{entry['rating']:.4f}")
    return result


def _check_features(model: Any, features: np.ndarray | None, new: str) -> None:
    """The model's feature checks, in the words of the command line (``--features``); a blend's are those of
    its networks that fold in a new ``new``."""
    if model.kind_ == "blend":
        weights = model.blend_.fold_in_weights[new]
        sides = [net.side for net, w in zip(model.fitted_.networks, weights) if w > 0 and net.side is not None]
        dim = sides[0].shape[1] if sides else None
    else:
        dim = None if model.side_ is None else model.side_.shape[1]
    if dim is None:
        if features is not None:
            raise ValueError(f"this model was trained without {new} side information: leave out --features")
        return
    if features is None:
        raise ValueError(f"this model uses {dim} {new} features: pass --features with {dim} numbers "
                         f"(or one file holding them) for the new {new}")
    if features.size != dim:
        raise ValueError(f"--features must give {dim} values (the model's {new} features), got {features.size}")
    if not np.all(np.isfinite(features)):
        raise ValueError("--features contains NaN or infinite values")


def read_ratings_of_new(path: str | Path) -> tuple[list[str], list[float]]:
    """``(ids, ratings)`` from a CSV of ``id,rating`` lines; a first line whose rating is not a
    number is a header.  Blank lines are skipped; anything else malformed is a ``ValueError``
    naming the line."""
    path = check_input_file(path, "ratings file")
    ids: list[str] = []
    ratings: list[float] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh), 1):
            cells = [c.strip() for c in row]
            if not cells or all(not c for c in cells):
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}:{number}: expected 'id,rating', got {','.join(row)!r}")
            try:
                value = float(cells[1])
            except ValueError:
                if number == 1:  # header
                    _check_header(path, cells)
                    continue
                raise ValueError(f"{path}:{number}: rating {cells[1]!r} is not a number") from None
            ids.append(cells[0])
            ratings.append(value)
    return ids, ratings


def _check_header(path: Path, cells: list[str]) -> None:
    """A header naming the rating first would swap the columns: refuse it rather than guess."""
    first, second = cells[0].lower(), cells[1].lower()
    if first in ("rating", "ratings", "score", "stars") or second in ("id", "user", "item", "userid", "itemid",
                                                                         "movieid", "user_id", "item_id"):
        raise ValueError(f"{path}:1: the header {','.join(cells)!r} puts the columns in the order rating,id; "
                         f"the file must be 'id,rating'")


def parse_features(values: list[str]) -> np.ndarray:
    """Side-information values from the command line, or from one file of numbers
    (comma- or whitespace-separated): a single value that is not a number but names something
    on disk is that file."""
    if len(values) == 1 and not _is_number(values[0]) and os.path.lexists(values[0]):
        text = check_input_file(values[0], "features file").read_text(encoding="utf-8")
        values = text.replace(",", " ").split()
    try:
        return np.array([float(v) for v in values], dtype=np.float32)
    except ValueError:
        raise ValueError(f"--features must be numbers (or one file of numbers), got {values[:5]}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
