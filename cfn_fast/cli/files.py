"""Checks and files of the ``cfn`` command line that come before or after the real work: outputs
that must not overwrite inputs, split files, and the rating file given to ``cfn eval``.

Everything here runs *before* long work where it can (so a bad output path fails in a second,
not after an hour of training).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cfn_fast.data.ids import id_entries
from cfn_fast.fileio import atomic_write, check_outputs_not_inputs

if TYPE_CHECKING:  # pragma: no cover
    from cfn_fast.data.ratings import RatingSet
    from cfn_fast.model import CFN

__all__ = ["check_eval_ratings", "check_writable_outputs", "resolve_backend_early", "save_split", "split_paths"]

SPLIT_PARTS = ("train", "validation", "test")


def resolve_backend_early(name: str, dtype: str = "float32", dropout: float = 0.0) -> str:
    """Fail on an unavailable backend (e.g. ``cuda`` without CuPy, or one that does not hold ``dtype`` or
    train ``dropout``) before data is loaded."""
    from cfn_fast.backends import resolve_backend
    return resolve_backend(name, dtype, dropout)


def split_paths(folder: str | os.PathLike, with_validation: bool) -> dict[str, Path]:
    """The files ``cfn fit --save-split DIR`` writes."""
    folder = Path(folder)
    return {part: folder / f"{part}.npz" for part in SPLIT_PARTS if with_validation or part != "validation"}


def check_writable_outputs(outputs: Mapping[str, Any], inputs: Mapping[str, Any],
                           folders: Mapping[str, Any] | None = None) -> None:
    """Before any work: no output overwrites an input, every output file's folder exists (output
    ``folders`` may be created later, but must not be files), and no output is a folder."""
    check_outputs_not_inputs(outputs, inputs)
    for option, folder in (folders or {}).items():
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise NotADirectoryError(f"{option} {folder} is a file, not a folder")
    for option, value in outputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value.values()) \
            if isinstance(value, Mapping) else list(value)
        for path in map(Path, paths):
            if path.is_dir():
                raise IsADirectoryError(f"{option} {path} is a folder; name a file to write")
            if folders and option in folders:
                continue  # created when written
            parent = path.parent if str(path.parent) else Path(".")
            if not parent.is_dir():
                raise FileNotFoundError(f"{option} {path}: folder {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise PermissionError(f"{option} {path}: folder {parent} is not writable")


def save_split(paths: Mapping[str, Path], parts: Mapping[str, RatingSet | None]) -> None:
    """Write each part as an ``.npz`` that :func:`cfn_fast.load_ratings` and ``cfn eval --ratings`` read: ``user``,
    ``item`` (original integer ids, their own dtype) and ``rating`` (float32). String ids are never copied once
    per rating at the width of the longest: ``user`` / ``item`` then hold positions into the id tables
    ``user_ids`` / ``item_ids`` (:func:`cfn_fast.data.ids.id_entries`: UTF-8 bytes when fixed width would cost more)."""
    for name, path in paths.items():
        part = parts.get(name)
        if part is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"rating": np.asarray(part.rating, dtype=np.float32)}
        for side, ids, index in (("user", part.user_ids, part.user), ("item", part.item_ids, part.item)):
            if ids.dtype.kind in "iu":
                arrays[side] = ids[index]
            else:
                arrays[side] = np.asarray(index, dtype=np.int64)
                arrays.update(id_entries(f"{side}_ids", ids))
        with atomic_write(path) as fh:
            np.savez(fh, **arrays)


def check_eval_ratings(model: CFN, ratings: RatingSet, source: Any, *,
                       skip_unknown: bool) -> tuple[RatingSet, dict[str, int]]:
    """Refuse ratings outside the model's scale; skip (or refuse) ratings of unknown users/items.

    Returns the ratings to score and what was skipped: ``{"ratings", "users", "items"}`` (distinct
    ids)."""
    low, high = model.train_.scale
    values = ratings.rating
    outside = (values < low) | (values > high)
    if outside.any():
        first = float(values[np.flatnonzero(outside)[0]])
        raise ValueError(f"{source}: {int(outside.sum()):,} rating(s) outside the model's scale [{low:g}, {high:g}], "
                         f"e.g. {first:g}: these ratings are on another scale than the training data")
    if ratings.same_universe(model.train_):
        return ratings, {"ratings": 0, "users": 0, "items": 0}
    user_known = model.train_.user_index(ratings.user_ids, missing="-1") >= 0
    item_known = model.train_.item_index(ratings.item_ids, missing="-1") >= 0
    keep = user_known[ratings.user] & item_known[ratings.item]
    unknown_users = np.unique(ratings.user[~user_known[ratings.user]])
    unknown_items = np.unique(ratings.item[~item_known[ratings.item]])
    skipped = {"ratings": int((~keep).sum()), "users": len(unknown_users), "items": len(unknown_items)}
    if skipped["ratings"] == 0:
        return ratings, skipped
    if not skip_unknown:
        parts = [f"{n:,} {what} id(s) the model does not know, e.g. {ids[idx[:3]].tolist()}"
                 for n, what, ids, idx in ((skipped["users"], "user", ratings.user_ids, unknown_users),
                                           (skipped["items"], "item", ratings.item_ids, unknown_items)) if n]
        raise KeyError(f"{source}: {' and '.join(parts)}, in {skipped['ratings']:,} rating(s); "
                       f"pass --skip-unknown to score the others")
    if not keep.any():
        raise ValueError(f"{source}: all {ratings.nnz:,} ratings name users or items the model does not know; "
                         f"nothing to score")
    return ratings.subset(keep), skipped
