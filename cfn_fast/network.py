"""The CFN network's parameters: layer shapes and the paper's initialisation.

Every layer ``l`` computes ``h_l = tanh(W_l · h_{l-1} + V_l · side + b_l)`` (paper Sec. 3,
Torch ``Appender``): ``weight`` is ``W_l`` with shape ``(fan_out, fan_in)`` as in the paper,
``side_weight`` is ``V_l`` with shape ``(fan_out, side_dim)`` (``None`` without side
information), ``bias`` is ``b_l``.  This layout is the canonical one every backend
imports and exports; a backend may keep another layout internally.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Layer", "init_layers", "layer_sizes", "copy_layers", "n_parameters", "check_layers", "insert_middle_layers",
           "all_finite", "uniform_float32"]


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
        layers.append(Layer(weight=uniform_float32(rng, bound, (fan_out, fan_in)),
                            bias=uniform_float32(rng, bound, (fan_out,)),
                            side_weight=uniform_float32(rng, bound, (fan_out, side_dim)) if side_dim else None))
    return layers


#: Values drawn per call of :func:`uniform_float32` (512 KiB of float64: the draws stay in cache).
UNIFORM_CHUNK = 1 << 16


def uniform_float32(rng: np.random.Generator, bound: float, shape: tuple[int, ...]) -> np.ndarray:
    """``rng.uniform(-bound, bound, shape).astype(np.float32)``, the same values from the same stream positions
    (one float64 draw per value, in C order), drawn a chunk at a time: no float64 array of the whole shape
    (the big layers' twice their float32 size) is written and read back."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, UNIFORM_CHUNK):
        stop = min(start + UNIFORM_CHUNK, flat.size)
        flat[start:stop] = rng.uniform(-bound, bound, stop - start)
    return out


def copy_layers(layers: list[Layer]) -> list[Layer]:
    return [layer.copy() for layer in layers]


def n_parameters(layers: list[Layer]) -> int:
    return int(sum(a.size for layer in layers for a in layer.arrays()))


def all_finite(values: Any) -> bool:
    """True when no value is NaN or infinite.  Float arrays are checked by their minimum and maximum (NaN
    propagates into both, an infinity is one of them): two reductions, no boolean array of their size."""
    array = np.asarray(values)
    if array.dtype.kind == "f" and array.size:
        return bool(np.isfinite(array.min()) and np.isfinite(array.max()))
    return bool(np.all(np.isfinite(array)))


def check_layers(layers: Any, n_inputs: int, side_dim: int, hidden: Sequence[int] | None = None,
                 what: str = "layers", *, copy: bool | None = True) -> list[Layer]:
    """Float32 copies of ``layers`` after checking that they form a CFN network over ``n_inputs`` inputs,
    with side weights of width ``side_dim`` in every layer (none when 0) and, when given, hidden widths
    ``hidden``: the one network-shape check (the engine API, a warm start, a refit).  Errors name
    ``what[k].field``, the shape expected and the shape given.  ``copy=False``: check only, return ``layers``
    as given (an engine's constructor, whose backend copies them into its own layout).  ``copy=None`` (NumPy's
    "copy if needed"): float32 arrays, the given ones where they already are (for an engine that copies what it
    is given into storage of its own: :attr:`cfn_fast.backends.base.Engine.copies_layers`)."""
    if isinstance(layers, Layer) or not isinstance(layers, Sequence):
        raise TypeError(f"{what} must be a sequence of cfn_fast.network.Layer (e.g. init_layers(...) or "
                        f"model.layers_), got {type(layers).__name__}")
    for k, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{what}[{k}] must be a cfn_fast.network.Layer, got {type(layer).__name__}")
    if hidden is not None and len(layers) != len(hidden) + 1:
        raise ValueError(f"{what} must be a sequence of {len(hidden) + 1} Layer objects for "
                         f"hidden={tuple(hidden)}, got {len(layers)}")
    if len(layers) < 2:
        raise ValueError(f"a CFN network needs at least 2 layers (one hidden), got {len(layers)}")
    widths = None if hidden is None else [*hidden, n_inputs]
    fan_in = n_inputs
    for k, layer in enumerate(layers):
        given = np.shape(layer.weight)
        fan_out = widths[k] if widths is not None else (given[0] if len(given) == 2 else "fan_out")
        expected = {"weight": (fan_out, fan_in), "bias": (fan_out,),
                    "side_weight": (fan_out, side_dim) if side_dim else None}
        for name, shape in expected.items():
            value = getattr(layer, name)
            got = None if value is None else np.shape(value)
            if shape is None and got is not None:
                raise ValueError(f"{what}[{k}].side_weight must be None (no side information given), "
                                 f"got shape {got}")
            if got != shape:
                raise ValueError(f"{what}[{k}].{name} must have shape {shape}, got {got}")
            if value is not None and not all_finite(value):
                raise ValueError(f"{what}[{k}].{name} has NaN or infinite values")
        fan_in = fan_out
    if fan_in != n_inputs:
        raise ValueError(f"the output layer has {fan_in} units; expected {n_inputs} (an autoencoder over the "
                         f"samples' {n_inputs} inputs)")
    if copy is False:
        return list(layers)

    def as_float32(values: Any) -> np.ndarray:
        return np.array(values, dtype=np.float32, copy=copy)
    return [Layer(as_float32(layer.weight), as_float32(layer.bias),
                  None if layer.side_weight is None else as_float32(layer.side_weight)) for layer in layers]


def insert_middle_layers(layers: Sequence[Layer], width: int, seed: int = 0) -> list[Layer]:
    """A 2k-layer stack from a (2k-2)-layer one: ``[encoders..., new encoder, new decoder, decoders...]`` (the
    authors' layer-wise pre-training: :class:`~cfn_fast.StackedCFN` and a blend's pre-trained member).

    The new pair maps the innermost code (width of the current bottleneck) to ``width`` and back, with
    Torch's default initialisation and the same side-information width as the existing layers."""
    layers = list(layers)
    if len(layers) < 2 or len(layers) % 2:
        raise ValueError(f"need an autoencoder's layers (an even number >= 2), got {len(layers)}")
    half = len(layers) // 2
    code_width = layers[half - 1].weight.shape[0]
    side_dim = 0 if layers[0].side_weight is None else layers[0].side_weight.shape[1]
    new_encoder, new_decoder = init_layers(code_width, (int(width),), side_dim, seed)
    return [*(layer.copy() for layer in layers[:half]), new_encoder, new_decoder,
            *(layer.copy() for layer in layers[half:])]
