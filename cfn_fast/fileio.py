"""Writing files safely: atomic replacement, permissions, temporary-file clean-up, and refusing to
write over an input.

Every file cfn_fast writes (model files, split files, reports, figures, hyper-parameter stores)
goes through :func:`atomic_path` / :func:`atomic_write`:

* the data goes to a hidden temporary file beside the target, named
  ``.<target name>.<pid>.<random>.tmp``, created readable by its owner only (a model holds
  training ratings) and fsynced before ``os.replace`` moves it over the target, so a reader sees
  the old file or the new one, never half of one;
* **permissions**: a new file gets ``0o666`` minus the process umask (as ``open()`` or the shell
  would create it); an existing file keeps its mode (a ``0600`` model stays ``0600``); a symbolic
  link is followed, so the file it points to is replaced and the link stays;
* **clean-up**: any exception or ``KeyboardInterrupt`` removes the temporary file; so does
  ``SIGTERM`` while the write runs in the main thread (the signal is turned into an exception for
  the duration of the write, then delivered as before); the next write to the same target removes
  temporary files of that target left by processes that no longer run (e.g. killed by
  ``SIGKILL``, which no program can intercept).

:func:`check_outputs_not_inputs` refuses, before any work starts, an output that is one of the
inputs (same path, a symbolic or hard link to it, or an existing file inside an input folder).

:func:`check_input_file` is the one rule for reading a file (ratings, models, features), so every
command and function words the same situation the same way: a missing file, a folder, a pipe or
device (``/dev/stdin``), an unreadable file.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

__all__ = ["atomic_path", "atomic_write", "check_outputs_not_inputs", "remove_stale_temporaries",
           "new_file_mode", "SaveInterrupted", "check_input_file"]

_UMASK_LOCK = threading.Lock()


class SaveInterrupted(InterruptedError):
    """SIGTERM arrived while a file was being written; the target is unchanged and the temporary
    file was removed (raised only when the previous SIGTERM handler returned instead of exiting)."""


class _Terminated(BaseException):
    """SIGTERM turned into an exception while a file is written (BaseException: not caught by
    ``except Exception`` on the way out)."""


# ----------------------------------------------------------------------------- permissions
def _umask() -> int:
    """The process umask, without changing it where /proc tells it (Linux), else by setting and
    restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` minus the umask."""
    return 0o666 & ~_umask()


# ----------------------------------------------------------------------------- temporaries
def _temp_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{12}}\.tmp$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:  # pragma: no cover - e.g. an invalid pid on an exotic platform: keep the file
        return True
    return True


_ACTIVE: set[str] = set()  # temporaries this process is writing right now


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``target`` whose writing process no longer runs; returns them.

    A temporary of a live process (another save in progress) is left alone, as is any file whose
    name does not follow :mod:`cfn_fast.fileio`'s pattern."""
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    pattern = _temp_pattern(target)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        path = directory / name
        pid = int(match.group(1))
        in_use = str(path) in _ACTIVE if pid == os.getpid() else _process_alive(pid)
        if not in_use:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`_Terminated` (main thread only; an ignored SIGTERM
    stays ignored).  After the block the previous handler is back and, if SIGTERM arrived, it is
    delivered to that handler (the default one ends the process as SIGTERM always did)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        yield
        return

    def raise_terminated(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)
        raise SaveInterrupted("the write was interrupted by SIGTERM; the target is unchanged") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resolve_target(path: Path) -> Path:
    """Follow a symbolic link so that the file it names is replaced and the link stays."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    See the module docstring for permissions and clean-up.  The directory must exist
    (``FileNotFoundError`` otherwise)."""
    target = _resolve_target(Path(path))
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: directory {str(directory)!r} does not exist")
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = new_file_mode()
    remove_stale_temporaries(target)
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    with _sigterm_as_exception():
        _ACTIVE.add(str(tmp))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            _ACTIVE.discard(str(tmp))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` ``"wb"`` or ``"w"``); on success it replaces
    ``path`` atomically (see :func:`atomic_path`)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as fh:
            yield fh
            fh.flush()


# ----------------------------------------------------------------------------- outputs vs inputs
def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real != root and real.is_relative_to(root)


def check_outputs_not_inputs(outputs: Mapping[str, Any],
                             inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise ``ValueError`` when an output would overwrite an input.

    ``outputs`` and ``inputs`` map the option that names them (e.g. ``"--save"``) to a path; an
    output may also be a list (or a mapping whose values are the paths) of the files an option writes,
    e.g. the split files of a folder.
    An output is refused when it is an input (same path, or the same file through a symbolic or
    hard link) or an existing file inside an input folder; two outputs naming the same file are
    refused too."""
    seen: list[tuple[str, Path]] = []
    for option, value in outputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, (str, os.PathLike)) else \
            list(value.values()) if isinstance(value, Mapping) else list(value)
        for out in map(Path, paths):
            for in_option, in_value in inputs.items():
                if in_value is None:
                    continue
                source = Path(in_value)
                if _same_file(out, source):
                    raise ValueError(f"{option} {out} is the input given by {in_option} ({source}); "
                                     f"writing it would destroy the input: choose another output path")
                if source.is_dir() and out.exists() and _inside(out, source):
                    raise ValueError(f"{option} {out} would overwrite a file inside the input folder {in_option} "
                                     f"{source}: choose another output path")
            for other_option, other in seen:
                if _same_file(out, other):
                    raise ValueError(f"{option} and {other_option} both write {out}: choose different paths")
            seen.append((option, out))


# ----------------------------------------------------------------------------- inputs
def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` when it is a readable regular file; else the one error for that situation, naming
    ``what`` (e.g. ``"model file"``) and the path as given.

    Pipes, sockets and devices (``/dev/stdin`` included) are refused before anything opens them: readers
    look at a file more than once (format detection, then the data; a zip's directory at its end), and
    opening a FIFO nobody writes to would wait forever."""
    path = Path(path)
    shown = repr(str(path))
    try:
        mode = path.stat().st_mode  # follows symbolic links: /dev/stdin is judged by what it points to
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {shown}") from None
    except PermissionError:
        raise PermissionError(f"{what} {shown} cannot be read: permission denied") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{what} {shown} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {shown} is not a regular file (a pipe, socket or device such as /dev/stdin): "
                         f"inputs are read from regular files only; save the data to a file and pass its path")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{what} {shown} cannot be read: permission denied")
    return path
