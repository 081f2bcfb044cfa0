"""The NumPy reference engine: the specification of CFN training, written as the paper's equations.

One mini-batch of B samples, dense over the N inputs:

    X        the centred unit ratings, 0 where unknown          (B x N)
    K        known entries;  H ⊂ K the hidden ones (corruption) (B x N)
    h_0      = X ⊙ (K ∧ ¬H)                                     corrupted input
    h_l      = tanh(h̃_{l-1} W_lᵀ + S V_lᵀ + b_l)                side info S enters every layer
    h̃_l      = h_l ⊙ D_l  (hidden l < L; D_l = 1 without dropout)  dropout: D_l ∈ {0, 1/(1−p)} (corruption)
    Ŷ        = h_L
    loss     = α Σ_{H} (Ŷ − X)² + β Σ_{K∧¬H} (Ŷ − X)²           unknown entries give no error
    θ        ← θ − lr_t (∂loss/∂θ / B + λ θ)                    every parameter, every step

Readable before fast; the Cython and CUDA engines are tested against it.  With ``config.dtype ==
"bfloat16"`` the per-input arrays are stored as bfloat16 times a shared decay scale and updated by
:func:`bf16_sgd_update` (the specification of :mod:`cfn_fast.backends.bfloat16`).
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from ..corruption import (
    dropout_key,
    dropout_multipliers,
    dropout_scale,
    dropout_threshold,
    epoch_key,
    hidden_entries,
    mask_threshold,
)
from ..network import Layer, copy_layers
from ..settings import DTYPES
from .base import Engine, PhaseTiming, Ranges, TrainConfig, epoch_order
from .bf16_state import Bf16Weights, dense_arrays, with_values
from .fixed_shape import column_block_product, row_block_product, sparse_rows_product
from .kernelised import KernelSnapshot, LayerKernel, effective_layers, init_kernels, kernel_backward

__all__ = ["NumpyEngine", "corrupted_batch", "forward", "reconstruction_loss", "backward", "sgd_factors",
           "decay_and_step", "sgd_update", "bf16_sgd_update", "kernelised_sgd_update"]


# ----------------------------------------------------------------------------- the paper's pieces
def corrupted_batch(samples: sp.csr_matrix, rows: np.ndarray, key: int, threshold: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(X, known, hidden)`` of a mini-batch; ``hidden`` from :func:`hidden_entries`."""
    batch = samples[rows]
    n = len(rows)
    X = batch.toarray()
    known = np.zeros(X.shape, dtype=bool)
    hidden = np.zeros(X.shape, dtype=bool)
    row_of = np.repeat(np.arange(n), np.diff(batch.indptr))
    known[row_of, batch.indices] = True
    hidden[row_of, batch.indices] = hidden_entries(samples.indptr, rows, key, threshold)
    return X, known, hidden


def forward(layers: list[Layer], inputs: np.ndarray, side: np.ndarray | None,
            dropout: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Activations ``[h_0, h_1, ..., h_L]``; side information is appended to every layer's input.

    ``dropout``: one multiplier array per hidden layer (:func:`~cfn_fast.corruption.dropout_multipliers`);
    layer ``l + 1`` then takes ``h_l ⊙ dropout[l - 1]``.  The activations returned are the tanh outputs."""
    activations = [inputs]
    for index, layer in enumerate(layers):
        h = activations[-1] if dropout is None or index == 0 else activations[-1] * dropout[index - 1]
        z = h @ layer.weight.T + layer.bias
        if side is not None:
            z += side @ layer.side_weight.T
        activations.append(np.tanh(z))
    return activations


def reconstruction_loss(output: np.ndarray, target: np.ndarray, known: np.ndarray, hidden: np.ndarray,
                        alpha: float, beta: float) -> tuple[float, np.ndarray]:
    """The CFN loss and its gradient with respect to the output.

    Weight α on hidden known entries (the denoising term), β on visible known entries
    (the reconstruction term), 0 on unknown entries.
    """
    weight = np.where(hidden, np.float32(alpha), np.where(known, np.float32(beta), np.float32(0.0)))
    residual = output - target
    loss = float(np.sum(weight.astype(np.float64) * residual.astype(np.float64) ** 2))
    return loss, (2.0 * weight * residual).astype(output.dtype)


def backward(layers: list[Layer], activations: list[np.ndarray], side: np.ndarray | None,
             output_grad: np.ndarray, dropout: list[np.ndarray] | None = None) -> list[Layer]:
    """Back-propagation through the tanh layers (and the dropout multipliers :func:`forward` took); summed
    over the batch."""
    grads: list[Layer] = []
    delta = output_grad * (1.0 - activations[-1] ** 2)          # ∂loss/∂z_L
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        h_prev = activations[index]
        taken = h_prev if dropout is None or index == 0 else h_prev * dropout[index - 1]
        grads.append(Layer(weight=delta.T @ taken, bias=delta.sum(axis=0),
                           side_weight=None if side is None else delta.T @ side))
        if index > 0:
            dh = delta @ layer.weight
            if dropout is not None:
                dh = dh * dropout[index - 1]
            delta = dh * (1.0 - h_prev ** 2)
    return grads[::-1]


def sgd_factors(lr: float, batch_size: int, weight_decay: float) -> tuple[np.float32, np.float32]:
    """The float32 factors of one step: ``shrink = 1 − lr·λ`` and ``step = lr / B``."""
    return np.float32(1.0 - lr * weight_decay), np.float32(lr / batch_size)


def decay_and_step(params: Iterable[np.ndarray], grads: Iterable[np.ndarray], shrink: np.float32,
                   step: np.float32) -> None:
    """θ ← θ·shrink − step·g for each parameter, in place."""
    for param, g in zip(params, grads):
        param *= shrink
        param -= step * g


def sgd_update(layers: list[Layer], grads: list[Layer], lr: float, batch_size: int, weight_decay: float) -> None:
    """Plain SGD with weight decay on every parameter: θ ← θ − lr·(g/B + λ·θ), in place."""
    decay_and_step((p for layer in layers for p in layer.arrays()), (g for grad in grads for g in grad.arrays()),
                   *sgd_factors(lr, batch_size, weight_decay))


def bf16_sgd_update(layers: list[Layer], grads: list[Layer], state: Bf16Weights, lr: float, batch_size: int,
                    weight_decay: float, seed: int, epoch: int, first_row: int) -> list[Layer]:
    """The SGD step of a bfloat16 network: the dense parameters of ``layers`` in place exactly as
    :func:`sgd_update`, the per-input arrays in ``state`` (:meth:`Bf16Weights.update
    <cfn_fast.backends.bf16_state.Bf16Weights.update>`); returns the float32 layers the next step computes with."""
    shrink, step = sgd_factors(lr, batch_size, weight_decay)
    decay_and_step(dense_arrays(layers), dense_arrays(grads), shrink, step)
    state.update(grads, shrink, step, epoch_key(seed, epoch), first_row)
    return with_values(layers, state.training_values())


def kernelised_sgd_update(layers: list[Layer], kernels: list[LayerKernel], grads: list[Layer],
                          kernel_grads: list[LayerKernel], lr: float, batch_size: int, weight_decay: float) -> None:
    """The step of a kernelised network (:mod:`~cfn_fast.backends.kernelised`): :func:`sgd_update` of W, b, S and
    the same step of the unit vectors u, v, in place."""
    sgd_update(layers, grads, lr, batch_size, weight_decay)
    decay_and_step((p for kernel in kernels for p in kernel.arrays()),
                   (g for grad in kernel_grads for g in grad.arrays()), *sgd_factors(lr, batch_size, weight_decay))


# ----------------------------------------------------------------------------- the engine
class NumpyEngine(Engine):
    """Dense mini-batch implementation of CFN training (the reference).

    With ``config.kernel_dim > 0`` it holds the kernelised parameters (``_raw``: W, b, S; ``_kernels``: u, v per
    layer) and ``layers`` their effective network, which every forward pass and export reads."""

    name = "numpy"
    phase_timer = "time.monotonic around the reference's step functions"
    dtypes = DTYPES
    trains_dropout = True
    kernelised = True
    copies_layers = True       # _load keeps copies of them
    #: the phases of :meth:`profiled_epoch`: each step function of the paper's pieces
    PHASES = {"corrupted_batch": "batch_setup", "forward": "forward", "reconstruction_loss": "loss",
              "backward": "backward", "sgd_update": "update", "bf16_sgd_update": "update",
              "kernel_backward": "backward", "kernelised_sgd_update": "update"}

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None) -> None:
        super().__init__(layers, config, samples, side)
        self._load(layers)
        if config.kernel_dim:
            self._raw: list[Layer] | None = copy_layers(layers)
            self._kernels: list[LayerKernel] | None = init_kernels(self._raw, config.kernel_dim, config.seed)
            self.layers = effective_layers(self._raw, self._kernels)
        self.threshold = mask_threshold(config.mask_ratio)
        self.dropout_threshold = dropout_threshold(config.dropout)
        self._timings: list[PhaseTiming] | None = None     # set while profiled_epoch runs
        self._ranges: Ranges | None = None
        self._batch = -1
        self._transposed: list[tuple[np.ndarray, np.ndarray | None]] | None = None  # inference copies

    def _load(self, layers: list[Layer]) -> None:
        """Hold a copy of ``layers``; in bfloat16, the per-input arrays rounded to nearest (scale 1), and
        ``self.layers`` the float32 values the steps compute with."""
        self._transposed = None
        self.layers = copy_layers(layers)
        self._raw, self._kernels = None, None      # loaded layers are the weights: no kernel any more
        self._bf16: Bf16Weights | None = None
        if self.config.dtype == "bfloat16":
            self._bf16 = Bf16Weights.load(self.layers)
            self.layers = with_values(self.layers, self._bf16.training_values())

    def _call(self, fn, *args):
        """``fn(*args)``, timed as its phase while :meth:`profiled_epoch` runs."""
        if self._timings is None:
            return fn(*args)
        name = self.PHASES[fn.__name__]
        if name == "batch_setup":
            self._batch += 1
        if self._ranges is not None:
            self._ranges.push(name)
        try:
            start = time.monotonic()
            result = fn(*args)
            self._timings.append((name, start, time.monotonic() - start, self._batch))
        finally:
            if self._ranges is not None:
                self._ranges.pop()
        return result

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None
                       ) -> tuple[float, list[PhaseTiming]]:
        self._timings, self._ranges, self._batch = [], ranges, -1
        try:
            loss = self.train_epoch(epoch, lr)
            return loss, self._timings
        finally:
            self._timings, self._ranges = None, None

    def _side(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.side is None else self.side[rows]

    def _dropout(self, rows: np.ndarray, epoch: int) -> list[np.ndarray] | None:
        """The batch's dropout multipliers, or None without dropout (then exactly the paper's step)."""
        if self.config.dropout == 0:
            return None
        widths = tuple(layer.weight.shape[0] for layer in self.layers[:-1])
        return dropout_multipliers(dropout_key(self.config.seed, epoch), np.asarray(rows), widths,
                                   self.dropout_threshold, dropout_scale(self.config.dropout))

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        loss, grads = self._effective_gradients(rows, epoch)
        if self._kernels is not None:
            grads = self._call(kernel_backward, grads, self._raw, self._kernels)[0]
        return loss, grads

    def kernel_gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer], list[LayerKernel]]:
        """Loss and summed gradients of one mini-batch of a kernelised engine: of W, b, S (canonical layout) and
        of each layer's unit vectors u, v."""
        self._require_kernel("kernel_gradients")
        loss, grads = self._effective_gradients(rows, epoch)
        return (loss, *self._call(kernel_backward, grads, self._raw, self._kernels))

    def kernel_state(self) -> tuple[list[Layer], list[LayerKernel]] | None:
        """Copies of a kernelised engine's parameters, ``(W, b, S layers, unit vectors)``; None when the engine
        trains its layers' weights directly (``kernel_dim=0``, or layers loaded since)."""
        if self._kernels is None:
            return None
        return copy_layers(self._raw), [kernel.copy() for kernel in self._kernels]

    def _require_kernel(self, what: str) -> None:
        if self._kernels is None:
            raise ValueError(f"{what} needs a kernelised engine (config.kernel_dim > 0, no layers loaded since)")

    def _effective_gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        """Loss and gradients with respect to the weights the network computes with (``layers``)."""
        cfg = self.config
        X, known, hidden = self._call(corrupted_batch, self.samples, rows, epoch_key(cfg.seed, epoch),
                                      self.threshold)
        side = self._side(rows)
        dropout = self._dropout(rows, epoch)
        activations = self._call(forward, self.layers, np.where(known & ~hidden, X, np.float32(0.0)), side, dropout)
        loss, output_grad = self._call(reconstruction_loss, activations[-1], X, known, hidden, cfg.alpha, cfg.beta)
        return loss, self._call(backward, self.layers, activations, side, output_grad, dropout)

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        self._transposed = None
        cfg = self.config
        if self._kernels is not None:
            loss, grads, kernel_grads = self.kernel_gradients(rows, epoch)
            self._call(kernelised_sgd_update, self._raw, self._kernels, grads, kernel_grads, lr, len(rows),
                       cfg.weight_decay)
            self.layers = effective_layers(self._raw, self._kernels)
            return loss
        loss, grads = self.gradients(rows, epoch)
        if self._bf16 is None:
            self._call(sgd_update, self.layers, grads, lr, len(rows), cfg.weight_decay)
        else:
            self.layers = self._call(bf16_sgd_update, self.layers, grads, self._bf16, lr, len(rows), cfg.weight_decay,
                                     cfg.seed, epoch, int(rows[0]))
        return loss

    def train_epoch(self, epoch: int, lr: float) -> float:
        order = epoch_order(self.config.seed, epoch, self.trainable)
        size = self.config.batch_size
        return sum(self.sgd_step(order[start:start + size], epoch, lr) for start in range(0, len(order), size))

    def get_layers(self) -> list[Layer]:
        if self._bf16 is None:
            return copy_layers(self.layers)
        return with_values(copy_layers(self.layers), self._bf16.exported())

    def set_layers(self, layers: list[Layer]) -> None:
        self._load(layers)

    def snapshot(self) -> object:
        if self._kernels is not None:
            return KernelSnapshot(*self.kernel_state())
        if self._bf16 is None:
            return self.get_layers()
        return copy_layers(self.layers), self._bf16.copy()   # the bits and the scale exactly, not rounded layers

    def restore(self, snapshot: object) -> None:
        if isinstance(snapshot, KernelSnapshot):
            self._transposed = None
            self._raw, self._kernels = copy_layers(snapshot.layers), [k.copy() for k in snapshot.kernels]
            self.layers = effective_layers(self._raw, self._kernels)
            return
        if self._bf16 is None:
            self.set_layers(snapshot)  # type: ignore[arg-type]
            return
        layers, state = snapshot  # type: ignore[misc]
        self._transposed = None
        self.layers, self._bf16 = copy_layers(layers), state.copy()

    def _weights_t(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each layer's weight and side weight transposed, C-contiguous (what the inference products take),
        made once per set of parameters."""
        transposed = self._transposed
        if transposed is None:
            transposed = [(np.ascontiguousarray(layer.weight.T),
                           None if layer.side_weight is None else np.ascontiguousarray(layer.side_weight.T))
                          for layer in self.layers]
            self._transposed = transposed
        return transposed

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None, chunk: int = 512) -> np.ndarray:
        """:func:`forward` of the encoder, each row computed alone (:mod:`~cfn_fast.backends.fixed_shape`):
        a sample's code is the same whatever else is encoded with it.  ``chunk``: rows per pass (memory only)."""
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer (rows per pass), got {chunk!r}")
        width = self.layers[-1].weight.shape[1]
        weights_t = self._weights_t()
        codes = np.empty((inputs.shape[0], width), dtype=np.float32)
        for start in range(0, inputs.shape[0], chunk):
            stop = min(start + chunk, inputs.shape[0])
            part = None if side is None else np.asarray(side[start:stop], dtype=np.float32)
            h = sparse_rows_product(inputs[start:stop], weights_t[0][0])
            for index, layer in enumerate(self.layers[:-1]):
                z = h if index == 0 else row_block_product(h, weights_t[index][0])
                z += layer.bias
                if part is not None:
                    z += row_block_product(part, weights_t[index][1])
                h = np.tanh(z)
            codes[start:stop] = h
        return codes

    def decode(self, codes: np.ndarray, side: np.ndarray | None, cols: np.ndarray | None = None) -> np.ndarray:
        """The output layer on codes, each value computed by calls of one shape whatever the batch."""
        out = self.layers[-1]
        codes = np.asarray(codes, dtype=np.float32)
        with_side = side is not None and out.side_weight is not None
        if cols is None:
            weight_t, side_t = self._weights_t()[-1]
            z = row_block_product(codes, weight_t) + out.bias
            if with_side:
                z += row_block_product(np.asarray(side, dtype=np.float32), side_t)
        else:
            cols = np.asarray(cols, dtype=np.int64)
            z = column_block_product(codes, out.weight, cols) + out.bias[cols]
            if with_side:
                z += column_block_product(np.asarray(side, dtype=np.float32), out.side_weight, cols)
        return np.tanh(z, dtype=np.float32)

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        needed, local = np.unique(rows, return_inverse=True)
        codes = self.encode(inputs[needed], None if side is None else side[needed])
        out = self.layers[-1]
        z = np.einsum("ij,ij->i", codes[local], out.weight[cols]) + out.bias[cols]
        if side is not None:
            z += np.einsum("ij,ij->i", side[rows], out.side_weight[cols])
        return np.tanh(z).astype(np.float32)
