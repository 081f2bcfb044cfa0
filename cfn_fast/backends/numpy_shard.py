"""The split step on NumPy: the specification of sharded training (:mod:`cfn_fast.backends.shard_base`).

Written with the reference engine's own pieces (:mod:`cfn_fast.backends.numpy_backend`), dense over the shard's
inputs, so that the sum of the shards' work is the unsharded step: the same masking noise, the same loss, the
same gradients, the same update θ ← θ·(1 − lr·λ) − (lr/B)·g of every parameter.  Only the order of the
first layer's sum differs (by shard, then within the shard), hence float rounding.
"""
from __future__ import annotations

import numpy as np

from ..corruption import epoch_key, hidden_entries, mask_threshold
from ..network import Layer, copy_layers
from .numpy_backend import decay_and_step, reconstruction_loss, sgd_factors
from .shard_base import ShardData, ShardEngine, replicated_codes
from .validation import checked_epoch

__all__ = ["NumpyShardEngine", "shard_batch"]


def shard_batch(data: ShardData, rows: np.ndarray, key: int, threshold: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(X, known, hidden)`` of a mini-batch over this shard's inputs, the hidden flags exactly those of
    the unsharded batch: drawn over each sample's *whole* row (:func:`~cfn_fast.corruption.hidden_entries` on the
    global row pointer, the swap rule included), then the shard's entries picked out by their positions."""
    batch = data.samples[rows]
    X = batch.toarray()
    known = np.zeros(X.shape, dtype=bool)
    hidden = np.zeros(X.shape, dtype=bool)
    row_of = np.repeat(np.arange(len(rows)), np.diff(batch.indptr))
    known[row_of, batch.indices] = True
    flags = hidden_entries(data.row_starts, rows, key, threshold)
    counts = data.row_starts[rows + 1] - data.row_starts[rows]
    batch_start = np.r_[0, np.cumsum(counts)[:-1]]                 # where each row's flags begin in `flags`
    local = data.samples.indptr
    entries = np.concatenate([np.arange(local[r], local[r + 1]) for r in rows]) if len(rows) else np.zeros(0, int)
    at = batch_start[row_of] + data.positions[entries] - data.row_starts[rows][row_of]
    hidden[row_of, batch.indices] = flags[at]
    return X, known, hidden


class NumpyShardEngine(ShardEngine):
    """The reference split step: dense mini-batch algebra over the shard's inputs."""

    name = "numpy"

    def __init__(self, parts: list[Layer], config, data: ShardData, side: np.ndarray | None) -> None:
        super().__init__(parts, config, data, side)
        self.layers = copy_layers(parts)
        self.threshold = mask_threshold(config.mask_ratio)
        self._step: dict | None = None      # what one step's three calls pass each other

    def input_partial(self, rows, epoch: int) -> np.ndarray:
        rows, epoch = self.checked_rows(rows), checked_epoch(epoch)
        X, known, hidden = shard_batch(self.data, rows, epoch_key(self.config.seed, epoch), self.threshold)
        visible = np.where(known & ~hidden, X, np.float32(0.0))
        self._step = {"rows": rows, "epoch": epoch, "X": X, "known": known, "hidden": hidden, "visible": visible}
        return visible @ self.layers[0].weight.T

    def output_partial(self, rows, epoch: int, hidden_sum, lr: float) -> tuple[float, np.ndarray]:
        rows = self.checked_rows(rows)
        epoch, lr = self.checked_step(epoch, lr)
        step = self.begun(self._step, rows, "output", "codes")
        hidden_sum = self.checked_block(hidden_sum, rows, self.widths[0], "hidden_sum")
        side = self.side_rows(rows)
        first, *middle, out = self.layers
        codes = replicated_codes(hidden_sum, first.bias, first.side_weight, middle, side)
        z = codes[-1] @ out.weight.T + out.bias
        if side is not None:
            z += side @ out.side_weight.T
        output = np.tanh(z)
        loss, output_grad = reconstruction_loss(output, step["X"], step["known"], step["hidden"],
                                                self.config.alpha, self.config.beta)
        delta = output_grad * (1.0 - output ** 2)
        code_grad = delta @ out.weight               # before the output rows move
        grad = Layer(delta.T @ codes[-1], delta.sum(axis=0), None if side is None else delta.T @ side)
        decay_and_step(out.arrays(), grad.arrays(), *sgd_factors(lr, len(rows), self.config.weight_decay))
        step["codes"] = codes
        return loss, code_grad

    def finish_step(self, rows, code_grad_sum, lr: float) -> None:
        rows = self.checked_rows(rows)
        step = self.begun(self._step, rows, "finish", "codes")
        lr = self.checked_step(step["epoch"], lr)[1]
        code_grad_sum = self.checked_block(code_grad_sum, rows, self.widths[1], "code_grad_sum")
        side = self.side_rows(rows)
        inputs = [step["visible"], *step["codes"]]             # h_0 .. h_{L-1}
        delta = code_grad_sum * (1.0 - inputs[-1] ** 2)
        grads: list[Layer] = []
        for index in range(len(self.layers) - 2, -1, -1):     # numpy_backend.backward below the output layer
            layer, h_prev = self.layers[index], inputs[index]
            grads.append(Layer(delta.T @ h_prev, delta.sum(axis=0), None if side is None else delta.T @ side))
            if index > 0:
                delta = (delta @ layer.weight) * (1.0 - h_prev ** 2)
        grads.reverse()
        shrink, factor = sgd_factors(lr, len(rows), self.config.weight_decay)
        decay_and_step((p for layer in self.layers[:-1] for p in layer.arrays()),
                       (g for grad in grads for g in grad.arrays()), shrink, factor)
        self._step = None

    def get_layers(self) -> list[Layer]:
        return copy_layers(self.layers)

    def set_layers(self, parts: list[Layer]) -> None:
        self.layers = copy_layers(parts)
        self._step = None
