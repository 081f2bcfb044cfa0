"""The split training step of a CFN whose input dimension is sharded over workers (engine API 1.5).

Shard ``k`` of ``N`` owns a contiguous range ``[first, stop)`` of the inputs (items for U-CFN, users for I-CFN):
the first layer's weight *columns* of those inputs and the output layer's *rows* (weight, bias, side weight) of
the same ids.  Everything else — the first layer's bias and side weight, and every layer in between — is
replicated: every shard holds the same copy and applies the same update to it.  One mini-batch is then

1. ``input_partial``: each shard's first-layer pre-activations from *its* visible inputs (B x H₁);
2. the blocks are summed over the shards (an all-reduce, in shard order on the host);
3. ``output_partial``: the replicated layers forward from the sum, the shard's outputs at its known entries, its
   loss, the update of its output rows and its part of the gradient reaching the last code (B x H_last);
4. those parts are summed over the shards;
5. ``finish_step``: the replicated layers backward from the sum and their update, then the shard's first-layer
   columns.

So a step moves two blocks of batch x hidden numbers, whatever the input dimension.  The masking noise is the
unsharded one bit for bit: a shard keys each of its entries by its position in the *whole* training CSR
(:class:`ShardData.positions`), and the swap rule (a sample whose every entry would be hidden gets them all
visible) needs the sample's count of hidden entries over all shards: each shard recounts it from the global row
pointer (hashing a row's positions costs far less than the products it saves) instead of a third exchange.

:func:`split_layers` / :func:`join_layers` go between the canonical network and the shards' parts.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from ..network import Layer
from ..settings import TrainConfig
from .validation import checked_epoch, checked_lr, index_array

__all__ = ["ShardData", "ShardEngine", "shard_bounds", "shard_data", "split_layers", "join_layers",
           "shard_parameter_bytes"]


def shard_bounds(n_inputs: int, shards: int) -> list[tuple[int, int]]:
    """``[first, stop)`` of each shard: the inputs cut into ``shards`` contiguous ranges of (nearly) equal width,
    so each shard holds the same share of the input-dimension weights (sharding is for memory)."""
    if not isinstance(shards, (int, np.integer)) or isinstance(shards, bool) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if shards > n_inputs:
        raise ValueError(f"shards={shards} is more than the {n_inputs} inputs to split")
    edges = np.linspace(0, n_inputs, int(shards) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@dataclass(frozen=True)
class ShardData:
    """What one shard trains on.

    ``samples``: n_samples x (stop − first) float32 CSR, the training samples' entries in this shard's inputs
    (column ``j`` is input ``first + j``); ``positions``: int64, the position of each of those entries in the
    whole training CSR (the masking noise's key); ``row_starts``: the whole CSR's row pointer (int64,
    n_samples + 1: each sample's known count, for the swap rule); ``first``: the shard's first input."""

    samples: sp.csr_matrix
    positions: np.ndarray
    row_starts: np.ndarray
    first: int

    @property
    def stop(self) -> int:
        return self.first + int(self.samples.shape[1])

    @property
    def trainable(self) -> np.ndarray:
        """The samples with a rating in *any* shard: each epoch visits them in the unsharded order."""
        return np.flatnonzero(np.diff(self.row_starts) > 0)


def shard_data(samples: sp.csr_matrix, bounds: Sequence[tuple[int, int]]) -> list[ShardData]:
    """Split the (sorted, float32) training CSR into its shards' :class:`ShardData`."""
    samples = sp.csr_matrix(samples, dtype=np.float32)
    samples.sort_indices()
    row_starts = samples.indptr.astype(np.int64)
    row_of = np.repeat(np.arange(samples.shape[0]), np.diff(samples.indptr))
    parts = []
    for first, stop in bounds:
        mine = np.flatnonzero((samples.indices >= first) & (samples.indices < stop))
        local = sp.csr_matrix((samples.data[mine], samples.indices[mine] - first,
                               np.r_[0, np.cumsum(np.bincount(row_of[mine], minlength=samples.shape[0]))]),
                              shape=(samples.shape[0], stop - first), dtype=np.float32)
        parts.append(ShardData(local, mine.astype(np.int64), row_starts, int(first)))
    return parts


def split_layers(layers: Sequence[Layer], bounds: Sequence[tuple[int, int]]) -> list[list[Layer]]:
    """Each shard's part of the canonical network: the first layer's weight columns and the output layer's rows
    of its inputs, copies of every replicated array."""
    first, *middle, last = layers
    parts = []
    for lo, hi in bounds:
        parts.append([Layer(first.weight[:, lo:hi].copy(), first.bias.copy(),
                            None if first.side_weight is None else first.side_weight.copy()),
                      *(layer.copy() for layer in middle),
                      Layer(last.weight[lo:hi].copy(), last.bias[lo:hi].copy(),
                            None if last.side_weight is None else last.side_weight[lo:hi].copy())])
    return parts


def join_layers(parts: Sequence[Sequence[Layer]]) -> list[Layer]:
    """The canonical network from the shards' parts (in shard order); the replicated arrays from shard 0."""
    lead = parts[0]
    first = Layer(np.concatenate([p[0].weight for p in parts], axis=1), lead[0].bias.copy(),
                  None if lead[0].side_weight is None else lead[0].side_weight.copy())
    last = Layer(np.concatenate([p[-1].weight for p in parts]), np.concatenate([p[-1].bias for p in parts]),
                 None if lead[-1].side_weight is None else np.concatenate([p[-1].side_weight for p in parts]))
    return [first, *(layer.copy() for layer in lead[1:-1]), last]


def replicated_codes(hidden_sum: np.ndarray, first_bias: np.ndarray, first_side_weight: np.ndarray | None,
                     middle: Sequence[Layer], side: np.ndarray | None) -> list[np.ndarray]:
    """The codes ``h_1 .. h_{L-1}`` every shard computes alike from the summed first-layer block: the first layer's
    bias and side term, tanh, then each middle layer (``numpy_backend.forward`` from the first code on)."""
    z = hidden_sum + first_bias
    if side is not None:
        z += side @ first_side_weight.T
    codes = [np.tanh(z)]
    for layer in middle:
        z = codes[-1] @ layer.weight.T + layer.bias
        if side is not None:
            z += side @ layer.side_weight.T
        codes.append(np.tanh(z))
    return codes


def shard_parameter_bytes(n_inputs: int, hidden: Sequence[int], side_dim: int, shards: int) -> int:
    """float32 bytes of the parameters the largest shard holds (its input-dimension slices plus every replicated
    array): what ``max_worker_bytes`` is compared with."""
    width = -(-n_inputs // shards)
    hidden = list(hidden)
    replicated = hidden[0] * (1 + side_dim)
    for fan_in, fan_out in zip(hidden[:-1], hidden[1:]):
        replicated += fan_out * (fan_in + 1 + side_dim)
    per_input = hidden[0] + hidden[-1] + 1 + side_dim
    return 4 * (replicated + width * per_input)


class ShardEngine(ABC):
    """One shard's engine: the split step (module docstring) on one backend.

    ``parts`` is this shard's part of the network (:func:`split_layers`); ``data`` its :class:`ShardData`;
    ``side`` the side information of *every* sample (replicated, like the layers it feeds) or ``None``."""

    name: ClassVar[str] = "abstract"

    def __init__(self, parts: list[Layer], config: TrainConfig, data: ShardData, side: np.ndarray | None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a cfn_fast.engine.TrainConfig, got {type(config).__name__}")
        if config.dtype != "float32":
            raise ValueError(f"sharded training stores float32 weights; {config.dtype} is not sharded yet")
        if config.dropout or config.kernel_dim:
            raise ValueError("dropout and kernel_dim are not sharded yet: the split step trains with neither")
        if not isinstance(data, ShardData):
            raise TypeError(f"data must be a cfn_fast.engine.ShardData, got {type(data).__name__}")
        self.config = config
        self.data = data
        self.side = None if side is None else np.ascontiguousarray(side, dtype=np.float32)
        self.trainable = data.trainable
        self.widths = (int(parts[0].weight.shape[0]), int(parts[-1].weight.shape[1]))

    # ---------------------------------------------------------------- argument checks, shared by every backend
    def checked_rows(self, rows: Any) -> np.ndarray:
        return index_array(rows, self.data.samples.shape[0], "rows", allow_empty=False)

    def checked_block(self, block: Any, rows: np.ndarray, width: int, what: str) -> np.ndarray:
        """A reduced block: float32 (len(rows), width), finite."""
        block = np.asarray(block)
        if block.shape != (len(rows), width):
            raise ValueError(f"{what} must have shape {(len(rows), width)}, got {block.shape}")
        if not np.all(np.isfinite(block)):
            raise ValueError(f"{what} has NaN or infinite values")
        return np.ascontiguousarray(block, dtype=np.float32)

    def checked_step(self, epoch: Any, lr: Any) -> tuple[int, float]:
        return checked_epoch(epoch), checked_lr(lr, self.config.weight_decay)

    @staticmethod
    def begun(step: dict | None, rows: np.ndarray, stage: str, output_mark: str) -> dict:
        """The state ``step`` of the step begun on ``rows``: ``stage`` ``"output"`` needs :meth:`input_partial` on
        them first, ``"finish"`` also :meth:`output_partial` (which leaves ``output_mark`` in the state)."""
        if step is None or not np.array_equal(step["rows"], rows) or (stage == "finish" and output_mark not in step):
            before = "input_partial" if stage == "output" else "input_partial and output_partial"
            raise ValueError(f"call {before} on the same rows first (one step at a time)")
        return step

    def side_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """The side information of the mini-batch's samples (``None`` without)."""
        return None if self.side is None else self.side[rows]

    # ---------------------------------------------------------------- the split step
    @abstractmethod
    def input_partial(self, rows: np.ndarray, epoch: int) -> np.ndarray:
        """This shard's first-layer pre-activations of mini-batch ``rows`` from its visible inputs (B x H₁)."""

    @abstractmethod
    def output_partial(self, rows: np.ndarray, epoch: int, hidden_sum: np.ndarray, lr: float
                       ) -> tuple[float, np.ndarray]:
        """Given the shards' summed :meth:`input_partial` blocks: ``(loss of this shard's entries, this shard's
        part of ∂loss/∂(last code))``; the shard's output rows are updated."""

    @abstractmethod
    def finish_step(self, rows: np.ndarray, code_grad_sum: np.ndarray, lr: float) -> None:
        """Given the shards' summed :meth:`output_partial` gradients: update the replicated layers and this
        shard's first-layer columns.  Ends the step begun by :meth:`input_partial` on the same ``rows``."""

    @abstractmethod
    def get_layers(self) -> list[Layer]:
        """A copy of this shard's part of the network (:func:`split_layers` layout)."""

    @abstractmethod
    def set_layers(self, parts: list[Layer]) -> None:
        """Replace this shard's part (a checkpoint, a restart)."""
