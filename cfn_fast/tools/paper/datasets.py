"""Which data sets a data folder offers, and loading them (with side information) for the harness.

A data folder is laid out like ``/work/shared/data`` (``ml-100k/``, ``ml-1m/`` each with
``ratings.npz`` + ``users.csv`` + ``items.csv``) or holds the original MovieLens folders
(``ml-100k/u.data``, ``ml-1m/ratings.dat``, ``ml-10M100K/ratings.dat``, ``ml-20m/ratings.csv``) or a
Douban folder with ``uir.index``.  Nothing is downloaded and nothing is copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cfn_fast.data.ratings import RatingSet

__all__ = ["KNOWN", "SYNTHETIC_QUICK", "DatasetSpec", "discover", "load", "synthetic"]


@dataclass(frozen=True)
class DatasetSpec:
    key: str                       # "ml-1m", ...; the key of the paper's tables
    label: str                     # printed name
    folders: tuple[str, ...]       # folder names to look for under the data folder
    files: tuple[str, ...]         # any of these inside makes the folder usable


KNOWN = (
    DatasetSpec("ml-100k", "MovieLens-100K", ("ml-100k",), ("ratings.npz", "u.data")),
    DatasetSpec("ml-1m", "MovieLens-1M", ("ml-1m",), ("ratings.npz", "ratings.dat")),
    DatasetSpec("ml-10m", "MovieLens-10M", ("ml-10m", "ml-10M100K", "ml-10M"), ("ratings.npz", "ratings.dat")),
    DatasetSpec("ml-20m", "MovieLens-20M", ("ml-20m", "ml-20M"), ("ratings.npz", "ratings.csv")),
    DatasetSpec("douban", "Douban", ("douban", "Douban"), ("uir.index",)),
)
_BY_KEY = {spec.key: spec for spec in KNOWN}

#: (users, items, ratings) of the synthetic stand-in used by ``--quick`` without ML-100K.
SYNTHETIC_QUICK = (400, 250, 12_000)


def discover(data_dir: str | Path | None) -> dict[str, Path]:
    """``{key: folder}`` of the known data sets present under ``data_dir``."""
    found: dict[str, Path] = {}
    if data_dir is None:
        return found
    root = Path(data_dir)
    if not root.is_dir():
        return found
    for spec in KNOWN:
        for name in spec.folders:
            folder = root / name
            if folder.is_dir() and any((folder / f).is_file() for f in spec.files):
                found[spec.key] = folder
                break
    return found


def label(key: str) -> str:
    if key.startswith("synthetic"):
        return key
    return _BY_KEY[key].label if key in _BY_KEY else key


def load(key: str, folder: Path) -> RatingSet:
    """The data set with its side information (users: gender/age/occupation; items: genres, tags)."""
    from cfn_fast.data import load_movielens, load_ratings
    if key == "douban":
        return load_ratings(folder / "uir.index")
    return load_movielens(folder)


def synthetic(shape: tuple[int, int, int] = SYNTHETIC_QUICK, seed: int = 0) -> tuple[str, RatingSet]:
    """A synthetic MovieLens-like set with side information, and its report name."""
    from cfn_fast.data.synthetic import synthetic_ratings
    users, items, ratings = shape
    return f"synthetic-{users}x{items}", synthetic_ratings(users, items, ratings, seed=seed)
