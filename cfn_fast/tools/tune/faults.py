"""Fault injection for checking that a search survives a dying worker (used by the test suite and
``cfn tune --kill-worker-once``) or a diverging trial (the test suite)."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DivergeOnce", "KillWorkerOnce"]


@dataclass(frozen=True)
class KillWorkerOnce:
    """Kill the worker process (SIGKILL, no clean-up) of the first trial that is about to train
    epoch ``epoch``; later trials and the retried one go on.  ``marker`` is a file created
    atomically by the killer, so exactly one worker dies even when trials run in parallel, on
    several nodes sharing the file system."""

    marker: str
    epoch: int = 2

    def __call__(self, epoch: int) -> None:
        if _first_to_reach(self.marker, epoch, self.epoch, "killed"):
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class DivergeOnce:
    """Make the first trial that is about to train epoch ``epoch`` diverge (the epoch raises
    ``FloatingPointError``, as CFN does when training diverges); once, keyed by the ``marker`` file."""

    marker: str
    epoch: int = 3

    def __call__(self, epoch: int) -> None:
        if _first_to_reach(self.marker, epoch, self.epoch, "diverged"):
            raise FloatingPointError(f"training diverged in epoch {epoch} (DivergeOnce drill)")


def _first_to_reach(marker: str, epoch: int, target: int, what: str) -> bool:
    """True for exactly one process reaching epoch ``target`` (the one that creates ``marker``)."""
    if epoch != target:
        return False
    try:
        fd = os.open(Path(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{what} pid {os.getpid()} before epoch {epoch}\n".encode())
    os.close(fd)
    return True
