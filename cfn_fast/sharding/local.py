"""The shards as threads of this process: the in-process group (tests, and the stand-in for NCCL in CI).

The ``cpu`` shard kernels release the GIL, so the threads do run side by side.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from ..backends.base import max_abs
from ..backends.shard_base import ShardEngine
from ..network import Layer
from .communicator import ShardAborted, ThreadGroup
from .parts import ShardedLayers, write_part
from .worker import ShardWorker

__all__ = ["ThreadShards"]

T = TypeVar("T")


class ThreadShards:
    """``len(engines)`` shard engines trained by one thread each, summing through a :class:`ThreadGroup`."""

    def __init__(self, engines: Sequence[ShardEngine]) -> None:
        self.engines = list(engines)
        self._start_group()
        self._pool = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="cfn-shard")
        self.kept: dict[int, list[list[Layer]]] = {}     # snapshots by key: each shard's copy of its part

    @classmethod
    def started(cls, size: int, build: Callable[[int], ShardEngine]) -> "ThreadShards":
        """``size`` shards whose engines ``build(rank)`` makes, each in its own thread (where a kept-sharded
        network's shard loads its own part)."""
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix="cfn-shard-start") as pool:
            return cls(list(pool.map(build, range(size))))

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

    # -- a network kept sharded: every shard works on its own part only
    def part(self, rank: int) -> list[Layer]:
        return self.workers[rank].get_layers()

    def load_parts(self, layers: ShardedLayers) -> None:
        """Each shard loads its own part of ``layers``."""
        self._on_all(lambda w: w.set_layers(layers.part(w.communicator.rank)))

    def write_parts(self, folder: str | os.PathLike) -> None:
        """Each shard writes its part into ``folder`` (:func:`~cfn_fast.sharding.parts.write_part`)."""
        self._on_all(lambda w: write_part(folder, w.communicator.rank, w.get_layers()))

    def max_abs_params(self) -> list[float]:
        return self._on_all(lambda w: max_abs(a for layer in w.get_layers() for a in layer.arrays()))

    def snapshot(self, key: int) -> None:
        self.kept[key] = self._on_all(lambda w: w.get_layers())

    def restore_snapshot(self, key: int) -> None:
        parts = self.kept[key]
        self._on_all(lambda w: w.set_layers([layer.copy() for layer in parts[w.communicator.rank]]))

    def drop_snapshots(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.kept.pop(key, None)

    def stats(self) -> list[dict[str, Any]]:
        return [worker.stats.as_dict() for worker in self.workers]

    def close(self) -> None:
        self.kept.clear()
        self._pool.shutdown(wait=True)


