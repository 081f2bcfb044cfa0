"""The collectives sharded training needs, behind one small interface.

A step of sharded training sums two blocks over the shards (:mod:`cfn_fast.backends.shard_base`).  A
:class:`Communicator` is one shard's end of that sum: ``allreduce(block)`` returns the sum of every shard's block.
The implementations come from existing libraries:

* :class:`ThreadGroup` — the shards as threads of one process (tests, and the stand-in for NCCL in CI);
* :class:`~cfn_fast.sharding.ray_group.RayCommunicator` — Ray object references between actors on CPUs;
* :class:`~cfn_fast.sharding.nccl.NcclCommunicator` — NCCL between GPUs through CuPy.

On the host the blocks are summed in shard order, so a run is deterministic whatever the timing of the shards.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Communicator", "ThreadGroup", "ShardAborted", "sum_in_order"]


class ShardAborted(RuntimeError):
    """A collective was abandoned because another shard failed; the run rolls back to its last checkpoint."""


@runtime_checkable
class Communicator(Protocol):
    """One shard's end of the shards' collectives."""

    rank: int
    size: int

    def allreduce(self, block: Any) -> Any:
        """The sum over every shard of its ``block`` (same shape and dtype), the same value on every shard."""


def sum_in_order(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Σ blocks, left to right: the one order of the host sums (shard 0 first)."""
    total = np.array(blocks[0], dtype=np.float32, copy=True)
    for block in blocks[1:]:
        total += block
    return total


class ThreadGroup:
    """``size`` shards running as threads of one process; :meth:`member` is shard ``rank``'s communicator.

    Each shard leaves its block in a slot and waits for the others (a barrier), every shard sums the slots in
    shard order, and a second barrier keeps a fast shard from overwriting its slot before the others have read
    it.  :meth:`abort` breaks the barriers: every waiting shard raises :class:`ShardAborted`."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size)
        self.bytes_received = [0] * size

    def member(self, rank: int) -> "ThreadMember":
        if not 0 <= rank < self.size:
            raise ValueError(f"rank must be in [0, {self.size}), got {rank}")
        return ThreadMember(self, rank)

    def abort(self) -> None:
        self.barrier.abort()


class ThreadMember:
    """Shard ``rank``'s end of a :class:`ThreadGroup`."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group, self.rank, self.size = group, rank, group.size

    def allreduce(self, block: Any) -> Any:
        group = self.group
        group.slots[self.rank] = block
        try:
            group.barrier.wait()
            total = _sum_like(group.slots)
            group.bytes_received[self.rank] += sum(int(b.nbytes) for i, b in enumerate(group.slots) if i != self.rank)
            group.barrier.wait()
        except threading.BrokenBarrierError:
            raise ShardAborted("another shard failed during a collective") from None
        return total


def _sum_like(blocks: Sequence[Any]) -> Any:
    """Shard-order sum that keeps the blocks' array type (NumPy here; CuPy arrays under the NCCL stand-in)."""
    if isinstance(blocks[0], np.ndarray):
        return sum_in_order(blocks)
    total = blocks[0].copy()
    for block in blocks[1:]:
        total += block
    return total
