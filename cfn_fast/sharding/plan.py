"""Whether and how a network is sharded: ``shards``, ``ray_address`` and the memory cap ``max_worker_bytes``.

A network whose whole parameters exceed ``max_worker_bytes`` trains sharded and *stays* sharded (``keep``): it is
never gathered into one process (:mod:`cfn_fast.sharding.parts`); one within the cap is gathered when training
ends, into an ordinary network."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..backends.shard_base import shard_parameter_bytes, split_layers
from ..network import Layer, check_layers, init_layers
from .parts import PartLayout, ShardedLayers

__all__ = ["ShardPlan", "shard_plan", "shards_needed", "initial_network"]


@dataclass(frozen=True)
class ShardPlan:
    """Train on ``shards`` workers, on Ray at ``address`` (None: started in this process); with ``keep``, the
    network never leaves its shards."""

    shards: int
    address: str | None = None
    keep: bool = False


def shards_needed(n_inputs: int, hidden: Sequence[int], side_dim: int, cap: int) -> int:
    """The fewest shards whose largest part fits in ``cap`` bytes (``ValueError`` when even one input per shard
    does not: the replicated layers alone exceed it)."""
    if shard_parameter_bytes(n_inputs, hidden, side_dim, n_inputs) > cap:
        floor = shard_parameter_bytes(n_inputs, hidden, side_dim, n_inputs)
        raise ValueError(f"max_worker_bytes={cap:,} is below what any shard of this network holds ({floor:,} bytes: "
                         f"the replicated hidden layers); raise it or shrink hidden={tuple(hidden)}")
    low, high = 1, n_inputs
    while low < high:                     # the bytes fall as the shards grow: bisect
        middle = (low + high) // 2
        if shard_parameter_bytes(n_inputs, hidden, side_dim, middle) <= cap:
            high = middle
        else:
            low = middle + 1
    return low


def shard_plan(params: Mapping[str, Any], n_inputs: int, side_dim: int) -> ShardPlan | None:
    """The plan of resolved settings ``params`` for a network over ``n_inputs`` inputs (None: unsharded).  With
    ``max_worker_bytes``, a network whose worker part exceeds the cap is refused, naming the shards it needs."""
    shards, cap, hidden = params.get("shards"), params.get("max_worker_bytes"), params["hidden"]
    if cap is not None:
        needed = shards_needed(n_inputs, hidden, side_dim, int(cap))
        if (shards or 1) < needed:
            size = shard_parameter_bytes(n_inputs, hidden, side_dim, shards or 1)
            raise ValueError(f"the network's parameters take {size:,} bytes per worker with shards={shards}, over "
                             f"max_worker_bytes={int(cap):,}: train it with shards={needed} or more "
                             f"(CFN(shards={needed}), cfn fit --shards {needed})")
    if shards is None:
        return None
    if shards > n_inputs:
        raise ValueError(f"shards={shards} is more than the network's {n_inputs} inputs")
    keep = cap is not None and shard_parameter_bytes(n_inputs, hidden, side_dim, 1) > int(cap)
    return ShardPlan(int(shards), params.get("ray_address"), keep)


def initial_network(plan: ShardPlan | None, n_inputs: int, hidden: Sequence[int], side_dim: int, seed: int,
                    initial: Sequence[Layer] | None = None) -> list[Layer] | ShardedLayers:
    """The network a fit starts from: ``initial`` (a warm start, checked) or the seed's initialisation; for a
    network kept sharded, its parts (each made by its shard from the seed alone, never the whole network)."""
    layers = None if initial is None else check_layers(initial, n_inputs, side_dim, hidden, "initial_layers")
    if plan is None or not plan.keep:
        return init_layers(n_inputs, tuple(hidden), side_dim, seed) if layers is None else layers
    layout = PartLayout.even(n_inputs, hidden, side_dim, plan.shards)
    if layers is None:
        return ShardedLayers.initial(layout, seed)
    parts = split_layers(layers, layout.bounds)
    return ShardedLayers(layout, lambda rank: [layer.copy() for layer in parts[rank]], origin="initial_layers")
