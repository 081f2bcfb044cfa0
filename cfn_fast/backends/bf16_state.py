"""bfloat16 weight storage in the NumPy reference engine (``TrainConfig(dtype="bfloat16")``): the
rules of :mod:`cfn_fast.backends.bfloat16` written out as one SGD step, the specification the other engines follow.

The four per-input arrays are held as bfloat16 bits (``uint16``) in the layout the rounding hash numbers
(:data:`~cfn_fast.backends.bfloat16.ARRAYS`), times ONE float64 decay scale ``s`` shared by the four:

    input_weight         n_inputs x H_0     ``layers[0].weight.T`` (row r: input r)
    output_weight        n_out x H_L        ``layers[-1].weight``
    output_bias          n_out              ``layers[-1].bias``
    output_side_weight   n_out x side_dim   ``layers[-1].side_weight`` (with side information)

One step on the mini-batch ``rows`` of ``epoch``, with ``shrink = float32(1 - lr·λ)`` and ``step =
float32(lr / B)`` as in :func:`~cfn_fast.backends.numpy_backend.sgd_update`:

    s'   = s · float64(shrink)                                  weight decay, exact whatever the step
    u    = float32(−float64(step) / s')
    v    = to_float32(bits) + u · g                             float32, g the gradient in the stored layout
    bits = round_stochastic(v, array_seed(epoch_key(seed, epoch), rows[0], ARRAYS[name]))
    if s' < 1e-10:  bits = round_nearest(float32(float64(to_float32(bits)) · s')),  s' = 1

A row no sample of the batch touches has ``g == 0`` and keeps its bits.  The dense parameters (the input
bias and side weight, hidden-to-hidden layers) stay float32 and take the plain update.  The forward and
backward passes use ``to_float32(bits) · float32(s)``; :meth:`Bf16Weights.exported` (``get_layers``) is
``float32(float64(to_float32(bits)) · s)``; loading float32 parameters rounds to nearest even with ``s = 1``.
"""
from __future__ import annotations

import numpy as np

from ..network import Layer
from .bfloat16 import ARRAYS, array_seed, round_nearest, round_stochastic, to_float32

__all__ = ["FOLD_BELOW", "Bf16Weights", "stored_arrays", "dense_arrays", "with_values"]

#: The decay scale is folded into the bits before it gets smaller than this.
FOLD_BELOW = 1e-10


def stored_arrays(layers: list[Layer]) -> dict[str, np.ndarray]:
    """The per-input arrays of canonical ``layers`` in the stored layout (views), by :data:`ARRAYS` name."""
    out = {"input_weight": layers[0].weight.T, "output_weight": layers[-1].weight, "output_bias": layers[-1].bias}
    if layers[-1].side_weight is not None:
        out["output_side_weight"] = layers[-1].side_weight
    return out


def dense_arrays(layers: list[Layer]) -> list[np.ndarray]:
    """The parameters that stay float32: the input layer's bias and side weight, the hidden-to-hidden layers."""
    first = [layers[0].bias] + ([] if layers[0].side_weight is None else [layers[0].side_weight])
    return first + [array for layer in layers[1:-1] for array in layer.arrays()]


class Bf16Weights:
    """The bfloat16 bits of the per-input arrays and their shared float64 decay scale."""

    def __init__(self, bits: dict[str, np.ndarray], scale: float = 1.0) -> None:
        self.bits = bits
        self.scale = float(scale)

    @classmethod
    def load(cls, layers: list[Layer]) -> "Bf16Weights":
        """float32 parameters rounded to nearest even, scale 1 (``set_layers``, the engine's constructor)."""
        return cls({name: round_nearest(array) for name, array in stored_arrays(layers).items()})

    def copy(self) -> "Bf16Weights":
        return Bf16Weights({name: bits.copy() for name, bits in self.bits.items()}, self.scale)

    def training_values(self) -> dict[str, np.ndarray]:
        """The float32 weights the forward and backward passes use: ``to_float32(bits) · float32(scale)``."""
        scale = np.float32(self.scale)
        return {name: to_float32(bits) * scale for name, bits in self.bits.items()}

    def exported(self) -> dict[str, np.ndarray]:
        """The float32 parameters ``get_layers`` reports: ``float32(float64(to_float32(bits)) · scale)``."""
        return {name: (to_float32(bits).astype(np.float64) * self.scale).astype(np.float32)
                for name, bits in self.bits.items()}

    def update(self, grads: list[Layer], shrink: np.float32, step: np.float32, key: int, first_row: int) -> None:
        """One step of the per-input arrays (module docstring); ``grads`` in the canonical layout."""
        scale = self.scale * float(shrink)
        move = np.float32(-float(step) / scale)
        for name, g in stored_arrays(grads).items():
            moved = to_float32(self.bits[name]) + move * g
            self.bits[name] = round_stochastic(moved, array_seed(key, first_row, ARRAYS[name]))
        self.scale = scale
        if scale < FOLD_BELOW:
            self.bits = {name: round_nearest((to_float32(bits).astype(np.float64) * scale).astype(np.float32))
                         for name, bits in self.bits.items()}
            self.scale = 1.0


def with_values(layers: list[Layer], values: dict[str, np.ndarray]) -> list[Layer]:
    """New layer objects: the arrays of ``layers`` (shared, not copied) with the per-input arrays replaced by
    ``values`` (stored layout, float32)."""
    out = [Layer(layer.weight, layer.bias, layer.side_weight) for layer in layers]
    out[0].weight = np.ascontiguousarray(values["input_weight"].T)
    out[-1].weight = values["output_weight"]
    out[-1].bias = values["output_bias"]
    if "output_side_weight" in values:
        out[-1].side_weight = values["output_side_weight"]
    return out
