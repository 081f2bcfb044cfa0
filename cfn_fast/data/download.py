"""Download and unpack the official MovieLens zips from GroupLens, with checksum verification.

GroupLens does not allow redistribution, so the data is fetched by each user from the original
site.  The archive is streamed to a temporary file in ``dest``, verified, renamed atomically and
then unpacked; an interrupted download never leaves a half-written ``.zip`` behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_path

__all__ = ["MOVIELENS", "download_movielens"]

_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


@dataclass(frozen=True)
class _Archive:
    """One official archive: its file name, the folder it unpacks to and what to expect of it."""

    zip_name: str
    folder: str
    md5: str        # GroupLens publishes an MD5 sidecar (``<zip>.md5``) for each archive
    size: int | None  # bytes, for error messages; None where no recorded size was at hand

    @property
    def url(self) -> str:
        return _BASE_URL + self.zip_name


# MD5 values are GroupLens' published ``<zip>.md5`` sidecar values, cross-checked against several
# independent loaders.  Sizes are byte counts recorded by third parties: informational only (used in
# error messages), the MD5 is what accepts or rejects a download.  ml-1m's size was not at hand.
MOVIELENS: dict[str, _Archive] = {
    "ml-100k": _Archive("ml-100k.zip", "ml-100k", "0e33842e24a9c977be4e0107933c0723", 4_924_029),
    "ml-1m": _Archive("ml-1m.zip", "ml-1m", "c4d9eecfca2ab87c1945afe126590906", None),
    "ml-10m": _Archive("ml-10m.zip", "ml-10M100K", "ce571fd55effeba0271552578f2648bd", 65_566_137),
    "ml-20m": _Archive("ml-20m.zip", "ml-20m", "cd245b17a1ae2cc31bb14903e1204af3", 198_702_078),
}

_CHUNK = 1 << 20


def download_movielens(name: str, dest: str | Path, *, force: bool = False, timeout: float = 60.0) -> Path:
    """Fetch MovieLens ``name`` (``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``) into ``dest``.

    Returns the unpacked folder (e.g. ``dest/ml-10M100K``), ready for
    :func:`cfn_fast.data.load_movielens`.  An existing folder is reused unless ``force``.
    Raises ``RuntimeError`` naming the URL and the manual fallback when the network fails,
    and ``ValueError`` when the archive's size or MD5 does not match.
    """
    if name not in MOVIELENS:
        raise ValueError(f"unknown MovieLens data set {name!r}; choose one of {sorted(MOVIELENS)}")
    spec = MOVIELENS[name]
    dest = Path(dest)
    target = dest / spec.folder
    if target.is_dir() and not force:
        return target
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / spec.zip_name
    if force or not archive.is_file() or _md5(archive) != spec.md5:
        _fetch(spec, archive, timeout)
    _extract(archive, dest, target, force)
    return target


def _fetch(spec: _Archive, archive: Path, timeout: float) -> None:
    """Stream the URL into a temp file beside ``archive``, verify it, then rename it into place."""
    # atomic on one file system: readers never see a partial zip; umask-respecting mode; temp removed on failure
    with atomic_path(archive) as tmp:
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(spec.url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, _CHUNK)
            except (urllib.error.URLError, OSError) as exc:
                raise RuntimeError(
                    f"could not download {spec.url} ({exc}). Without network access, download "
                    f"{spec.zip_name} elsewhere and unzip it so that {archive.parent / spec.folder} "
                    f"holds its files, then call load_movielens on that folder.") from exc
        _verify(spec, tmp)


def _verify(spec: _Archive, path: Path) -> None:
    """The MD5 decides; the size only makes the error message say whether the file was cut short."""
    digest = _md5(path)
    if digest == spec.md5:
        return
    size = path.stat().st_size
    hint = "" if spec.size is None or size == spec.size else \
        f" (got {size:,} bytes, expected {spec.size:,}: the download was cut short or the file changed)"
    raise ValueError(f"{spec.url}: MD5 {digest} does not match the published {spec.md5}{hint}")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _extract(archive: Path, dest: Path, target: Path, force: bool) -> None:
    """Unpack into a temp folder, refusing members that would land outside it, then move into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        with zipfile.ZipFile(archive) as zf:
            root = tmp.resolve()
            for member in zf.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise ValueError(f"{archive}: member {member!r} would be written outside {dest}")
            zf.extractall(tmp)
        unpacked = tmp / target.name
        if not unpacked.is_dir():
            raise ValueError(f"{archive}: expected a top-level folder {target.name!r} inside the zip")
        if target.exists() and force:
            shutil.rmtree(target)
        if not target.exists():
            os.replace(unpacked, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
