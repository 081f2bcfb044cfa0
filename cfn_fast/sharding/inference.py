"""Inference on a network kept sharded: the NumPy reference engine's maths, one shard's part at a time.

A model whose network does not fit one process keeps it as :class:`~cfn_fast.sharding.parts.ShardedLayers`.
:class:`PartsEngine` predicts, encodes and decodes on it without ever gathering it, computing exactly what
:class:`~cfn_fast.backends.numpy_backend.NumpyEngine` computes on the gathered network (within float32 rounding):

* the first layer's pre-activations are summed over the shards **in shard order**, each shard adding
  ``inputs[:, lo:hi] @ W₁[:, lo:hi]ᵀ`` (:func:`~cfn_fast.backends.fixed_shape.sparse_rows_product`, as the
  reference does for the whole row); a shard none of whose inputs is given adds nothing and is not loaded;
* the first layer's bias and side term and every middle layer come from the last shard's part (they are
  replicated: every part holds the same copy), so the codes are the reference's ``encode``;
* each output column is computed by the shard that owns it (:meth:`PartLayout.shard_of`), with the reference's
  products (:func:`~cfn_fast.backends.fixed_shape.row_block_product` for every output,
  :func:`~cfn_fast.backends.fixed_shape.column_block_product` for chosen ones, one dot product per entry in
  ``predict_entries``); only the shards owning a requested column are loaded.

At most one part is in memory at a time (plus the running sums, which have the size of the result).  Training a
kept-sharded network is the sharded trainer's job (``CFN(shards=N)``), so the training methods refuse.
"""
from __future__ import annotations

from typing import Iterator, NoReturn

import numpy as np
import scipy.sparse as sp

from ..backends.base import Engine, Ranges, TrainConfig, check_training_inputs, max_abs
from ..backends.fixed_shape import column_block_product, row_block_product, sparse_rows_product
from ..backends.public_calls import NetworkShape
from ..network import Layer
from .parts import ShardedLayers

__all__ = ["PartsEngine"]


def _transposed(array: np.ndarray) -> np.ndarray:
    """``array.T`` C-contiguous (what the reference's inference products take)."""
    return np.ascontiguousarray(array.T)


class PartsEngine(Engine):
    """The inference engine of a network kept sharded (:class:`ShardedLayers`): ``predict_entries``, ``encode``
    and ``decode`` as the NumPy reference computes them on the gathered network, loading one part at a time.

    ``get_layers()`` returns the :class:`ShardedLayers` itself, not a list of layers (indexing it raises
    :class:`~cfn_fast.sharding.parts.NotGathered`).  The training methods raise ``ValueError``: a kept-sharded
    network trains through ``CFN(shards=N)`` (``fit`` / ``partial_fit``)."""

    name = "sharded-inference"

    def __init__(self, layers: ShardedLayers, config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None) -> None:
        if not isinstance(layers, ShardedLayers):
            raise TypeError(f"layers must be a cfn_fast.sharding.parts.ShardedLayers (a network kept sharded), got "
                            f"{type(layers).__name__}; an ordinary network runs on make_engine('numpy', ...)")
        check_training_inputs(samples, side)      # before its shape is read
        layout = layers.layout
        # the argument checks of the public methods need the network's shape only, never its arrays
        shape = NetworkShape(int(samples.shape[0]), layout.n_inputs, layout.hidden, layout.side_dim)
        super().__init__(shape, config, samples, side)
        self.layers = layers

    # ---------------------------------------------------------------- parameters
    def get_layers(self) -> ShardedLayers:  # type: ignore[override]
        """The :class:`ShardedLayers` itself (not a list: the whole network is never in one place)."""
        return self.layers

    def max_abs_param(self) -> float:
        """``max |θ|`` over every part, loaded one at a time; NaN (at once) when a part holds a NaN or infinity."""
        largest = 0.0
        for rank in range(self.layers.shards):
            peak = max_abs(array for layer in self.layers.part(rank) for array in layer.arrays())
            if not np.isfinite(peak):
                return float("nan")
            largest = max(largest, peak)
        return largest

    # ---------------------------------------------------------------- training: not here
    def _refuse_training(self, what: str) -> NoReturn:
        raise ValueError(f"{what} is not available on the {self.name!r} engine: a network kept sharded trains "
                         f"through CFN(shards=N) (fit / partial_fit), shard by shard; this engine only predicts, "
                         f"encodes and decodes")

    def train_epoch(self, epoch: int, lr: float) -> float:
        self._refuse_training("train_epoch")

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None) -> NoReturn:
        self._refuse_training("profiled_epoch")

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        self._refuse_training("sgd_step")

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        self._refuse_training("gradients")

    def set_layers(self, layers: list[Layer]) -> None:
        self._refuse_training("set_layers")

    def restore(self, snapshot: object) -> None:
        self._refuse_training("restore")

    # ---------------------------------------------------------------- inference
    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        """The last hidden layer's activations of every row of ``inputs``: the reference's ``encode``."""
        return self._codes(sp.csr_matrix(inputs, dtype=np.float32), side)

    # Each part is loaded inside one helper call and dropped when it returns, so no two parts are ever alive
    # together (a loop variable holding the last one would keep it while the next is read).
    def _codes(self, inputs: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        side = None if side is None else np.ascontiguousarray(side, dtype=np.float32)
        last = self.layers.shards - 1
        z = np.zeros((inputs.shape[0], self.layers.hidden[0]), dtype=np.float32)
        for rank, (lo, hi) in enumerate(self.layers.layout.bounds[:-1]):
            block = inputs[:, lo:hi]
            if block.nnz:                           # a shard with none of these inputs adds nothing
                z += self._input_partial(rank, block)
        lo, hi = self.layers.layout.bounds[last]
        return self._encoder(last, z, inputs[:, lo:hi], side)

    def _input_partial(self, rank: int, block: sp.csr_matrix) -> np.ndarray:
        """Shard ``rank``'s first-layer pre-activations from its inputs ``block``."""
        return sparse_rows_product(block, _transposed(self.layers.part(rank)[0].weight))

    def _encoder(self, rank: int, z: np.ndarray, block: sp.csr_matrix, side: np.ndarray | None) -> np.ndarray:
        """The last shard's first-layer term added to the sum ``z`` of the others, then the replicated layers
        (bias and side term of the first, every middle layer) from its part: the codes."""
        part = self.layers.part(rank)
        if block.nnz:
            z += sparse_rows_product(block, _transposed(part[0].weight))
        h = z
        for index, layer in enumerate(part[:-1]):
            if index:
                h = row_block_product(h, _transposed(layer.weight))
            h += layer.bias
            if side is not None:
                h += row_block_product(side, _transposed(layer.side_weight))
            h = np.tanh(h)
        return np.ascontiguousarray(h, dtype=np.float32)

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        """The output layer on ``codes``: every output, or only columns ``cols``, each from its shard's part."""
        codes = np.ascontiguousarray(codes, dtype=np.float32)
        side = None if side is None else np.ascontiguousarray(side, dtype=np.float32)
        if cols is None:
            out = np.empty((codes.shape[0], self.layers.layout.n_inputs), dtype=np.float32)
            for rank, (lo, hi) in enumerate(self.layers.layout.bounds):
                out[:, lo:hi] = self._all_outputs(rank, codes, side)
            return out
        cols = np.asarray(cols, dtype=np.int64)
        out = np.empty((codes.shape[0], len(cols)), dtype=np.float32)
        for rank, where, local in self._owned(cols):
            out[:, where] = self._some_outputs(rank, codes, side, local)
        return out

    def _all_outputs(self, rank: int, codes: np.ndarray, side: np.ndarray | None) -> np.ndarray:
        layer = self.layers.part(rank)[-1]
        z = row_block_product(codes, _transposed(layer.weight)) + layer.bias
        if side is not None:
            z += row_block_product(side, _transposed(layer.side_weight))
        return np.tanh(z, dtype=np.float32)

    def _some_outputs(self, rank: int, codes: np.ndarray, side: np.ndarray | None, local: np.ndarray) -> np.ndarray:
        layer = self.layers.part(rank)[-1]
        z = column_block_product(codes, layer.weight, local) + layer.bias[local]
        if side is not None:
            z += column_block_product(side, layer.side_weight, local)
        return np.tanh(z, dtype=np.float32)

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The output at ``(rows[k], cols[k])`` for sample ``rows[k]`` fed its whole input row: the reference's
        ``predict_entries``, each entry's dot product with the output row of the shard owning ``cols[k]``."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        result = np.empty(len(rows), dtype=np.float32)
        if len(rows) == 0:
            return result
        needed, local_rows = np.unique(rows, return_inverse=True)
        side = None if side is None else np.asarray(side, dtype=np.float32)
        codes = self._codes(sp.csr_matrix(inputs, dtype=np.float32)[needed], None if side is None else side[needed])
        for rank, where, local in self._owned(cols):
            result[where] = self._entries(rank, codes[local_rows[where]], None if side is None else side[rows[where]],
                                          local)
        return result

    def _entries(self, rank: int, codes: np.ndarray, side: np.ndarray | None, local: np.ndarray) -> np.ndarray:
        """Entry ``k``'s output from ``codes[k]`` (and ``side[k]``) and output ``local[k]`` of shard ``rank``."""
        layer = self.layers.part(rank)[-1]
        z = np.einsum("ij,ij->i", codes, layer.weight[local]) + layer.bias[local]
        if side is not None:
            z += np.einsum("ij,ij->i", side, layer.side_weight[local])
        return np.tanh(z).astype(np.float32)

    def _owned(self, cols: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(rank, positions in cols, columns local to the shard)`` of each shard owning some of ``cols``."""
        layout = self.layers.layout
        owner = layout.shard_of(cols)
        for rank in np.unique(owner):
            where = np.flatnonzero(owner == rank)
            yield int(rank), where, cols[where] - layout.bounds[rank][0]
