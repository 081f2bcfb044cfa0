"""The CFN network's parameters: layer shapes and the paper's initialisation.

Every layer ``l`` computes ``h_l = tanh(W_l · h_{l-1} + V_l · side + b_l)`` (paper Sec. 3,
Torch ``Appender``): ``weight`` is ``W_l`` with shape ``(fan_out, fan_in)`` as in the paper,
``side_weight`` is ``V_l`` with shape ``(fan_out, side_dim)`` (``None`` without side
information), ``bias`` is ``b_l``.  This layout is the canonical one every backend
imports and exports; a backend may keep another layout internally.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Layer", "init_layers", "layer_sizes", "copy_layers", "n_parameters"]


@dataclass
class Layer:
    weight: np.ndarray                 # (fan_out, fan_in) float32
    bias: np.ndarray                   # (fan_out,) float32
    side_weight: np.ndarray | None = None  # (fan_out, side_dim) float32

    def arrays(self) -> list[np.ndarray]:
        """The layer's parameter arrays in a fixed order (weight, bias[, side_weight])."""
        return [self.weight, self.bias] + ([self.side_weight] if self.side_weight is not None else [])

    def copy(self) -> "Layer":
        return Layer(self.weight.copy(), self.bias.copy(),
                     None if self.side_weight is None else self.side_weight.copy())


def layer_sizes(n_inputs: int, hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each Linear layer: inputs -> hidden... -> inputs (autoencoder)."""
    widths = [n_inputs, *hidden, n_inputs]
    return list(zip(widths[:-1], widths[1:]))


def init_layers(n_inputs: int, hidden: tuple[int, ...], side_dim: int = 0, seed: int = 0) -> list[Layer]:
    """Torch's default Linear initialisation: weights and biases uniform in ±1/√fan_in.

    With side information the Linear layer sees ``fan_in + side_dim`` inputs (the side
    vector is concatenated to its input), so that is the fan-in used for the bound.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in layer_sizes(n_inputs, hidden):
        bound = 1.0 / np.sqrt(fan_in + side_dim)

        def uniform(*shape: int) -> np.ndarray:
            return rng.uniform(-bound, bound, shape).astype(np.float32)

        layers.append(Layer(weight=uniform(fan_out, fan_in), bias=uniform(fan_out),
                            side_weight=uniform(fan_out, side_dim) if side_dim else None))
    return layers


def copy_layers(layers: list[Layer]) -> list[Layer]:
    return [layer.copy() for layer in layers]


def n_parameters(layers: list[Layer]) -> int:
    return int(sum(a.size for layer in layers for a in layer.arrays()))
