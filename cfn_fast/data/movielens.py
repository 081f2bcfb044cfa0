"""Reading a MovieLens folder (ML-100K, 1M, 10M, 20M/25M) with its user / item side information.

:func:`load_movielens` reads a whole MovieLens folder (as unzipped from GroupLens, or the team's
``ratings.npz`` + ``users.csv`` + ``items.csv`` layout) and attaches user / item features: the
rating file through :mod:`cfn_fast.data.rating_files`, the side files (``u.user``, ``u.item``,
``users.dat``, ``movies.dat``, ``tags.dat``, ``movies.csv``, ``tags.csv``, ``users.csv``,
``items.csv``) here.

Every malformed input raises a ``ValueError`` that names the file and the problem.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .rating_files import (
    ParsedRatings,
    TableFormat,
    check_rating_file,
    one_line,
    parse_npz,
    parse_rating_file,
    read_delimited,
    require_pandas,
    to_rating_set,
)
from .ratings import RatingSet
from .side_info import build_count_matrix, low_rank_embedding, multi_hot, one_hot

__all__ = ["load_movielens"]

# ----------------------------------------------------------------------------- MovieLens constants
_AGE_BRACKETS = (1, 18, 25, 35, 45, 50, 56)  # ML-1M codes = lower bound of each bracket (1 = "under 18")
_AGE_NAMES = ("Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
_ML100K_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer")
_ML1M_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western")
_ML100K_GENRES = ("unknown",) + _ML1M_GENRES  # u.item's 19 flag columns, in file order
_TAG_RANK = 50


# ============================================================================= public API
def load_movielens(folder: str | Path, *, side_info: bool = True,
                   scale: tuple[float, float] | None = None) -> RatingSet:
    """Read a MovieLens folder (ML-100K, 1M, 10M, 20M/25M) with optional user / item features.

    The folder may be laid out as unzipped from GroupLens (``u.data`` + ``u.user`` + ``u.item``;
    ``ratings.dat`` + ``users.dat`` + ``movies.dat`` [+ ``tags.dat``]; ``ratings.csv`` +
    ``movies.csv`` [+ ``tags.csv``]) or as ``ratings.npz`` + ``users.csv`` + ``items.csv``.
    A folder holding a single sub-folder with those files (as the zips unpack) works too.

    With ``side_info=True`` users get one-hot gender (2), age bracket (7, ML-1M brackets) and
    occupation (21) columns, items multi-hot genres and, where tags exist (ML-10M/20M), a
    50-dim SVD embedding of the item x lower-cased-tag count matrix.  Users and items that
    appear only in the side files join the universe (cold rows with features, no ratings).
    ``scale`` defaults to the observed ``(min, max)`` of the ratings (ML-100K / ML-1M: (1, 5),
    ML-10M+: (0.5, 5)), as in :func:`load_ratings`.
    """
    folder = _resolve_folder(Path(folder))
    layout = _detect_layout(folder)
    reader = _LAYOUTS[layout]
    rs = reader(folder, side_info, scale)
    return rs


# ============================================================================= MovieLens folders
_RATING_FILES = ("ratings.npz", "u.data", "ratings.dat", "ratings.csv")


def _resolve_folder(folder: Path) -> Path:
    """The folder itself, or its single sub-folder when that is where the rating file is."""
    if not folder.exists():
        raise FileNotFoundError(f"MovieLens folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    if any((folder / f).is_file() for f in _RATING_FILES):
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subs) == 1 and any((subs[0] / f).is_file() for f in _RATING_FILES):
        return subs[0]
    raise ValueError(f"{folder}: no MovieLens rating file; expected one of {list(_RATING_FILES)}")


def _detect_layout(folder: Path) -> str:
    return next(f for f in _RATING_FILES if (folder / f).is_file())


@dataclass(frozen=True)
class _Side:
    """Feature rows for some ids (not yet aligned to the RatingSet's universe)."""

    ids: np.ndarray
    features: np.ndarray
    names: tuple[str, ...]


def _assemble(rating_path: Path, parsed: ParsedRatings, users: _Side | None, items: _Side | None,
              tags: tuple[np.ndarray, np.ndarray] | None, scale: tuple[float, float] | None) -> RatingSet:
    """RatingSet over ratings plus side-file ids, with features aligned to its sorted id order."""
    kwargs: dict[str, Any] = {}
    if users is not None:
        kwargs["user_ids"] = np.union1d(np.unique(parsed.user), users.ids)
    if items is not None or tags is not None:
        item_ids = np.unique(parsed.item)
        kwargs["item_ids"] = item_ids if items is None else np.union1d(item_ids, items.ids)
    rs = to_rating_set(rating_path, parsed, scale, "error", **kwargs)
    user_f = _align(users, rs.user_index, rs.n_users)
    item_f = _align(items, rs.item_index, rs.n_items)
    if tags is not None:
        item_f = _append_tags(rs, item_f, *tags)
    return rs.with_features(None if user_f is None else user_f[0], None if item_f is None else item_f[0],
                            user_feature_names=None if user_f is None else user_f[1],
                            item_feature_names=None if item_f is None else item_f[1])


def _align(side: _Side | None, index_of: Callable[..., np.ndarray], n_rows: int
           ) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """Scatter side rows into the universe's order; ids without a side row get zeros."""
    if side is None:
        return None
    out = np.zeros((n_rows, side.features.shape[1]), dtype=np.float32)
    out[index_of(side.ids)] = side.features
    return out, side.names


def _append_tags(rs: RatingSet, item_f: tuple[np.ndarray, tuple[str, ...]] | None,
                 movie_ids: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Genres (if any) followed by the low-rank embedding of the item x tag count matrix."""
    rows = rs.item_index(movie_ids, missing="-1") if len(movie_ids) else np.zeros(0, np.int32)
    counts, _ = build_count_matrix(rows, tags, n_rows=rs.n_items)
    emb = low_rank_embedding(counts, rank=_TAG_RANK)
    names = tuple(f"tag_svd_{j}" for j in range(emb.shape[1]))
    if item_f is None:
        return emb, names
    return np.hstack([item_f[0], emb]), item_f[1] + names


def _unique_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: id {uniq[counts > 1][0].item()!r} appears on more than one line")
    return ids


# ----------------------------------------------------------------------------- feature encoders
def _categories(observed: Any, canonical: tuple[Any, ...]) -> list[Any]:
    """The canonical categories (stable width), plus any unexpected ones appended in sorted order."""
    extra = sorted(set(observed) - set(canonical), key=str)
    return list(canonical) + extra


def _user_side(path: Path, ids: Any, gender: Any, age: Any, occupation: Any) -> _Side:
    """One-hot gender (F, M), ML-1M age bracket (7) and occupation (21) for each user."""
    try:
        age_num = np.asarray(age, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: ages must be numbers ({one_line(exc)})") from exc
    if not np.all(np.isfinite(age_num)) or (age_num < 0).any():
        raise ValueError(f"{path}: ages must be finite non-negative numbers")
    # Bucket numeric ages (ML-100K) into ML-1M's brackets; ML-1M's codes map onto themselves.
    bracket = np.searchsorted(np.array(_AGE_BRACKETS[1:]), age_num, side="right")
    blocks = []
    try:
        blocks.append(one_hot([str(g).strip().upper() for g in gender], ("F", "M"), prefix="gender="))
        blocks.append(one_hot(bracket.tolist(), range(len(_AGE_NAMES)), prefix="age="))
        blocks.append(_occupation_one_hot(list(occupation)))
    except ValueError as exc:
        raise ValueError(f"{path}: {one_line(exc)}") from exc
    age_names = tuple(f"age={n}" for n in _AGE_NAMES)
    names = blocks[0][1] + age_names + blocks[2][1]
    return _Side(_unique_ids(path, np.asarray(ids)), np.hstack([b[0] for b in blocks]), names)


def _occupation_one_hot(occupation: list[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """ML-1M numeric codes 0..20 (named from its README) or ML-100K's occupation words."""
    if all(isinstance(o, (int, np.integer)) for o in occupation):
        mat, _ = one_hot([int(o) for o in occupation], range(len(_ML1M_OCCUPATIONS)))
        return mat, tuple(f"occupation={n}" for n in _ML1M_OCCUPATIONS)
    words = [str(o).strip() for o in occupation]
    return one_hot(words, _categories(words, _ML100K_OCCUPATIONS), prefix="occupation=")


def _genre_side(path: Path, ids: Any, genres: list[Any], canonical: tuple[str, ...]) -> _Side:
    """Multi-hot genres: the data set's canonical genre columns, or its own labels when they differ."""
    labels = {g.strip() for entry in genres if isinstance(entry, str) for g in entry.split("|") if g.strip()}
    # ML-10M/20M spell genres differently ("Children", "IMAX", "(no genres listed)"): when the
    # data leaves the canonical list, its own sorted labels are the columns.
    categories = list(canonical) if labels <= set(canonical) else sorted(labels)
    mat, names = multi_hot(genres, "|", categories=categories, prefix="genre=")
    return _Side(_unique_ids(path, np.asarray(ids)), mat, names)


# ----------------------------------------------------------------------------- small text files
def _lines(path: Path, encoding: str = "latin-1") -> list[str]:
    """Non-blank lines of a small side file (MovieLens .dat/.user/.item are latin-1)."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not {encoding} text") from exc
    return [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]


def _int_field(path: Path, lineno: int, value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"{path}: line {lineno}: {what} {value!r} is not an integer") from None


def _split_fields(path: Path, lineno: int, line: str, sep: str, n: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) != n:
        raise ValueError(f"{path}: line {lineno}: expected {n} fields separated by {sep!r}, "
                         f"found {len(fields)}: {line[:80]!r}")
    return fields


def _read_users_table(path: Path, sep: str, order: tuple[int, int, int, int], n: int) -> _Side:
    """u.user (id|age|gender|occupation|zip) or users.dat (id::gender::age::occupation::zip)."""
    rows = [_split_fields(path, k, ln, sep, n) for k, ln in enumerate(_lines(path), 1)]
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    i_id, i_gender, i_age, i_occ = order
    ids = [_int_field(path, k, r[i_id], "user id") for k, r in enumerate(rows, 1)]
    ages = [_int_field(path, k, r[i_age], "age") for k, r in enumerate(rows, 1)]
    occ: list[Any] = [r[i_occ].strip() for r in rows]
    if sep == "::":  # ML-1M occupations are codes
        occ = [_int_field(path, k, o, "occupation") for k, o in enumerate(occ, 1)]
    return _user_side(path, ids, [r[i_gender] for r in rows], ages, occ)


def _read_u_item(path: Path) -> _Side:
    """ML-100K u.item: id|title|release|video release|url|19 genre flags."""
    ids, flags = [], []
    for k, ln in enumerate(_lines(path), 1):
        fields = ln.split("|")
        if len(fields) < 5 + len(_ML100K_GENRES):
            raise ValueError(f"{path}: line {k}: expected {5 + len(_ML100K_GENRES)} '|'-separated fields, "
                             f"found {len(fields)}")
        ids.append(_int_field(path, k, fields[0], "movie id"))
        flag = [_int_field(path, k, f, "genre flag") for f in fields[-len(_ML100K_GENRES):]]
        flags.append(flag)
    mat = np.asarray(flags, dtype=np.float32).reshape(len(ids), len(_ML100K_GENRES))
    if ((mat != 0) & (mat != 1)).any():
        raise ValueError(f"{path}: genre flags must be 0 or 1")
    return _Side(_unique_ids(path, np.asarray(ids)), mat, tuple(f"genre={g}" for g in _ML100K_GENRES))


def _read_movies_dat(path: Path, canonical: tuple[str, ...]) -> _Side:
    """movies.dat: MovieID::Title::Genres (titles may hold ':' and non-ASCII latin-1 letters)."""
    ids, genres = [], []
    for k, ln in enumerate(_lines(path), 1):
        head, sep, rest = ln.partition("::")
        if not sep or "::" not in rest:
            raise ValueError(f"{path}: line {k}: expected MovieID::Title::Genres, got {ln[:80]!r}")
        ids.append(_int_field(path, k, head, "movie id"))
        genres.append(rest.rsplit("::", 1)[1].strip())
    return _genre_side(path, ids, genres, canonical)


def _read_tags_dat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """tags.dat: UserID::MovieID::Tag::Timestamp -> (movie ids, lower-cased tags)."""
    movies, tags = [], []
    for k, ln in enumerate(_lines(path), 1):
        parts = ln.split("::", 2)
        if len(parts) != 3 or "::" not in parts[2]:
            raise ValueError(f"{path}: line {k}: expected UserID::MovieID::Tag::Timestamp, got {ln[:80]!r}")
        tag = parts[2].rsplit("::", 1)[0].strip().lower()
        if tag:
            movies.append(_int_field(path, k, parts[1], "movie id"))
            tags.append(tag)
    return np.asarray(movies, dtype=np.int64), np.asarray(tags, dtype=str)


def _read_csv_table(path: Path, required: tuple[str, ...]) -> Any:
    """A small CSV side table via pandas, with the required columns checked."""
    pd = require_pandas()
    try:  # read like a rating file's table: a trailing delimiter never shifts the columns
        frame = read_delimited(pd, path, TableFormat("side", ",", True))
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no data rows (only a header?)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: malformed CSV: {one_line(exc)}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}")
    for c in required:
        if c != "genres" and frame[c].isna().any():
            raise ValueError(f"{path}: column {c!r} has empty values")
    return frame


def _int_ids(path: Path, column: Any) -> np.ndarray:
    if not require_pandas().api.types.is_integer_dtype(column.dtype):
        raise ValueError(f"{path}: column {column.name!r} must hold integer ids")
    return column.to_numpy(dtype=np.int64)


def _read_tags_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """tags.csv (userId,movieId,tag,timestamp) -> (movie ids, lower-cased tags)."""
    frame = _read_csv_table(path, ("movieId", "tag"))
    tags = frame["tag"].fillna("").astype(str).str.strip().str.lower()
    keep = (tags != "").to_numpy()
    return _int_ids(path, frame["movieId"])[keep], tags.to_numpy(dtype=str)[keep]


# ----------------------------------------------------------------------------- layouts
def _optional(path: Path, reader: Callable[[Path], Any], side_info: bool) -> Any:
    """Run a side-file reader only when features are wanted and the file exists."""
    return reader(path) if side_info and path.is_file() else None


def _ml100k_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    path = check_rating_file(folder / "u.data")
    parsed = parse_rating_file(path, None)
    users = _optional(folder / "u.user", lambda p: _read_users_table(p, "|", (0, 2, 1, 3), 5), side_info)
    items = _optional(folder / "u.item", _read_u_item, side_info)
    return _assemble(path, parsed, users, items, None, scale)


def _dat_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """ML-1M (users.dat, movies.dat) or ML-10M (movies.dat, tags.dat)."""
    path = check_rating_file(folder / "ratings.dat")
    parsed = parse_rating_file(path, None)
    users = _optional(folder / "users.dat", lambda p: _read_users_table(p, "::", (0, 1, 2, 3), 5), side_info)
    items = _optional(folder / "movies.dat", lambda p: _read_movies_dat(p, _ML1M_GENRES), side_info)
    tags = _optional(folder / "tags.dat", _read_tags_dat, side_info)
    return _assemble(path, parsed, users, items, tags, scale)


def _csv_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """ML-20M / ML-25M: ratings.csv, movies.csv, tags.csv."""
    path = check_rating_file(folder / "ratings.csv")
    parsed = parse_rating_file(path, None)

    def movies(p: Path) -> _Side:
        frame = _read_csv_table(p, ("movieId", "genres"))
        return _genre_side(p, _int_ids(p, frame["movieId"]), frame["genres"].tolist(), _ML1M_GENRES)

    items = _optional(folder / "movies.csv", movies, side_info)
    tags = _optional(folder / "tags.csv", _read_tags_csv, side_info)
    return _assemble(path, parsed, None, items, tags, scale)


def _npz_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """The team's layout: ratings.npz + users.csv (id, gender, age, occupation, ...) + items.csv."""
    path = check_rating_file(folder / "ratings.npz")
    parsed = parse_npz(path)

    def users(p: Path) -> _Side:
        frame = _read_csv_table(p, ("id", "gender", "age", "occupation"))
        occ = frame["occupation"]
        occ_values = occ.to_numpy(dtype=np.int64).tolist() \
            if require_pandas().api.types.is_integer_dtype(occ.dtype) else occ.astype(str).tolist()
        return _user_side(p, _int_ids(p, frame["id"]), frame["gender"].tolist(),
                          frame["age"].to_numpy(), occ_values)

    def items(p: Path) -> _Side:
        frame = _read_csv_table(p, ("id", "genres"))
        # ML-100K's items.csv keeps u.item's release_date column and its 19th genre, "unknown".
        canonical = _ML100K_GENRES if "release_date" in frame.columns else _ML1M_GENRES
        return _genre_side(p, _int_ids(p, frame["id"]), frame["genres"].tolist(), canonical)

    return _assemble(path, parsed, _optional(folder / "users.csv", users, side_info),
                     _optional(folder / "items.csv", items, side_info), None, scale)


_LAYOUTS: dict[str, Callable[..., RatingSet]] = {
    "ratings.npz": _npz_folder, "u.data": _ml100k_folder, "ratings.dat": _dat_folder,
    "ratings.csv": _csv_folder,
}
