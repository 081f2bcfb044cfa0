"""Product subcommands of the ``cfn`` CLI: ``recommend`` and ``fold-in`` (registered by
:func:`cfn_fast.cli.build_parser` through :func:`register`).

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
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["register", "read_ratings_of_new", "parse_features"]


def register(sub: Any, command: Callable) -> None:
    """Add the ``recommend`` and ``fold-in`` subparsers and their handlers."""
    p = sub.add_parser("recommend", help="top-n items for users of a saved model")
    p.add_argument("--model", required=True, help="model file written by `cfn fit --save` or CFN.save")
    p.add_argument("--user", nargs="+", required=True, help="user id(s) known to the model")
    p.add_argument("-n", type=int, default=10, help="items per user")
    p.add_argument("--include-seen", action="store_true", help="also rank the user's training items")
    p.add_argument("--min-support", type=int, default=None, metavar="K",
                   help="only recommend items with at least K training ratings (default "
                        f"{_default_min_support()}; 0 keeps every item)")
    p.add_argument("--backend", default=None, choices=("auto", "numpy", "cpu", "cuda"),
                   help="engine to load the model on (default: the saved one if available)")
    _add_common(p)
    command("recommend")(_recommend)

    p = sub.add_parser("fold-in", help="score a new user (U-CFN) or new item (I-CFN) without retraining")
    p.add_argument("--model", required=True, help="model file written by `cfn fit --save` or CFN.save")
    p.add_argument("--new", choices=("user", "item"), default=None,
                   help="what the new row is (required): 'user' for a U-CFN model, 'item' for an I-CFN one")
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
    _add_common(p)
    command("fold-in")(_fold_in)


def _default_min_support() -> int:
    from .fitted.ranking import DEFAULT_MIN_SUPPORT
    return DEFAULT_MIN_SUPPORT


def _min_support(args: argparse.Namespace) -> int:
    value = _default_min_support() if args.min_support is None else args.min_support
    if value < 0:
        raise ValueError(f"--min-support must be >= 0, got {value}")
    return value


def _add_common(p: Any) -> None:
    from .cli import _add_common as add
    add(p)


def _recommend(args: argparse.Namespace) -> dict:
    from .cli import _parse_ids, _plain
    from .model import CFN
    if args.n < 0:
        raise ValueError(f"-n must be >= 0, got {args.n}")
    model = CFN.load(args.model, backend=args.backend)
    users = _parse_ids(args.user, model.train_.user_ids, "--user")
    min_support = _min_support(args)
    lists = model.recommend_batch(users, args.n, exclude_seen=not args.include_seen, min_support=min_support)
    rows = [{"user": _plain(u), "items": [{"item": _plain(i), "score": float(s)} for i, s in zip(ids, scores)]}
            for u, (ids, scores) in zip(users, lists)]
    if not args.json:
        for row in rows:
            for rank, entry in enumerate(row["items"], 1):
                print(f"{row['user']}\t{rank}\t{entry['item']}\t{entry['score']:.4f}")
    return {"command": "recommend", "model": str(args.model), "n": args.n,
            "exclude_seen": not args.include_seen, "min_support": min_support, "recommendations": rows}


def _fold_in(args: argparse.Namespace) -> dict:
    from .cli import _parse_ids, _plain
    from .model import CFN
    if args.n < 0:
        raise ValueError(f"-n must be >= 0, got {args.n}")
    model = CFN.load(args.model, backend=args.backend)
    new, other = ("user", "item") if model.kind_ == "user" else ("item", "user")
    if args.new is None:
        from .cli_errors import UsageError
        raise UsageError(f"--new is required: say what the new row is; this {'U' if new == 'user' else 'I'}-CFN "
                         f"model folds in a new {new} (--new {new})"
                         + ("" if new == "user" else "; a new user needs a U-CFN model (cfn fit --kind user)"))
    known = model.train_.item_ids if other == "item" else model.train_.user_ids
    raw_ids, ratings = read_ratings_of_new(args.ratings_of_new)
    ids = _parse_ids(raw_ids, known, "--ratings-of-new") if raw_ids else np.zeros(0, dtype=known.dtype)
    features = None if args.features is None else parse_features(args.features)
    if args.new == new:
        _check_features(model, features, new)
    fold = model.fold_in(ids, ratings, features=features, new=args.new)
    best, scores = fold.recommend(args.n, min_support=_min_support(args))
    result: dict[str, Any] = {
        "command": "fold-in", "model": str(args.model), "new": new, "n_ratings": len(ratings),
        "recommendations": [{other: _plain(i), "score": float(s)} for i, s in zip(best, scores)]}
    if args.predict:
        wanted = _parse_ids(args.predict, known, "--predict")
        result["predictions"] = [{other: _plain(i), "rating": float(r)}
                                 for i, r in zip(wanted, fold.predict(wanted))]
    if not args.json:
        print(f"folded in a new {new} with {len(ratings)} rating(s); top {len(best)} {other}s:")
        for rank, entry in enumerate(result["recommendations"], 1):
            print(f"{rank}\t{entry[other]}\t{entry['score']:.4f}")
        for entry in result.get("predictions", []):
            print(f"predict\t{entry[other]}\t{entry['rating']:.4f}")
    return result


def _check_features(model: Any, features: np.ndarray | None, new: str) -> None:
    """The model's feature checks, in the words of the command line (``--features``)."""
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ratings file at {str(path)!r}")
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
    (comma- or whitespace-separated)."""
    if len(values) == 1 and Path(values[0]).is_file():
        text = Path(values[0]).read_text(encoding="utf-8")
        values = text.replace(",", " ").split()
    try:
        return np.array([float(v) for v in values], dtype=np.float32)
    except ValueError:
        raise ValueError(f"--features must be numbers (or one file of numbers), got {values[:5]}") from None
