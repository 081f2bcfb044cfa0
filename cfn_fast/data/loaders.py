"""Readers for rating files in their original formats, and MovieLens folders with side information.

:func:`load_ratings` reads one rating file (``.npz``, generic CSV/TSV, MovieLens ``u.data``,
``ratings.dat``, ``ratings.csv``, Douban ``uir.index``).  :func:`load_movielens` reads a whole
MovieLens folder (as unzipped from GroupLens, or the team's ``ratings.npz`` + ``users.csv`` +
``items.csv`` layout) and attaches user / item features.

Every malformed input raises a ``ValueError`` that names the file and the problem, so a user
never has to read a pandas traceback.  pandas (a dependency of cfn_fast) is imported lazily:
only text files need it.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .ratings import RatingSet
from .side_info import build_count_matrix, low_rank_embedding, multi_hot, one_hot

__all__ = ["load_ratings", "load_movielens"]

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

_USER_ALIASES = {"user", "users", "userid", "user_id", "uid", "u"}
_ITEM_ALIASES = {"item", "items", "itemid", "item_id", "movieid", "movie_id", "movie", "iid", "i"}
_RATING_ALIASES = {"rating", "ratings", "score", "stars", "r"}


@dataclass(frozen=True)
class _Format:
    """How to read one rating file."""

    kind: str                          # "npz", "ml-100k", "ml-dat", "ml-csv", "douban" or "generic"
    sep: str = ","
    header: bool = False
    encoding: str = "utf-8"


@dataclass(frozen=True)
class _Parsed:
    """Rating columns as read, before they become a RatingSet."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    scale: tuple[float, float] | None


# ============================================================================= public API
def load_ratings(path: str | Path | Any, *, scale: tuple[float, float] | None = None,
                 duplicates: str = "error", sep: str | None = None) -> RatingSet:
    """Read one rating file into a :class:`RatingSet`; the format is detected from name and content.

    * ``*.npz`` with arrays ``user``, ``item``, ``rating`` (optional ``timestamp``); never unpickles.
    * MovieLens ``u.data`` (ML-100K), ``ratings.dat`` (ML-1M / ML-10M, ``::``-separated),
      ``ratings.csv`` (ML-20M / ML-25M, header ``userId,movieId,rating,timestamp``).
    * Douban ``uir.index`` (whitespace-separated user item rating).
    * Any other text file: ``user, item, rating[, timestamp]`` with or without a header,
      separated by ``sep`` or (auto-detected) ``,``, tab, ``;`` or whitespace.  A header names
      the columns (``user``/``userId``/..., ``item``/``movieId``/..., ``rating``/...); a
      delimiter at the end of every line is allowed; a header whose field count differs from
      the data rows' is an error (the columns would shift).
    * A pandas ``DataFrame`` (columns found by the same names) or a scipy.sparse users x items
      matrix (stored entries are the ratings) instead of a path.

    ``scale`` defaults to the observed ``(min, max)`` of the ratings, for every format: it is never
    guessed from the file name (declare it when the data may not reach both ends of its scale).
    ``duplicates`` is passed to
    :meth:`RatingSet.from_arrays`.  Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file for any malformed content.
    """
    if not isinstance(path, (str, Path)):
        return _from_object(path, scale=scale, duplicates=duplicates)
    path = _check_file(Path(path))
    parsed = _read_ratings(path, sep)
    return _to_rating_set(path, parsed, scale, duplicates)


def _from_object(data: Any, *, scale: tuple[float, float] | None, duplicates: str) -> RatingSet:
    """``load_ratings`` of an in-memory object: a pandas DataFrame (user / item / rating columns
    found by the same names as in a file's header) or a scipy.sparse users x items matrix."""
    import scipy.sparse as sp
    if isinstance(data, RatingSet):
        return data
    if sp.issparse(data):
        return RatingSet.from_sparse(data, scale=scale, duplicates=duplicates)
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        lower = {str(c).strip().lower(): c for c in data.columns}
        picks = [next((lower[a] for a in aliases if a in lower), None)
                 for aliases in (_USER_ALIASES, _ITEM_ALIASES, _RATING_ALIASES)]
        if any(p is None for p in picks):
            roles = [r for r, p in zip(("user", "item", "rating"), picks) if p is None]
            raise ValueError(f"DataFrame has no {'/'.join(roles)} column; its columns are {list(data.columns)} "
                             f"(name them user, item, rating or use RatingSet.from_dataframe(frame, user_col=..., "
                             f"item_col=..., rating_col=...))")
        return RatingSet.from_dataframe(data, user_col=picks[0], item_col=picks[1], rating_col=picks[2],
                                        scale=scale, duplicates=duplicates)
    raise TypeError(f"load_ratings takes a file path, a pandas DataFrame or a scipy.sparse matrix, "
                    f"got {type(data).__name__}")


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


# ============================================================================= rating files
def _check_file(path: Path) -> Path:
    """Fail early, with the path, on a missing, non-regular or empty file."""
    if not path.exists():
        raise FileNotFoundError(f"rating file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    return path


def _read_ratings(path: Path, sep: str | None) -> _Parsed:
    """Detect the format of ``path`` and read its rating columns."""
    fmt = _detect_format(path, sep)
    if fmt.kind == "npz":
        return _read_npz(path)
    frame = _read_table(path, fmt)
    user, item, rating = _validate_columns(path, frame)
    return _Parsed(user, item, rating, None)


def _head_text(path: Path, n_bytes: int = 65536) -> tuple[bytes, str]:
    """The first bytes of a file, and its first non-blank line decoded as latin-1 (never fails)."""
    with path.open("rb") as fh:
        head = fh.read(n_bytes)
    for line in head.decode("latin-1").splitlines():
        if line.strip():
            return head, line
    raise ValueError(f"{path}: the file holds only blank lines")


def _detect_format(path: Path, sep: str | None) -> _Format:
    """Decide the format from the file name first, then from the first line."""
    head, first = _head_text(path)
    name = path.name.lower()
    if name.endswith(".npz") or head.startswith(b"PK\x03\x04"):
        return _Format("npz")
    if sep is None and name == "u.data":
        return _Format("ml-100k", "\t", False, "latin-1")
    if sep is None and name == "uir.index":
        return _Format("douban", r"\s+", False, "utf-8")
    if sep is None and (name == "ratings.dat" or (name.endswith(".dat") and "::" in first)):
        return _Format("ml-dat", "::", _has_header(path, first, "::"), "latin-1")
    chosen = sep if sep is not None else _sniff_sep(first)
    header = _has_header(path, first, chosen)
    if name == "ratings.csv" and header and first.lower().startswith("userid,movieid,rating"):
        return _Format("ml-csv", ",", True, "utf-8")
    return _Format("generic", chosen, header, "utf-8")


def _sniff_sep(line: str) -> str:
    """The separator of a line: ``::``, tab, comma, semicolon, else runs of whitespace."""
    for candidate in ("::", "\t", ",", ";"):
        if candidate in line:
            return candidate
    return r"\s+"


def _split(line: str, sep: str) -> list[str]:
    return line.split() if sep == r"\s+" else line.split(sep)


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _has_header(path: Path, first: str, sep: str) -> bool:
    """A first line is a header when its rating field is not a number and its user / item
    fields are not both numbers (``1,2,oops`` is a bad data line, not a header)."""
    fields = _split(first.strip(), sep)
    if len(fields) < 3:
        raise ValueError(f"{path}: expected at least 3 columns (user, item, rating) separated by "
                         f"{sep!r}, but the first line has {len(fields)}: {first[:80]!r}")
    return not _is_number(fields[2]) and not (_is_number(fields[0]) and _is_number(fields[1]))


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading text rating files needs pandas, a dependency of cfn_fast that is missing "
                          "here: pip install 'pandas>=2.0' (or reinstall cfn_fast)") from exc
    return pd


def _read_table(path: Path, fmt: _Format) -> Any:
    """Read the text file with pandas' C parser; every parser failure becomes a ValueError."""
    pd = _pandas()
    try:
        if fmt.sep == "::":
            frame = _read_double_colon(pd, path, fmt)
        else:
            frame = _read_delimited(pd, path, fmt)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no rating rows (only a header?)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not {fmt.encoding} text ({exc.reason} at byte {exc.start})") from exc
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # ParserError is a ValueError
        raise ValueError(f"{path}: malformed {fmt.kind} rating file: {_one_line(exc)}") from exc
    return _select_columns(path, frame, fmt.header)


def _read_delimited(pd: Any, path: Path, fmt: _Format) -> Any:
    """A one-character-separated table.  The data rows are read without the header (pandas would
    otherwise take one surplus data field per row, e.g. a trailing delimiter, as an index column
    and shift every column left); the header's names are then matched to the data's columns."""
    frame = pd.read_csv(path, sep=fmt.sep, header=None, engine="c", encoding=fmt.encoding,
                        skiprows=_header_line(path) + 1 if fmt.header else 0, skip_blank_lines=True,
                        skipinitialspace=True)
    if not fmt.header:
        return _drop_empty_trailing_columns(frame, 3)
    names = [str(c).strip() for c in pd.read_csv(path, sep=fmt.sep, nrows=0, engine="c",
                                                  encoding=fmt.encoding, skipinitialspace=True).columns]
    while names and (not names[-1] or names[-1].startswith("Unnamed:")):
        names.pop()  # a trailing delimiter on the header line
    frame = _drop_empty_trailing_columns(frame, len(names))
    if len(names) != frame.shape[1]:
        raise ValueError(f"the header has {len(names)} field(s) ({', '.join(names)}) but the data rows have "
                         f"{frame.shape[1]}: the columns would not line up; fix the header or the rows")
    frame.columns = names
    return frame


def _header_line(path: Path) -> int:
    """Number of the first non-blank line (the header), counted from 0."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh):
            if line.strip():
                return number
    return 0


def _drop_empty_trailing_columns(frame: Any, keep: int) -> Any:
    """Remove last columns beyond ``keep`` that are empty on every row: a delimiter at the end of each line."""
    while frame.shape[1] > keep and frame.iloc[:, -1].isna().all():
        frame = frame.iloc[:, :-1]
    return frame


def _read_double_colon(pd: Any, path: Path, fmt: _Format) -> Any:
    """``a::b::c`` files: the C parser has no multi-character separator, so split on ``:`` and
    keep every other column.  Much faster than the python engine on ML-10M's 10M lines.

    All columns are read (not ``usecols``): only then does the parser reject lines with extra
    fields.  The columns between the two colons must be empty; float32 keeps them cheap.
    """
    _, first = _head_text(path)
    n_fields = len(first.split("::"))
    gaps = list(range(1, 2 * n_fields - 1, 2))
    frame = pd.read_csv(path, sep=":", header=None, engine="c", encoding=fmt.encoding,
                        skiprows=1 if fmt.header else 0, dtype={g: np.float32 for g in gaps},
                        skip_blank_lines=True)
    for g in gaps:
        filled = frame[g].notna().to_numpy()
        if filled.any():
            row = int(np.flatnonzero(filled)[0])
            raise ValueError(f"data row {row + 1} has a single ':' where '::' separates fields")
    frame = _drop_empty_trailing_columns(frame.drop(columns=gaps), 3)
    frame.columns = range(frame.shape[1])
    return frame


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _select_columns(path: Path, frame: Any, header: bool) -> Any:
    """Pick user, item, rating columns: by name when a header names them, else by position."""
    if header:
        lower = {str(c).strip().lower(): c for c in frame.columns}
        picks = [next((lower[a] for a in aliases if a in lower), None)
                 for aliases in (_USER_ALIASES, _ITEM_ALIASES, _RATING_ALIASES)]
        if all(p is not None for p in picks) and len(set(picks)) == 3:
            return frame[picks].set_axis(["user", "item", "rating"], axis=1)
        if any(p is not None for p in picks):  # a header that names some columns: never guess the rest
            roles = [r for r, p in zip(("user", "item", "rating"), picks) if p is None]
            raise ValueError(f"{path}: the header ({', '.join(map(str, frame.columns))}) names no "
                             f"{'/'.join(roles)} column; name the columns user, item, rating (or userId, "
                             f"movieId, rating)")
    if frame.shape[1] not in (3, 4):
        raise ValueError(f"{path}: expected 3 or 4 columns (user, item, rating[, timestamp]), "
                         f"found {frame.shape[1]}")
    names = ["user", "item", "rating", "timestamp"][:frame.shape[1]]
    return frame.set_axis(names, axis=1)


def _validate_columns(path: Path, frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check for empty data, missing fields, non-numeric and non-finite ratings; return arrays."""
    pd = _pandas()
    if len(frame) == 0:
        raise ValueError(f"{path}: no rating rows (only a header?)")
    for col in frame.columns:  # a short line leaves NaN in its last columns
        missing = frame[col].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ValueError(f"{path}: data row {row + 1}: missing {col} (too few columns, an empty "
                             f"field or NaN); {int(missing.sum())} such row(s)")
    rating = frame["rating"]
    if not pd.api.types.is_numeric_dtype(rating.dtype) or pd.api.types.is_bool_dtype(rating.dtype):
        numeric = pd.to_numeric(rating, errors="coerce")
        bad = numeric.isna().to_numpy()
        if bad.any() or pd.api.types.is_bool_dtype(rating.dtype):
            row = int(np.flatnonzero(bad)[0]) if bad.any() else 0
            raise ValueError(f"{path}: data row {row + 1}: rating {rating.iloc[row]!r} is not a number")
        rating = numeric
    values = rating.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: data row {row + 1}: rating {values[row]} is not finite")
    return _id_column(frame["user"]), _id_column(frame["item"]), values


def _id_column(series: Any) -> np.ndarray:
    """Ids as a numpy array: numbers stay numbers, anything else becomes str."""
    arr = series.to_numpy()
    return arr.astype(str) if arr.dtype.kind == "O" else arr


def _read_npz(path: Path) -> _Parsed:
    """``user``, ``item``, ``rating`` arrays of an .npz archive, loaded without ever unpickling."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of arrays user, item, rating; "
                         f"found a single array")
    with archive:
        missing = [k for k in ("user", "item", "rating") if k not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; the archive has {sorted(archive.files)}")
        arrays = {k: _npz_array(path, archive, k) for k in ("user", "item", "rating")}
    rating = arrays["rating"]
    if rating.dtype.kind not in "iuf":
        raise ValueError(f"{path}: array 'rating' must be numeric, got dtype {rating.dtype}")
    return _Parsed(arrays["user"], arrays["item"], rating, None)


def _npz_array(path: Path, archive: Any, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise ValueError(f"{path}: array {key!r} cannot be loaded safely (object arrays need pickle, "
                         f"which is never enabled): {_one_line(exc)}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: array {key!r} is corrupt: {_one_line(exc)}") from exc


def _to_rating_set(path: Path, parsed: _Parsed, scale: tuple[float, float] | None, duplicates: str,
                   **kwargs: Any) -> RatingSet:
    """RatingSet.from_arrays with its errors re-raised as ValueErrors that name the file."""
    try:
        return RatingSet.from_arrays(parsed.user, parsed.item, parsed.rating, scale=scale,
                                     duplicates=duplicates, **kwargs)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"{path}: {_one_line(exc)}") from exc


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


def _assemble(rating_path: Path, parsed: _Parsed, users: _Side | None, items: _Side | None,
              tags: tuple[np.ndarray, np.ndarray] | None, scale: tuple[float, float] | None) -> RatingSet:
    """RatingSet over ratings plus side-file ids, with features aligned to its sorted id order."""
    kwargs: dict[str, Any] = {}
    if users is not None:
        kwargs["user_ids"] = np.union1d(np.unique(parsed.user), users.ids)
    if items is not None or tags is not None:
        item_ids = np.unique(parsed.item)
        kwargs["item_ids"] = item_ids if items is None else np.union1d(item_ids, items.ids)
    rs = _to_rating_set(rating_path, parsed, scale, "error", **kwargs)
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
        raise ValueError(f"{path}: ages must be numbers ({_one_line(exc)})") from exc
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
        raise ValueError(f"{path}: {_one_line(exc)}") from exc
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
    pd = _pandas()
    try:  # read like a rating file's table: a trailing delimiter never shifts the columns
        frame = _read_delimited(pd, path, _Format("side", ",", True))
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no data rows (only a header?)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: malformed CSV: {_one_line(exc)}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {list(frame.columns)}")
    for c in required:
        if c != "genres" and frame[c].isna().any():
            raise ValueError(f"{path}: column {c!r} has empty values")
    return frame


def _int_ids(path: Path, column: Any) -> np.ndarray:
    if not _pandas().api.types.is_integer_dtype(column.dtype):
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
    path = _check_file(folder / "u.data")
    parsed = _read_ratings(path, None)
    users = _optional(folder / "u.user", lambda p: _read_users_table(p, "|", (0, 2, 1, 3), 5), side_info)
    items = _optional(folder / "u.item", _read_u_item, side_info)
    return _assemble(path, parsed, users, items, None, scale)


def _dat_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """ML-1M (users.dat, movies.dat) or ML-10M (movies.dat, tags.dat)."""
    path = _check_file(folder / "ratings.dat")
    parsed = _read_ratings(path, None)
    users = _optional(folder / "users.dat", lambda p: _read_users_table(p, "::", (0, 1, 2, 3), 5), side_info)
    items = _optional(folder / "movies.dat", lambda p: _read_movies_dat(p, _ML1M_GENRES), side_info)
    tags = _optional(folder / "tags.dat", _read_tags_dat, side_info)
    return _assemble(path, parsed, users, items, tags, scale)


def _csv_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """ML-20M / ML-25M: ratings.csv, movies.csv, tags.csv."""
    path = _check_file(folder / "ratings.csv")
    parsed = _read_ratings(path, None)

    def movies(p: Path) -> _Side:
        frame = _read_csv_table(p, ("movieId", "genres"))
        return _genre_side(p, _int_ids(p, frame["movieId"]), frame["genres"].tolist(), _ML1M_GENRES)

    items = _optional(folder / "movies.csv", movies, side_info)
    tags = _optional(folder / "tags.csv", _read_tags_csv, side_info)
    return _assemble(path, parsed, None, items, tags, scale)


def _npz_folder(folder: Path, side_info: bool, scale: tuple[float, float] | None = None) -> RatingSet:
    """The team's layout: ratings.npz + users.csv (id, gender, age, occupation, ...) + items.csv."""
    path = _check_file(folder / "ratings.npz")
    parsed = _read_npz(path)

    def users(p: Path) -> _Side:
        frame = _read_csv_table(p, ("id", "gender", "age", "occupation"))
        occ = frame["occupation"]
        occ_values = occ.to_numpy(dtype=np.int64).tolist() if _pandas().api.types.is_integer_dtype(occ.dtype) \
            else occ.astype(str).tolist()
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
