"""The shards as Ray actors on CPUs: Ray object references between actors, sums in NumPy in shard order.

Each actor drives one shard engine (``cpu``, or any backend) through :class:`~cfn_fast.sharding.worker.ShardWorker`.
A sum is an exchange of object references: each shard puts its block in Ray's object store and hands the reference
to a small asynchronous :class:`Exchange` actor, which answers every shard, once all have arrived, with all the
references; each shard then reads the blocks and sums them in shard order.  No block passes through the driver.

Faults: each epoch ends with every shard writing its checkpoint (:mod:`cfn_fast.sharding.checkpoint`).  When an
actor dies, the exchange is aborted (the other shards' waits end with :class:`ShardAborted`), a new actor takes the
dead one's place, every shard reloads the last epoch all of them checkpointed, and the lost epochs run again: the
masking noise and the batch order are functions of (seed, epoch), so the result is an uninterrupted run's.

A network kept sharded (a :class:`~cfn_fast.sharding.parts.ShardedLayers` instead of a list of parts): the
ShardedLayers travels to the actors (cloudpickle carries its loader) and each actor loads its own part, so the
driver never holds one; snapshots are files each actor writes into the checkpoint folder (a replacement actor
finds them) and the final parts are written by the actors.  **This assumes the actors and the driver share a
filesystem** (one machine, or a folder every node sees at the same path): the checkpoint folder, a stored
network's folder and the folder :meth:`RayShards.write_parts` writes into.
"""
from __future__ import annotations

import importlib
import os
import pickle
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backends.base import max_abs
from ..backends.shard_base import ShardData
from ..network import Layer
from ..settings import TrainConfig
from .checkpoint import checkpoint_path, last_common_epoch, load_part, save_part
from .cluster import probe_address
from .communicator import ShardAborted, sum_in_order
from .parts import ShardedLayers, write_part
from .worker import ShardWorker

__all__ = ["RayShards", "RayCommunicator", "Exchange", "KillShardOnce", "ShardingExtraMissing", "require_ray"]

INSTALL_HINT = 'pip install "cfn_fast[shard]"  (ray)'


class ShardingExtraMissing(RuntimeError):
    """Ray is not installed: sharded training needs the ``shard`` extra."""


def require_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ShardingExtraMissing(f"shards= trains on Ray, which does not import here ({exc}); install the extra: "
                                   f"{INSTALL_HINT}") from None


@dataclass(frozen=True)
class KillShardOnce:
    """Fault injection (tests): the actor of shard ``rank`` kills itself (SIGKILL, no clean-up) as it starts
    epoch ``epoch``, once: ``marker`` is created atomically by the killer, so its replacement lives."""

    marker: str
    rank: int
    epoch: int

    def __call__(self, rank: int, epoch: int) -> None:
        if rank != self.rank or epoch != self.epoch:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


class Exchange:
    """The meeting point of one group's sums (an asynchronous Ray actor).  A round is keyed by the group's
    generation and the step's tag; :meth:`abort` starts a new generation and releases every waiting shard."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.generation = 0
        self.rounds: dict[tuple, dict[str, Any]] = {}

    async def gather(self, generation: int, tag: tuple, rank: int, boxed: list) -> list:
        import asyncio
        if generation != self.generation:
            raise ShardAborted("the group was restarted")
        entry = self.rounds.get((generation, tag))
        if entry is None:
            entry = self.rounds[(generation, tag)] = {"refs": [None] * self.size, "event": asyncio.Event(), "taken": 0}
        entry["refs"][rank] = boxed[0]      # boxed in a list: Ray hands over the reference, not the block
        if all(ref is not None for ref in entry["refs"]):
            entry["event"].set()
        await entry["event"].wait()
        if generation != self.generation:
            raise ShardAborted("another shard failed during this sum")
        entry["taken"] += 1
        if entry["taken"] == self.size:
            self.rounds.pop((generation, tag), None)
        return entry["refs"]

    async def abort(self) -> int:
        self.generation += 1
        for entry in self.rounds.values():
            entry["event"].set()
        self.rounds.clear()
        return self.generation


class RayCommunicator:
    """Shard ``rank``'s end of the sums: its block into the object store, the references through the exchange."""

    def __init__(self, exchange: Any, rank: int, size: int) -> None:
        self.exchange, self.rank, self.size = exchange, rank, size
        self.generation, self.epoch, self.count = 0, 0, 0

    def begin(self, generation: int, epoch: int) -> None:
        self.generation, self.epoch, self.count = generation, epoch, 0

    def allreduce(self, block: Any) -> np.ndarray:
        import ray
        self.count += 1
        if not isinstance(block, np.ndarray) and hasattr(block, "get"):   # a CuPy block: summed on the host
            block = block.get()
        if self.size == 1:                  # nothing to exchange
            return np.array(block, dtype=np.float32, copy=True)
        mine = ray.put(np.ascontiguousarray(block))
        refs = ray.get(self.exchange.gather.remote(self.generation, (self.epoch, self.count), self.rank, [mine]))
        return sum_in_order(ray.get(refs))


class ShardHost:
    """The body of one shard's actor."""

    def __init__(self, rank: int, size: int, backend: str, part: list[Layer] | ShardedLayers, config: TrainConfig,
                 data: ShardData, side: np.ndarray | None, exchange: Any, threads: int | None,
                 fault: KillShardOnce | None, nccl_key: tuple[str, str] | None = None) -> None:
        from ..engine import make_shard_engine
        options = {"threads": threads} if backend == "cpu" and threads else {}
        if isinstance(part, ShardedLayers):      # kept sharded: this actor loads its own part
            part = part.part(rank)
        self.rank, self.fault = rank, fault
        if nccl_key is None:
            self.communicator: Any = RayCommunicator(exchange, rank, size)
        else:                          # one GPU per actor: the sums stay on the GPUs
            from .nccl import FileIdStore, NcclCommunicator
            self.communicator = NcclCommunicator.join(rank, size, FileIdStore(nccl_key[0]), nccl_key[1])
        self.worker = ShardWorker(make_shard_engine(backend, part, config, data, side, **options), self.communicator)

    def _begin(self, generation: int, tag: int) -> None:
        if isinstance(self.communicator, RayCommunicator):
            self.communicator.begin(generation, tag)

    def train_epoch(self, epoch: int, lr: float, generation: int) -> float:
        if self.fault is not None:
            self.fault(self.rank, epoch)
        self._begin(generation, epoch)
        return self.worker.train_epoch(epoch, lr)

    def step(self, rows: np.ndarray, epoch: int, lr: float, generation: int, tag: int) -> float:
        self._begin(generation, -tag)      # a negative "epoch" keeps single steps apart from epochs
        return self.worker.step(rows, epoch, lr)

    def get_layers(self) -> list[Layer]:
        return self.worker.get_layers()

    def set_layers(self, part: list[Layer]) -> None:
        self.worker.set_layers(part)

    def save(self, folder: str, epoch: int) -> None:
        save_part(folder, self.rank, epoch, self.worker.get_layers())

    def restore(self, folder: str, epoch: int) -> None:
        self.worker.set_layers(load_part(folder, self.rank, epoch, self.worker.get_layers()))

    # -- a network kept sharded
    def load_part(self, layers: ShardedLayers) -> None:
        self.worker.set_layers(layers.part(self.rank))

    def write_part(self, folder: str) -> None:
        write_part(folder, self.rank, self.worker.get_layers())

    def max_abs_param(self) -> float:
        return max_abs(array for layer in self.worker.get_layers() for array in layer.arrays())

    def snapshot(self, folder: str, key: int) -> None:
        """A copy of this shard's part kept as a file (a replacement actor restores from it, and the actor's
        memory holds one part, not two)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_part(folder, self.rank, key, self.worker.get_layers(), keep=None)

    def restore_snapshot(self, folder: str, key: int) -> None:
        self.restore(folder, key)

    def drop_snapshots(self, folder: str, keys: list[int]) -> None:
        for key in keys:
            checkpoint_path(folder, self.rank, key).unlink(missing_ok=True)

    def stats(self) -> dict[str, Any]:
        return self.worker.stats.as_dict()


def start_ray(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address``, or start Ray inside this process; True when started here."""
    if ray.is_initialized():
        return False
    if address is not None:
        probe_address(address, lambda name: "ray_address")   # seconds, not Ray's minutes of retries
    if address is None:
        # the embedded cluster runs workers at normal priority (Ray's default nice 15 starves them on a shared box)
        system = {} if "RAY_worker_niceness" in os.environ else {"worker_niceness": 0}
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, _system_config=system)
    else:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    return True


def actor_resources(cpus: float, shards: int) -> tuple[float, int]:
    """``(CPUs each actor reserves, kernel threads each runs)``: a fraction of a CPU when there are more shards than
    CPUs (Ray takes fractions below 1 only), and ``cores // shards`` threads, at least one."""
    share = cpus / shards
    return (share if share < 1 else float(int(share))), max(1, int(cpus) // shards)


class RayShards:
    """``len(data)`` shards as Ray actors, fault-tolerant: an epoch that loses an actor is run again.

    ``parts``: each shard's part, or a network kept sharded (:class:`ShardedLayers`), whose parts the actors load
    themselves (module docstring: a shared filesystem is assumed)."""

    def __init__(self, backend: str, parts: Sequence[list[Layer]] | ShardedLayers, config: TrainConfig,
                 data: Sequence[ShardData], side: np.ndarray | None, *, address: str | None = None,
                 checkpoint_dir: str | None = None, fault: KillShardOnce | None = None,
                 max_restarts: int = 3) -> None:
        ray = self.ray = require_ray()
        self.started_here = start_ray(ray, address)
        self.size, self.backend, self.config, self.fault = len(data), backend, config, fault
        resources = ray.cluster_resources()
        self.cpus, self.threads = actor_resources(float(resources.get("CPU", 1)), self.size)
        # cuda shards: one GPU each and NCCL between them when the cluster has a GPU per shard; else they share
        # the GPUs there are and sum through Ray on the host (NCCL refuses two ranks on one GPU)
        gpus = float(resources.get("GPU", 0))
        self.gpus = 0.0 if backend != "cuda" else (1.0 if gpus >= self.size else min(1.0, gpus / self.size))
        self.nccl = backend == "cuda" and gpus >= self.size > 1
        self.restarts_left, self.restarts = max_restarts, 0
        self.owns_folder = checkpoint_dir is None
        self.folder = tempfile.mkdtemp(prefix="cfn-shards-") if checkpoint_dir is None else str(checkpoint_dir)
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        self.exchange = ray.remote(Exchange).options(num_cpus=0).remote(self.size)
        self.generation = 0
        if isinstance(parts, ShardedLayers):     # one object for every actor; each loads its own part from it
            source = ray.put(parts)
            self.inputs = [(source, ray.put(d)) for d in data]
        else:
            self.inputs = [(ray.put(list(p)), ray.put(d)) for p, d in zip(parts, data)]
        self.snapshots = str(Path(self.folder) / "snapshots")
        self.side = ray.put(side)
        self.actors = [self._start(rank) for rank in range(self.size)]
        self.lrs: dict[int, float] = {}
        self.steps_taken = 0
        self._on_all("save", self.folder, 0)

    def _start(self, rank: int) -> Any:
        part, data = self.inputs[rank]
        host = self.ray.remote(ShardHost).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
        key = (self.folder, f"nccl-{self.generation}") if self.nccl else None
        return host.remote(rank, self.size, self.backend, part, self.config, data, self.side, self.exchange,
                           self.threads, self.fault, key)

    def _on_all(self, method: str, *args: Any) -> list[Any]:
        return self.ray.get([getattr(actor, method).remote(*args) for actor in self.actors])

    def _collect(self, refs: list[Any]) -> list[Any]:
        """The results of one call on every shard; on a failure, the exchange is aborted (so no shard waits
        forever) and :class:`_ShardsFailed` names the shards whose actor died."""
        exceptions = self.ray.exceptions
        results: dict[int, Any] = {}
        dead, error, aborted = [], None, False
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            index = refs.index(ready[0])
            try:
                results[index] = self.ray.get(ready[0])
                continue
            except exceptions.RayActorError:
                dead.append(index)
            except ShardAborted:
                pass
            except exceptions.RayTaskError as exc:
                error = error or exc
            if not aborted:      # the first failure: release the shards waiting on the failed one
                self.generation, aborted = self.ray.get(self.exchange.abort.remote()), True
                if self.nccl:    # a rank of an NCCL communicator is gone: the others would wait in NCCL for ever
                    for actor in self.actors:
                        self.ray.kill(actor)
        if error is not None:
            raise error
        if dead or len(results) < len(refs):
            raise _ShardsFailed(dead)
        return [results[k] for k in range(len(refs))]

    def _recover(self, dead: list[int]) -> int:
        if self.restarts_left <= 0 or not dead:
            raise RuntimeError(f"sharded training lost shard(s) {dead} and has no restarts left")
        if self.nccl:        # every actor was stopped: a new communicator needs every rank
            dead = list(range(self.size))
        self.restarts_left -= len(dead)
        self.restarts += len(dead)
        for rank in dead:
            self.actors[rank] = self._start(rank)
        epoch = last_common_epoch(self.folder, self.size)
        self._on_all("restore", self.folder, epoch)
        return epoch

    def train_epoch(self, epoch: int, lr: float) -> float:
        if not self.lrs and epoch > 1:   # started from trained parameters (a resumed fit): they are the state
            self._on_all("save", self.folder, epoch - 1)     # before this epoch, not before epoch 1
        self.lrs[epoch] = lr
        while True:
            try:
                losses = self._collect([a.train_epoch.remote(epoch, lr, self.generation) for a in self.actors])
                break
            except _ShardsFailed as failure:
                done = self._recover(failure.dead)
                for replay in range(done + 1, epoch):    # epochs lost since the last common checkpoint
                    self._collect([a.train_epoch.remote(replay, self.lrs[replay], self.generation)
                                   for a in self.actors])
                    self._on_all("save", self.folder, replay)
        self._on_all("save", self.folder, epoch)
        return float(sum(losses))

    def step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        self.steps_taken += 1
        return float(sum(self._collect([a.step.remote(rows, epoch, lr, self.generation, self.steps_taken)
                                        for a in self.actors])))

    def get_parts(self) -> list[list[Layer]]:
        return self._on_all("get_layers")

    def set_parts(self, parts: Sequence[list[Layer]]) -> None:
        self.ray.get([actor.set_layers.remote(part) for actor, part in zip(self.actors, parts)])

    def stats(self) -> list[dict[str, Any]]:
        return self._on_all("stats")

    # -- a network kept sharded: the actors work on their own parts
    def part(self, rank: int) -> list[Layer]:
        return self.ray.get(self.actors[rank].get_layers.remote())

    def load_parts(self, layers: ShardedLayers) -> None:
        """Each actor loads its own part of ``layers``; a ShardedLayers that does not pickle (a live view of
        another engine's shards) is read here one part at a time and each part sent to its actor."""
        try:
            source = self.ray.put(layers)
        except (TypeError, pickle.PicklingError):
            for rank, actor in enumerate(self.actors):
                self.ray.get(actor.set_layers.remote(layers.part(rank)))
            return
        self._on_all("load_part", source)

    def write_parts(self, folder: str) -> None:
        """Each actor writes its part into ``folder`` (on a filesystem the driver sees at the same path)."""
        self._on_all("write_part", str(folder))

    def max_abs_params(self) -> list[float]:
        return self._on_all("max_abs_param")

    def snapshot(self, key: int) -> None:
        self._on_all("snapshot", self.snapshots, key)

    def restore_snapshot(self, key: int) -> None:
        self._on_all("restore_snapshot", self.snapshots, key)

    def drop_snapshots(self, keys: Sequence[int]) -> None:
        self._on_all("drop_snapshots", self.snapshots, list(keys))

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.ray.kill(self.exchange)
        shutil.rmtree(self.snapshots, ignore_errors=True)     # they belong to this group of actors
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.started_here:
            self.ray.shutdown()


class _ShardsFailed(Exception):
    def __init__(self, dead: list[int]) -> None:
        super().__init__(f"shards {dead} died")
        self.dead = dead
