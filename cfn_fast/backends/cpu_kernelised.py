"""The CPU engine for kernelised weights (``kernel_dim > 0``; :mod:`cfn_fast.backends.kernelised`).

A :class:`~cfn_fast.backends.cpu_backend.CpuEngine` whose sparse kernels (``kernels/cpu/cfn_cpu.pyx``) hold the
*effective* network ``W ⊙ K`` and give the gradients with respect to it; the kernelised parameters W, u, v live
here, in the canonical layout.  One SGD step:

1. the sparse kernels' loss and gradients of the effective weights (:meth:`CpuEngine.gradients`);
2. the chain rule to W, u, v: ``cfn_kernel.masked_product`` (dense, OpenMP over rows) gives ∂loss/∂W,
   ``M = G ⊙ W ⊙ [K > 0]`` and, from each row of M while it is in cache, ``M v`` and M's row sums (u's gradient);
   one thin BLAS product ``Mᵀ [u 1]`` gives v's;
3. the step of the small parameters (biases, side weights, u, v: the reference's
   :func:`~cfn_fast.backends.numpy_backend.decay_and_step`), then in one pass per layer
   (``cfn_kernel.effective_weight``) the step of W, the new K and ``W ⊙ K``, loaded into the sparse kernels for the
   next step and for inference.

Steps 2 and 4 are dense over each layer: the unit vectors move at every step, so every connection's K does.
Loading layers (``set_layers``) makes them the weights and ends the kernelised parametrisation: the engine is
then an ordinary :class:`CpuEngine`.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..kernels import cfn_kernel as _kernel_ops
from ..network import Layer
from .base import PhaseTiming, Ranges, TrainConfig, epoch_order, max_abs
from .cpu_backend import CpuEngine
from .kernelised import KernelSnapshot, LayerKernel, init_kernels
from .numpy_backend import decay_and_step, sgd_factors

__all__ = ["KernelisedCpuEngine"]


class KernelisedCpuEngine(CpuEngine):
    """:class:`CpuEngine` training kernelised weights (module docstring)."""

    kernelised = True
    phase_timer = ""

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, threads: int | None = None) -> None:
        super().__init__(layers, config, samples, side, threads)
        self._raw: list[Layer] | None = [Layer(np.array(layer.weight, np.float32, order="C"),
                                               np.array(layer.bias, np.float32),
                                               None if layer.side_weight is None else
                                               np.array(layer.side_weight, np.float32))
                                         for layer in layers]
        self._kernels: list[LayerKernel] | None = init_kernels(self._raw, config.kernel_dim, config.seed)
        self._K = [np.empty_like(layer.weight) for layer in self._raw]
        self._effective = [np.empty_like(layer.weight) for layer in self._raw]
        self._refresh()

    def _refresh(self, grads: list[Layer] | None = None, shrink: float = 1.0, step: float = 0.0) -> None:
        """K and the effective weights from W, u, v, loaded into the sparse kernels; with ``grads`` (of W) the step
        ``W ← W·shrink − step·g`` is taken first, in the same pass."""
        threads = self.threads
        layers = []
        for index, (layer, kernel, K, effective) in enumerate(zip(self._raw, self._kernels, self._K,
                                                                   self._effective)):
            _kernel_ops.effective_weight(layer.weight, kernel.u, np.ascontiguousarray(kernel.v.T), K, effective,
                                         threads, None if grads is None else grads[index].weight, shrink, step)
            layers.append(Layer(effective, layer.bias, layer.side_weight))
        self._state.load(layers)

    # ---------------------------------------------------------------- training
    def _kernel_step_gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer], list[LayerKernel]]:
        loss, grads = super().gradients(rows, epoch)
        threads, kernel_grads = self.threads, []
        for grad, layer, kernel, K in zip(grads, self._raw, self._kernels, self._K):
            M = np.empty_like(grad.weight)
            u, v = kernel.u, kernel.v
            Mv = np.empty((len(u), u.shape[1] + 1))                 # (M v, rowsum M)
            _kernel_ops.masked_product(grad.weight, layer.weight, K, np.ascontiguousarray(v.T), M, Mv, threads)
            Mu = M.T @ np.hstack([u, np.ones((len(u), 1), np.float32)])      # (Mᵀ u, colsum M): one pass over M
            kernel_grads.append(LayerKernel(-2.0 * (Mv[:, -1:] * u - Mv[:, :-1]),
                                            2.0 * (Mu[:, :-1] - Mu[:, -1:] * v)))
        return loss, grads, kernel_grads

    def _require_kernel(self, what: str) -> None:
        if self._kernels is None:
            raise ValueError(f"{what} needs a kernelised engine (config.kernel_dim > 0, no layers loaded since)")

    def kernel_gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer], list[LayerKernel]]:
        """Loss and summed gradients of one mini-batch: of W, b, S (canonical layout) and of each layer's unit
        vectors u, v (as the reference's ``NumpyEngine.kernel_gradients``)."""
        self._require_kernel("kernel_gradients")
        return self._kernel_step_gradients(rows, epoch)

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        if self._kernels is None:
            return super().gradients(rows, epoch)
        return self._kernel_step_gradients(rows, epoch)[:2]

    def _step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        loss, grads, kernel_grads = self._kernel_step_gradients(rows, epoch)
        shrink, step = sgd_factors(lr, len(rows), self.config.weight_decay)
        small = [(layer.bias, grad.bias) for layer, grad in zip(self._raw, grads)]
        small += [(layer.side_weight, grad.side_weight) for layer, grad in zip(self._raw, grads)
                  if layer.side_weight is not None]
        small += [(p, g) for kernel, grad in zip(self._kernels, kernel_grads) for p, g in zip(kernel.arrays(),
                                                                                              grad.arrays())]
        decay_and_step([p for p, _ in small], [g for _, g in small], shrink, step)
        self._refresh(grads, float(shrink), float(step))
        return loss

    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        if self._kernels is None:
            return super().sgd_step(rows, epoch, lr)
        return self._step(np.ascontiguousarray(rows, dtype=np.int64), epoch, lr)

    def train_epoch(self, epoch: int, lr: float) -> float:
        if self._kernels is None:
            return super().train_epoch(epoch, lr)
        order = np.ascontiguousarray(epoch_order(self.config.seed, epoch, self.trainable), dtype=np.int64)
        size = int(self.config.batch_size)
        return float(sum(self._step(order[start:start + size], epoch, lr) for start in range(0, len(order), size)))

    def profiled_epoch(self, epoch: int, lr: float, ranges: Ranges | None = None
                       ) -> tuple[float, list[PhaseTiming]]:
        raise ValueError("profiling is not supported for kernelised weights (kernel_dim > 0) on cpu yet; use "
                         "backend='numpy' to see the phases")

    def run_stage(self, stage: str, rows: np.ndarray, epoch: int, lr: float) -> None:
        raise ValueError("run_stage times the sparse engine's stages; kernelised weights (kernel_dim > 0) have "
                         "their own step")

    # ---------------------------------------------------------------- parameters
    def kernel_state(self) -> tuple[list[Layer], list[LayerKernel]] | None:
        """Copies of the kernelised parameters, ``(W, b, S layers, unit vectors)``; None once layers were loaded."""
        if self._kernels is None:
            return None
        return [layer.copy() for layer in self._raw], [kernel.copy() for kernel in self._kernels]

    def set_layers(self, layers: list[Layer]) -> None:
        super().set_layers(layers)
        self._raw = self._kernels = None       # loaded layers are the weights: no kernel any more

    def max_abs_param(self) -> float:
        """``max |θ|`` over W, b, S, u and v (NaN if any is NaN)."""
        if self._kernels is None:
            return super().max_abs_param()
        return max_abs([a for layer in self._raw for a in layer.arrays()] +
                       [a for kernel in self._kernels for a in kernel.arrays()])

    def snapshot(self) -> object:
        if self._kernels is None:
            return super().snapshot()
        return KernelSnapshot(*self.kernel_state())

    def restore(self, snapshot: object) -> None:
        if not isinstance(snapshot, KernelSnapshot):
            super().restore(snapshot)
            self._raw = self._kernels = None
            return
        self._raw = [layer.copy() for layer in snapshot.layers]
        self._kernels = [kernel.copy() for kernel in snapshot.kernels]
        if len(self._K) != len(self._raw):      # the engine was plain since: the buffers again
            self._K = [np.empty_like(layer.weight) for layer in self._raw]
            self._effective = [np.empty_like(layer.weight) for layer in self._raw]
        self._refresh()
