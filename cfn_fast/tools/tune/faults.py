"""Fault injection for checking that a search survives a dying worker (used by the test suite and
``cfn tune --kill-worker-once``)."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KillWorkerOnce"]


@dataclass(frozen=True)
class KillWorkerOnce:
    """Kill the worker process (SIGKILL, no clean-up) of the first trial that is about to train
    epoch ``epoch``; later trials and the retried one go on.  ``marker`` is a file created
    atomically by the killer, so exactly one worker dies even when trials run in parallel, on
    several nodes sharing the file system."""

    marker: str
    epoch: int = 2

    def __call__(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        try:
            fd = os.open(Path(self.marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"killed pid {os.getpid()} before epoch {epoch}\n".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
