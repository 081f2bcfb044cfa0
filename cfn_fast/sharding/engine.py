"""A network trained with its input dimension sharded over workers, behind the ordinary engine interface.

:class:`ShardedEngine` is what ``CFN(shards=N)`` trains with: ``train_epoch`` runs the split step on the shards
(Ray actors by default, threads of this process with ``transport="threads"``).  It has two modes, chosen by what
it is built on:

* **gathered** (a list of :class:`~cfn_fast.network.Layer`): everything but training — the snapshot and restore
  of the training loop, the divergence check, inference — works on the network gathered from the shards into an
  ordinary engine of the same backend.  So the fitted model is an ordinary ``CFN`` (predict, save, ONNX, pickle),
  and the shards exist only while it trains: :meth:`~ShardedEngine.release` (called when a fit ends) gathers the
  network and stops them; the next ``train_epoch`` starts them again from it.
* **kept sharded** (a :class:`~cfn_fast.sharding.parts.ShardedLayers`: a network too large for one process): the
  whole network is never in the driver.  Each shard loads its own part (``layers.part(rank)``), snapshots are the
  shards' copies of their own parts (the trainer gets an opaque token), ``max_abs_param`` is the largest of the
  shards', inference runs part by part (:class:`~cfn_fast.sharding.inference.PartsEngine`), and
  :meth:`~ShardedEngine.release` has each shard write its part into a folder (``store_dir``, or a new temporary
  one) whose :class:`ShardedLayers` the engine then holds and the next ``train_epoch`` starts from.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..backends.base import Engine, check_training_inputs, max_abs
from ..backends.public_calls import NetworkShape
from ..backends.shard_base import join_layers, shard_bounds, shard_data, split_layers
from ..engine import make_engine, make_shard_engine
from ..network import Layer
from ..settings import TrainConfig
from .local import ThreadShards
from .parts import ShardedLayers, write_manifest
from .ray_group import KillShardOnce, RayShards, actor_resources

__all__ = ["ShardedEngine", "TRANSPORTS"]

log = logging.getLogger("cfn_fast")

#: how the shards run: Ray actors (the default: one process each, on this machine or a cluster) or threads here
TRANSPORTS = ("ray", "threads")


class PartsSnapshot:
    """What :meth:`ShardedEngine.snapshot` returns in kept mode (opaque to the trainer): the key under which every
    running shard keeps a copy of its own part, or, when no shard runs, the :class:`ShardedLayers` the engine
    holds (immutable: a seed or a folder kept alive by this reference)."""

    __slots__ = ("key", "generation", "layers", "__weakref__")

    def __init__(self, key: int | None, generation: int, layers: ShardedLayers | None) -> None:
        self.key, self.generation, self.layers = key, generation, layers


class ShardedEngine(Engine):
    """``shards`` workers training one network (``backend`` engines on slices of its inputs).

    ``layers``: a list of layers (gathered mode) or a :class:`ShardedLayers` (kept sharded; its
    ``layout.bounds`` are the shards', and ``shards`` must be its number of parts).  ``store_dir`` (kept mode
    only): where :meth:`release` writes the parts; without it each release writes a new temporary folder
    (``cfn-shards-*``), deleted when the :class:`ShardedLayers` read from it is garbage-collected.  A folder given
    here is never deleted; each release overwrites the parts in it."""

    name = "sharded"
    phase_timer = ""

    def __init__(self, layers: list[Layer] | ShardedLayers, config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, *, shards: int, backend: str, transport: str = "ray",
                 address: str | None = None, checkpoint_dir: str | None = None, fault: KillShardOnce | None = None,
                 store_dir: str | os.PathLike | None = None) -> None:
        self.kept = isinstance(layers, ShardedLayers)
        if self.kept:
            check_training_inputs(samples, side)     # before its shape is read
            layout = layers.layout
            super().__init__(NetworkShape(int(samples.shape[0]), layout.n_inputs, layout.hidden, layout.side_dim),
                             config, samples, side)
        else:
            super().__init__(layers, config, samples, side)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if store_dir is not None and not self.kept:
            raise ValueError("store_dir is for a network kept sharded (layers given as a ShardedLayers); a list of "
                             "layers is gathered when training ends")
        self.backend, self.transport, self.address = backend, transport, address
        self.checkpoint_dir, self.fault = checkpoint_dir, fault
        self.store_dir = None if store_dir is None else str(store_dir)
        self.group: Any = None
        self.stale = False          # gathered mode: the shards hold newer parameters than self.gathered
        self.last_stats: list[dict[str, Any]] = []
        if self.kept:
            self.layout = layers.layout
            if self.layout.shards != shards:
                raise ValueError(f"shards={shards}, but the layers are kept in {self.layout.shards} parts")
            self.bounds = [tuple(bounds) for bounds in self.layout.bounds]
            self.gathered: Engine | None = None
            self.kept_layers: ShardedLayers | None = layers      # what the shards start from; truth while none runs
        else:
            self.bounds = shard_bounds(samples.shape[1], shards)
            self.gathered = make_engine(backend, layers, config, samples, side)   # inference, snapshots
            self.kept_layers = None
        self.generation = 0         # how many groups of shards have started (a kept snapshot belongs to one)
        self.snapshot_keys = count()
        self.forgotten: list[int] = []   # kept snapshots the trainer dropped: the shards drop them at the next call

    @property
    def shards(self) -> int:
        return len(self.bounds)

    # ---------------------------------------------------------------- the shards
    def _group(self) -> Any:
        if self.group is None:
            data = shard_data(self.samples, self.bounds)
            source: Any = self.kept_layers if self.kept else split_layers(self.gathered.get_layers(), self.bounds)
            if self.transport == "threads":
                threads = actor_resources(float(_cores()), self.shards)[1]
                options = {"threads": threads} if self.backend == "cpu" else {}
                if self.kept:        # each shard's thread loads its own part
                    self.group = ThreadShards.started(self.shards, lambda rank: make_shard_engine(
                        self.backend, source.part(rank), self.config, data[rank], self.side, **options))
                else:
                    self.group = ThreadShards([make_shard_engine(self.backend, p, self.config, d, self.side,
                                                                 **options) for p, d in zip(source, data)])
            else:
                self.group = RayShards(self.backend, source, self.config, data, self.side, address=self.address,
                                       checkpoint_dir=self.checkpoint_dir, fault=self.fault)
            self.generation += 1
        return self.group

    def _sync(self) -> None:
        """Gathered mode: bring the gathered network up to the shards' parameters."""
        if self.stale:
            self.gathered.set_layers(join_layers(self.group.get_parts()))
            self.stale = False

    def release(self) -> None:
        """Stop the shards (Ray actors, threads); training starts them again.  Gathered mode: the network is
        gathered first.  Kept mode: each shard writes its part into ``store_dir`` or a new temporary folder
        (Ray: the actors write it, so the folder must be on a filesystem they share with the driver), then the
        manifest is written here and :meth:`get_layers` returns ``ShardedLayers.from_folder`` of it."""
        if self.group is None:
            return
        stored = self._store_parts() if self.kept else None
        if not self.kept:
            self._sync()
        self.last_stats = self.group.stats()
        self.group.close()
        self.group = None
        if stored is not None:
            self.kept_layers = stored
            self.forgotten.clear()      # their shards are gone

    def _store_parts(self) -> ShardedLayers:
        folder = self.store_dir or tempfile.mkdtemp(prefix="cfn-shards-")
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.group.write_parts(folder)
        write_manifest(folder, self.layout)
        stored = ShardedLayers.from_folder(folder)
        if self.store_dir is None:    # the folder lives as long as the layers read from it (and no longer)
            weakref.finalize(stored, shutil.rmtree, folder, True)
        return stored

    @property
    def restarts(self) -> int:
        """Shard actors replaced after a failure so far (Ray transport)."""
        return int(getattr(self.group, "restarts", 0))

    # ---------------------------------------------------------------- training
    def train_epoch(self, epoch: int, lr: float) -> float:
        group = self._group()
        self.stale = not self.kept
        return group.train_epoch(epoch, lr)

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        group = self._group()
        self.stale = not self.kept
        return group.step(np.asarray(rows, dtype=np.int64), epoch, lr)

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        raise ValueError("a sharded engine has no whole-network gradients: each shard holds its own (the split "
                         "step, cfn_fast.engine.make_shard_engine); use sgd_step or train_epoch")

    # ---------------------------------------------------------------- parameters
    def get_layers(self) -> list[Layer] | ShardedLayers:  # type: ignore[override]
        """Gathered mode: a copy of the network.  Kept mode: a :class:`ShardedLayers` — while shards run, a live
        view whose ``part(rank)`` fetches shard ``rank``'s current part (one at a time); else the stored one."""
        if self.kept:
            if self.group is None:
                return self.kept_layers
            return ShardedLayers(self.layout, self._live_part, origin="live on the training shards")
        self._sync()
        return self.gathered.get_layers()

    def _live_part(self, rank: int) -> list[Layer]:
        group = self.group
        return self.kept_layers.part(rank) if group is None else group.part(rank)

    def set_layers(self, layers: list[Layer] | ShardedLayers) -> None:
        """Gathered mode: a list of layers (a ShardedLayers is gathered).  Kept mode: a :class:`ShardedLayers`
        of the same layout, whose parts the shards load themselves."""
        if self.kept:
            if not isinstance(layers, ShardedLayers):
                raise TypeError("this engine keeps its network sharded: set_layers takes a ShardedLayers (e.g. "
                                "ShardedLayers.initial(layout, seed) or ShardedLayers.from_folder(folder)), not a "
                                "list of layers")
            if layers.layout != self.layout:
                raise ValueError(f"the layers are split at {layers.layout.bounds}; this engine's shards hold "
                                 f"{self.layout.bounds}")
            self._load(layers)
            return
        if isinstance(layers, ShardedLayers):   # this mode holds the whole network anyway
            layers = layers.gather()
        self.gathered.set_layers(layers)
        self.stale = False
        if self.group is not None:
            self.group.set_parts(split_layers(self.gathered.get_layers(), self.bounds))

    def _load(self, layers: ShardedLayers) -> None:
        if self.group is None:
            self.kept_layers = layers
        else:
            self.group.load_parts(layers)

    def snapshot(self) -> object:
        """Kept mode: every running shard keeps a copy of its part (Ray: a file in its checkpoint folder) under a
        new key, dropped when the trainer drops the token; with no shard running, the stored layers."""
        if not self.kept:
            return super().snapshot()
        self._drop_forgotten()
        if self.group is None:
            return PartsSnapshot(None, self.generation, self.kept_layers)
        key = next(self.snapshot_keys)
        self.group.snapshot(key)
        token = PartsSnapshot(key, self.generation, None)
        weakref.finalize(token, self.forgotten.append, key)
        return token

    def restore(self, snapshot: object) -> None:
        if not self.kept:
            super().restore(snapshot)
            return
        if not isinstance(snapshot, PartsSnapshot):
            raise TypeError(f"restore takes a snapshot() of this engine, got {type(snapshot).__name__}")
        if snapshot.layers is not None:
            self._load(snapshot.layers)
        elif self.group is None or snapshot.generation != self.generation:
            raise ValueError("this snapshot was kept by shards that have stopped since (release()): restore takes "
                             "a snapshot taken after the last release")
        else:
            self.group.restore_snapshot(snapshot.key)

    def _drop_forgotten(self) -> None:
        keys = []
        while self.forgotten:
            keys.append(self.forgotten.pop())
        if keys and self.group is not None:
            self.group.drop_snapshots(keys)

    def max_abs_param(self) -> float:
        if not self.kept:
            self._sync()
            return self.gathered.max_abs_param()
        if self.group is not None:
            peaks = self.group.max_abs_params()
        else:                   # one stored part at a time
            peaks = [max_abs(a for layer in part for a in layer.arrays()) for _, _, part in self.kept_layers.parts()]
        return float("nan") if any(np.isnan(peak) for peak in peaks) else float(max(peaks))

    # ---------------------------------------------------------------- inference
    def _inference(self) -> Engine:
        """Gathered mode: the gathered engine, up to date.  Kept mode: inference part by part on the shards'
        current parts (:class:`~cfn_fast.sharding.inference.PartsEngine`)."""
        if not self.kept:
            self._sync()
            return self.gathered
        from .inference import PartsEngine  # lazily: inference on kept parts is its own module
        return PartsEngine(self.get_layers(), self.config, self.samples, self.side)

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None, rows: np.ndarray,
                        cols: np.ndarray) -> np.ndarray:
        return self._inference().predict_entries(inputs, side, rows, cols)

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        return self._inference().encode(inputs, side)

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        return self._inference().decode(codes, side, cols)

    def __del__(self) -> None:
        try:
            if self.group is not None:
                self.group.close()
        except Exception:       # noqa: BLE001 - interpreter shutdown: nothing left to release
            pass


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
