"""Reading one rating file, or one in-memory rating object, into a :class:`RatingSet`.

:func:`load_ratings` reads ``.npz``, generic CSV/TSV (with or without a header), MovieLens
``u.data``, ``ratings.dat``, ``ratings.csv`` and Douban ``uir.index``, or takes a pandas DataFrame
or a scipy.sparse matrix.  The format is detected from the file name and its first line.

Every malformed input raises a ``ValueError`` that names the file and the problem, so a user
never has to read a pandas traceback.  pandas (a dependency of cfn_fast) is imported lazily:
only text files need it.

Besides :func:`load_ratings`, the public helpers here (:func:`check_rating_file`,
:func:`parse_rating_file`, :func:`parse_npz`, :class:`ParsedRatings`, :func:`to_rating_set`,
:class:`TableFormat`, :func:`read_delimited`, :func:`require_pandas`, :func:`one_line`) are the
building blocks :mod:`cfn_fast.data.movielens` reads a MovieLens folder with.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import check_input_file
from .ids import ids_of, text_ids
from .ratings import RatingSet

__all__ = ["load_ratings"]

_USER_ALIASES = {"user", "users", "userid", "user_id", "uid", "u"}
_ITEM_ALIASES = {"item", "items", "itemid", "item_id", "movieid", "movie_id", "movie", "iid", "i"}
_RATING_ALIASES = {"rating", "ratings", "score", "stars", "r"}


@dataclass(frozen=True)
class TableFormat:
    """How to read one text table: a rating file, or a side table of a MovieLens folder."""

    kind: str                          # "npz", "ml-100k", "ml-dat", "ml-csv", "douban" or "generic"
    sep: str = ","
    header: bool = False
    encoding: str = "utf-8"


@dataclass(frozen=True)
class ParsedRatings:
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
    path = check_rating_file(Path(path))
    parsed = parse_rating_file(path, sep)
    return to_rating_set(path, parsed, scale, duplicates)


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


# ============================================================================= rating files
def check_rating_file(path: Path) -> Path:
    """Fail early, with the path, on a missing, non-regular (:func:`cfn_fast.fileio.check_input_file`)
    or empty file."""
    check_input_file(path, "ratings file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    return path


def parse_rating_file(path: Path, sep: str | None) -> ParsedRatings:
    """Detect the format of ``path`` and read its rating columns."""
    fmt = _detect_format(path, sep)
    if fmt.kind == "npz":
        return parse_npz(path)
    frame = _read_table(path, fmt)
    user, item, rating = _validate_columns(path, frame)
    return ParsedRatings(user, item, rating, None)


def _head_text(path: Path, n_bytes: int = 65536) -> tuple[bytes, str]:
    """The first bytes of a file, and its first non-blank line decoded as latin-1 (never fails)."""
    with path.open("rb") as fh:
        head = fh.read(n_bytes)
    for line in head.decode("latin-1").splitlines():
        if line.strip():
            return head, line
    raise ValueError(f"{path}: the file holds only blank lines")


def _detect_format(path: Path, sep: str | None) -> TableFormat:
    """Decide the format from the file name first, then from the first line."""
    head, first = _head_text(path)
    name = path.name.lower()
    if name.endswith(".npz") or head.startswith(b"PK\x03\x04"):
        return TableFormat("npz")
    if sep is None and name == "u.data":
        return TableFormat("ml-100k", "\t", False, "latin-1")
    if sep is None and name == "uir.index":
        return TableFormat("douban", r"\s+", False, "utf-8")
    if sep is None and (name == "ratings.dat" or (name.endswith(".dat") and "::" in first)):
        return TableFormat("ml-dat", "::", _has_header(path, first, "::"), "latin-1")
    chosen = sep if sep is not None else _sniff_sep(first)
    header = _has_header(path, first, chosen)
    if name == "ratings.csv" and header and first.lower().startswith("userid,movieid,rating"):
        return TableFormat("ml-csv", ",", True, "utf-8")
    return TableFormat("generic", chosen, header, "utf-8")


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


def require_pandas() -> Any:
    """The pandas module, or an ImportError that says how to install it."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading text rating files needs pandas, a dependency of cfn_fast that is missing "
                          "here: pip install 'pandas>=2.0' (or reinstall cfn_fast)") from exc
    return pd


def _read_table(path: Path, fmt: TableFormat) -> Any:
    """Read the text file with pandas' C parser; every parser failure becomes a ValueError."""
    pd = require_pandas()
    try:
        if fmt.sep == "::":
            frame = _read_double_colon(pd, path, fmt)
        else:
            frame = read_delimited(pd, path, fmt)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no rating rows (only a header?)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not {fmt.encoding} text ({exc.reason} at byte {exc.start})") from exc
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # ParserError is a ValueError
        raise ValueError(f"{path}: malformed {fmt.kind} rating file: {one_line(exc)}") from exc
    return _select_columns(path, frame, fmt.header)


def read_delimited(pd: Any, path: Path, fmt: TableFormat) -> Any:
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


def _read_double_colon(pd: Any, path: Path, fmt: TableFormat) -> Any:
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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
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
    pd = require_pandas()
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
    """Ids as a numpy array: numbers stay numbers, anything else becomes Python str (never a fixed-width copy)."""
    arr = series.to_numpy()
    return text_ids(arr) if arr.dtype.kind in "OUS" else arr


def parse_npz(path: Path) -> ParsedRatings:
    """``user``, ``item``, ``rating`` arrays of an .npz archive, loaded without ever unpickling."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({one_line(exc)})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a malformed file, not a wrong argument type
        raise ValueError(f"{path}: expected an .npz archive of arrays user, item, rating; "  # noqa: TRY004
                         f"found a single array")
    with archive:
        missing = [k for k in ("user", "item", "rating") if k not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; the archive has {sorted(archive.files)}")
        arrays = {k: _npz_array(path, archive, k) for k in ("user", "item", "rating")}
        for side in ("user", "item"):
            arrays[side] = _through_id_table(path, archive, side, arrays[side])
    rating = arrays["rating"]
    if rating.dtype.kind not in "iuf":
        raise ValueError(f"{path}: array 'rating' must be numeric, got dtype {rating.dtype}")
    return ParsedRatings(arrays["user"], arrays["item"], rating, None)


def _through_id_table(path: Path, archive: Any, side: str, values: np.ndarray) -> np.ndarray:
    """``values`` themselves, or, when the archive has the id table ``{side}_ids`` (plain, or as UTF-8 bytes +
    offsets: how ``cfn fit --save-split`` stores string ids), the ids at those positions."""
    table = f"{side}_ids"
    names = [n for n in (table, f"{table}_utf8", f"{table}_offsets") if n in archive.files]
    if not names:
        return values
    try:
        ids = ids_of({n: _npz_array(path, archive, n) for n in names}, table)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: the id table {table!r} is damaged ({one_line(exc)})") from None
    if values.dtype.kind not in "iu" or values.ndim != 1 or (values.size and (values.min() < 0
                                                                                 or values.max() >= len(ids))):
        raise ValueError(f"{path}: with an id table {table!r}, array {side!r} must hold positions in "
                         f"[0, {len(ids)})")
    return ids[values]


def _npz_array(path: Path, archive: Any, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise ValueError(f"{path}: array {key!r} cannot be loaded safely (object arrays need pickle, "
                         f"which is never enabled): {one_line(exc)}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: array {key!r} is corrupt: {one_line(exc)}") from exc


def to_rating_set(path: Path, parsed: ParsedRatings, scale: tuple[float, float] | None, duplicates: str,
                  **kwargs: Any) -> RatingSet:
    """RatingSet.from_arrays with its errors re-raised as ValueErrors that name the file."""
    try:
        return RatingSet.from_arrays(parsed.user, parsed.item, parsed.rating, scale=scale,
                                     duplicates=duplicates, **kwargs)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"{path}: {one_line(exc)}") from exc
