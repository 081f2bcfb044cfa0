"""A network trained with its input dimension sharded over workers, behind the ordinary engine interface.

:class:`ShardedEngine` is what ``CFN(shards=N)`` trains with: ``train_epoch`` runs the split step on the shards
(Ray actors by default, threads of this process with ``transport="threads"``); everything else — the
snapshot and restore of the training loop, the divergence check, inference — works on the network gathered
from the shards into an ordinary engine of the same backend.  So the fitted model is an ordinary ``CFN``
(predict, save, ONNX, pickle), and the shards exist only while it trains: :meth:`release` (called when a fit
ends) gathers the network and stops them; the next ``train_epoch`` starts them again from it.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..backends.base import Engine
from ..backends.shard_base import join_layers, shard_bounds, shard_data, split_layers
from ..engine import make_engine, make_shard_engine
from ..network import Layer
from ..settings import TrainConfig
from .local import ThreadShards
from .ray_group import KillShardOnce, RayShards, actor_resources

__all__ = ["ShardedEngine", "TRANSPORTS"]

log = logging.getLogger("cfn_fast")

#: how the shards run: Ray actors (the default: one process each, on this machine or a cluster) or threads here
TRANSPORTS = ("ray", "threads")


class ShardedEngine(Engine):
    """``shards`` workers training one network (``backend`` engines on slices of its inputs)."""

    name = "sharded"
    phase_timer = ""

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix, side: np.ndarray | None,
                 *, shards: int, backend: str, transport: str = "ray", address: str | None = None,
                 checkpoint_dir: str | None = None, fault: KillShardOnce | None = None) -> None:
        super().__init__(layers, config, samples, side)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        self.backend, self.transport, self.address = backend, transport, address
        self.checkpoint_dir, self.fault = checkpoint_dir, fault
        self.bounds = shard_bounds(samples.shape[1], shards)
        self.gathered = make_engine(backend, layers, config, samples, side)   # inference, snapshots
        self.group: Any = None
        self.stale = False          # the shards hold newer parameters than self.gathered
        self.last_stats: list[dict[str, Any]] = []

    @property
    def shards(self) -> int:
        return len(self.bounds)

    # ---------------------------------------------------------------- the shards
    def _group(self) -> Any:
        if self.group is None:
            parts = split_layers(self.gathered.get_layers(), self.bounds)
            data = shard_data(self.samples, self.bounds)
            if self.transport == "threads":
                threads = actor_resources(float(_cores()), self.shards)[1]
                options = {"threads": threads} if self.backend == "cpu" else {}
                self.group = ThreadShards([make_shard_engine(self.backend, p, self.config, d, self.side, **options)
                                           for p, d in zip(parts, data)])
            else:
                self.group = RayShards(self.backend, parts, self.config, data, self.side, address=self.address,
                                       checkpoint_dir=self.checkpoint_dir, fault=self.fault)
        return self.group

    def _sync(self) -> None:
        """Bring the gathered network up to the shards' parameters."""
        if self.stale:
            self.gathered.set_layers(join_layers(self.group.get_parts()))
            self.stale = False

    def release(self) -> None:
        """Gather the network and stop the shards (Ray actors, threads); training starts them again."""
        if self.group is not None:
            self._sync()
            self.last_stats = self.group.stats()
            self.group.close()
            self.group = None

    @property
    def restarts(self) -> int:
        """Shard actors replaced after a failure so far (Ray transport)."""
        return int(getattr(self.group, "restarts", 0))

    # ---------------------------------------------------------------- training
    def train_epoch(self, epoch: int, lr: float) -> float:
        group = self._group()
        self.stale = True
        return group.train_epoch(epoch, lr)

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        group = self._group()
        self.stale = True
        return group.step(np.asarray(rows, dtype=np.int64), epoch, lr)

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        raise ValueError("a sharded engine has no whole-network gradients: each shard holds its own (the split "
                         "step, cfn_fast.engine.make_shard_engine); use sgd_step or train_epoch")

    def get_layers(self) -> list[Layer]:
        self._sync()
        return self.gathered.get_layers()

    def set_layers(self, layers: list[Layer]) -> None:
        self.gathered.set_layers(layers)
        self.stale = False
        if self.group is not None:
            self.group.set_parts(split_layers(self.gathered.get_layers(), self.bounds))

    def max_abs_param(self) -> float:
        self._sync()
        return self.gathered.max_abs_param()

    # ---------------------------------------------------------------- inference: on the gathered network
    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None, rows: np.ndarray,
                        cols: np.ndarray) -> np.ndarray:
        self._sync()
        return self.gathered.predict_entries(inputs, side, rows, cols)

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        self._sync()
        return self.gathered.encode(inputs, side)

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        self._sync()
        return self.gathered.decode(codes, side, cols)

    def __del__(self) -> None:
        try:
            if self.group is not None:
                self.group.close()
        except Exception:       # noqa: BLE001 - interpreter shutdown: nothing left to release
            pass


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
