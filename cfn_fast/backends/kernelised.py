"""Kernelised weights (Sparse FC, Muller, Martel & Indiveri 2018), the specification: ``kernel_dim > 0``.

Not in the CFN paper.  Each Linear layer's weight is trained as ``W ⊙ K`` with

    K_ij = max(0, 1 − ‖u_i − v_j‖²)

``u_i`` a learned ``kernel_dim``-vector per *output* unit ``i`` of the layer (``u``: fan_out x d) and ``v_j`` one
per *input* unit ``j`` (``v``: fan_in x d).  Connections whose units drift apart get a zero weight: the kernel
learns a sparse connectivity.  Bias and side weights stay plain.  Every parameter (W, u, v, biases, side
weights) follows the CFN step θ ← θ − lr·(g/B + λ·θ), weight decay included (the CFN paper's rule; Muller et
al. put L2 on W and a separate sparsity penalty on K, and train by L-BFGS).

With ``G = ∂loss/∂(W ⊙ K)`` (what back-propagation through the ordinary network gives), ``A = [K > 0]``
(where K has a gradient) and ``M = G ⊙ W ⊙ A``:

    ∂loss/∂W   = G ⊙ K
    ∂loss/∂u_i = −2 Σ_j M_ij (u_i − v_j) = −2 (rowsum(M)_i u_i − (M v)_i)
    ∂loss/∂v_j =  2 Σ_i M_ij (u_i − v_j) =  2 ((Mᵀ u)_j − colsum(M)_j v_j)

Training only: an engine exports the effective weights ``W ⊙ K`` in the canonical layout
(:class:`~cfn_fast.network.Layer`), so a fitted model is an ordinary CFN network.  Loading layers into an engine
(``set_layers``) makes them the network's weights and ends the kernelised parametrisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import Layer

__all__ = ["LayerKernel", "KERNEL_INIT_STD", "init_kernels", "kernel_matrix", "effective_layers", "kernel_backward",
           "KernelSnapshot"]

#: Standard deviation of the unit vectors' initial coordinates (normal, zero mean).  Muller et al. start at 1e-3
#: (every K_ij ≈ 1).  At 0.1 (d = 5) every K_ij starts near 0.9 and none at 0; at 0.3 a third start cut off and the
#: mean K is 0.28, which damps the network as it starts: on the ML-1M validation part an I-CFN of 600 units with
#: kernel_dim 5 scored 0.8481 from 0.1 and 0.8521 from 0.3 (bench/README.md, "Kernelised weights").
KERNEL_INIT_STD = 0.1

#: Salt of the unit vectors' random stream (apart from the weights' init_layers(seed) stream).
_KERNEL_SALT = 0x6B65726E


@dataclass
class LayerKernel:
    """The unit vectors of one layer: ``u`` (fan_out x d) for its output units, ``v`` (fan_in x d) for its inputs."""

    u: np.ndarray
    v: np.ndarray

    def arrays(self) -> list[np.ndarray]:
        return [self.u, self.v]

    def copy(self) -> "LayerKernel":
        return LayerKernel(self.u.copy(), self.v.copy())


@dataclass
class KernelSnapshot:
    """What a kernelised engine's ``snapshot`` holds: the plain parameters W, b, S and the unit vectors."""

    layers: list[Layer]
    kernels: list[LayerKernel]


def init_kernels(layers: list[Layer], dim: int, seed: int) -> list[LayerKernel]:
    """Unit vectors of every layer, coordinates normal(0, :data:`KERNEL_INIT_STD`), from ``seed`` alone (every
    backend starts from the same ones)."""
    rng = np.random.default_rng((int(seed), _KERNEL_SALT))
    out = []
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        out.append(LayerKernel(rng.normal(0.0, KERNEL_INIT_STD, (fan_out, dim)).astype(np.float32),
                               rng.normal(0.0, KERNEL_INIT_STD, (fan_in, dim)).astype(np.float32)))
    return out


def kernel_matrix(kernel: LayerKernel) -> np.ndarray:
    """``K_ij = max(0, 1 − ‖u_i − v_j‖²)`` (fan_out x fan_in, float32), the squares summed dimension by
    dimension in order (as the cpu kernels do)."""
    u, v = kernel.u, kernel.v
    squared = np.zeros((u.shape[0], v.shape[0]), dtype=u.dtype)
    for k in range(u.shape[1]):
        squared += (u[:, k, None] - v[None, :, k]) ** 2
    return np.maximum(np.float32(0.0), np.float32(1.0) - squared)


def effective_layers(layers: list[Layer], kernels: list[LayerKernel]) -> list[Layer]:
    """The network the kernelised parameters compute with: each weight ``W ⊙ K``, biases and side weights as they
    are (copies)."""
    return [Layer(layer.weight * kernel_matrix(kernel), layer.bias.copy(),
                  None if layer.side_weight is None else layer.side_weight.copy())
            for layer, kernel in zip(layers, kernels)]


def kernel_backward(effective_grads: list[Layer], layers: list[Layer], kernels: list[LayerKernel]
                    ) -> tuple[list[Layer], list[LayerKernel]]:
    """The gradients of W (with b, S unchanged) and of u, v from those of the effective weights (module
    docstring)."""
    grads, kernel_grads = [], []
    for grad, layer, kernel in zip(effective_grads, layers, kernels):
        K = kernel_matrix(kernel)
        M = np.where(K > 0, grad.weight * layer.weight, np.float32(0.0))
        u, v = kernel.u, kernel.v
        grads.append(Layer(grad.weight * K, grad.bias, grad.side_weight))
        kernel_grads.append(LayerKernel(-2.0 * (M.sum(axis=1)[:, None] * u - M @ v),
                                        2.0 * (M.T @ u - M.sum(axis=0)[:, None] * v)))
    return grads, kernel_grads
