"""One shard's training loop: its engine's split step, with the two sums done by its communicator.

Every shard runs the same loop on the same mini-batches (:func:`~cfn_fast.backends.base.epoch_order` of the
samples with a rating in any shard), so the collectives pair up without a coordinator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import epoch_order
from ..backends.shard_base import ShardEngine
from ..network import Layer
from .communicator import Communicator

__all__ = ["ShardWorker", "CommunicationStats"]


@dataclass
class CommunicationStats:
    """What one shard's collectives cost: steps taken, blocks reduced, bytes of one block sent, seconds waited."""

    steps: int = 0
    reductions: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "reductions": self.reductions, "bytes_sent": self.bytes_sent,
                "seconds": self.seconds}


class ShardWorker:
    """Shard ``communicator.rank``: a :class:`~cfn_fast.backends.shard_base.ShardEngine` and its communicator."""

    def __init__(self, engine: ShardEngine, communicator: Communicator) -> None:
        self.engine = engine
        self.communicator = communicator
        self.stats = CommunicationStats()

    def _reduce(self, block: Any) -> Any:
        start = time.perf_counter()
        total = self.communicator.allreduce(block)
        self.stats.seconds += time.perf_counter() - start
        self.stats.reductions += 1
        self.stats.bytes_sent += int(block.nbytes)
        return total

    def step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        """One mini-batch; returns this shard's part of the loss."""
        engine = self.engine
        hidden_sum = self._reduce(engine.input_partial(rows, epoch))
        loss, code_grad = engine.output_partial(rows, epoch, hidden_sum, lr)
        engine.finish_step(rows, self._reduce(code_grad), lr)
        self.stats.steps += 1
        return float(loss)

    def train_epoch(self, epoch: int, lr: float) -> float:
        """Every mini-batch of ``epoch`` in the unsharded order; returns this shard's part of the epoch's loss."""
        order = epoch_order(self.engine.config.seed, epoch, self.engine.trainable)
        size = int(self.engine.config.batch_size)
        return sum(self.step(order[start:start + size], epoch, lr) for start in range(0, len(order), size))

    def get_layers(self) -> list[Layer]:
        return self.engine.get_layers()

    def set_layers(self, parts: list[Layer]) -> None:
        self.engine.set_layers(parts)
