"""The shards as threads of this process: the in-process group (tests, and the stand-in for NCCL in CI).

The ``cpu`` shard kernels release the GIL, so the threads do run side by side.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from ..backends.shard_base import ShardEngine
from ..network import Layer
from .communicator import ShardAborted, ThreadGroup
from .worker import ShardWorker

__all__ = ["ThreadShards"]

T = TypeVar("T")


class ThreadShards:
    """``len(engines)`` shard engines trained by one thread each, summing through a :class:`ThreadGroup`."""

    def __init__(self, engines: Sequence[ShardEngine]) -> None:
        self.engines = list(engines)
        self._start_group()
        self._pool = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="cfn-shard")

    def _start_group(self) -> None:
        self.group = ThreadGroup(len(self.engines))
        self.workers = [ShardWorker(engine, self.group.member(k)) for k, engine in enumerate(self.engines)]

    def _on_all(self, call: Callable[[ShardWorker], T]) -> list[T]:
        """``call`` on every shard at once; the first failure aborts the others' collectives and is raised."""
        futures = [self._pool.submit(call, worker) for worker in self.workers]
        results, failure = [], None
        for future in futures:
            try:
                results.append(future.result())
            except ShardAborted as exc:
                failure = failure or exc
            except BaseException as exc:        # noqa: BLE001 - re-raised below, after the others stop
                self.group.abort()
                failure = exc if failure is None or isinstance(failure, ShardAborted) else failure
        if failure is not None:
            self._start_group()     # a broken barrier cannot be reused
            raise failure
        return results

    def train_epoch(self, epoch: int, lr: float) -> float:
        return float(sum(self._on_all(lambda w: w.train_epoch(epoch, lr))))

    def step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        return float(sum(self._on_all(lambda w: w.step(rows, epoch, lr))))

    def get_parts(self) -> list[list[Layer]]:
        return [worker.get_layers() for worker in self.workers]

    def set_parts(self, parts: Sequence[list[Layer]]) -> None:
        for worker, part in zip(self.workers, parts):
            worker.set_layers(part)

    def stats(self) -> list[dict[str, Any]]:
        return [worker.stats.as_dict() for worker in self.workers]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


