"""The split step on the CPU: one shard's engine in Cython + OpenMP (``kernels/cpu/cfn_shard.pyx``).

Mirrors :class:`~cfn_fast.backends.numpy_shard.NumpyShardEngine` (the specification) call for call, but the
per-input work is sparse, as in :class:`~cfn_fast.backends.cpu_backend.CpuEngine`: the shard's first-layer
columns are stored transposed (one contiguous row per input) and only the rows of the batch's visible entries
are read and updated (the update waits for the next batch's encoder, which loads those rows anyway); the
outputs are evaluated at the batch's known entries only; weight decay is exact and lazy (``scale * V``), so
the rows a batch does not touch cost nothing.  The masking noise is the unsharded one
bit for bit (positions in the whole training CSR, the swap rule over each sample's whole row).

The replicated layers (the first layer's bias and side weight, the layers in between: batch x hidden) are
small and dense: NumPy float32, as the reference writes them.

Results do not depend on the thread count.  Threads: ``CpuShardEngine(..., threads=n)``, else the CPU
engine's default (:func:`~cfn_fast.backends.cpu_backend.set_num_threads`).  The kernels release the GIL, so
the shards of one process may run as threads.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..corruption import epoch_key, mask_threshold
from ..network import Layer
from ..settings import TrainConfig
from .cpu_backend import get_num_threads
from .numpy_backend import decay_and_step, sgd_factors
from .shard_base import ShardData, ShardEngine, replicated_codes
from .validation import checked_epoch

__all__ = ["CpuShardEngine"]

# after cpu_backend, which sets libgomp's wait policy (GOMP_SPINCOUNT) before the first OpenMP module loads
from ..kernels import cfn_shard as _kernels  # noqa: E402


def _checked_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


class CpuShardEngine(ShardEngine):
    """One shard's split step on sparse Cython + OpenMP kernels (exact to the NumPy specification)."""

    name = "cpu"

    def __init__(self, parts: list[Layer], config: TrainConfig, data: ShardData, side: np.ndarray | None,
                 threads: int | None = None) -> None:
        super().__init__(parts, config, data, side)
        self.side_dim = 0 if self.side is None else int(self.side.shape[1])
        if self.side is not None and self.side.shape[0] != data.samples.shape[0]:
            raise ValueError(f"side must have one row per sample ({data.samples.shape[0]}), "
                             f"got {self.side.shape[0]}")
        self.hidden = [int(layer.weight.shape[0]) for layer in parts[:-1]]
        samples = data.samples
        self._state = _kernels.ShardState(
            int(samples.shape[1]), self.widths[0], self.widths[1], self.side_dim, samples.indptr, samples.indices,
            samples.data, data.positions, data.row_starts, self.side, float(config.alpha), float(config.beta),
            mask_threshold(config.mask_ratio), 1)
        self.threads = threads
        self.set_layers(parts)

    # ---------------------------------------------------------------- threads
    @property
    def threads(self) -> int:
        """Threads the kernels use (settable; None: the CPU engine's default)."""
        return self._state.nthreads

    @threads.setter
    def threads(self, value: int | None) -> None:
        value = _checked_threads(value)
        self._state.nthreads = get_num_threads() if value is None else value

    # ---------------------------------------------------------------- the split step
    def input_partial(self, rows, epoch: int) -> np.ndarray:
        rows, epoch = self.checked_rows(rows), checked_epoch(epoch)
        self._step = None
        self._state.gather(rows, epoch_key(self.config.seed, epoch))
        self._step = {"rows": rows, "epoch": epoch}
        return self._state.encode()

    def output_partial(self, rows, epoch: int, hidden_sum, lr: float) -> tuple[float, np.ndarray]:
        rows = self.checked_rows(rows)
        epoch, lr = self.checked_step(epoch, lr)
        step = self.begun(self._step, rows, "output", "codes")
        hidden_sum = self.checked_block(hidden_sum, rows, self.widths[0], "hidden_sum")
        side = self.side_rows(rows)
        codes = replicated_codes(hidden_sum, self.first_bias, self.first_side, self.middle, side)
        loss, code_grad = self._state.output(np.ascontiguousarray(codes[-1]), lr, float(self.config.weight_decay))
        step["codes"] = codes
        return float(loss), code_grad

    def finish_step(self, rows, code_grad_sum, lr: float) -> None:
        rows = self.checked_rows(rows)
        step = self.begun(self._step, rows, "finish", "codes")
        lr = self.checked_step(step["epoch"], lr)[1]
        code_grad_sum = self.checked_block(code_grad_sum, rows, self.widths[1], "code_grad_sum")
        side = self.side_rows(rows)
        codes = step["codes"]                                  # h_1 .. h_{L-1}
        delta = code_grad_sum * (1.0 - codes[-1] ** 2)
        grads: list[Layer] = []
        for index in range(len(self.middle), 0, -1):           # numpy_backend.backward, middle layers
            layer, h_prev = self.middle[index - 1], codes[index - 1]
            grads.append(Layer(delta.T @ h_prev, delta.sum(axis=0), None if side is None else delta.T @ side))
            delta = (delta @ layer.weight) * (1.0 - h_prev ** 2)
        grads.reverse()
        first = [delta.sum(axis=0)] + ([] if side is None else [delta.T @ side])
        shrink, factor = sgd_factors(lr, len(rows), self.config.weight_decay)
        decay_and_step([*self._first_replicated(), *(p for layer in self.middle for p in layer.arrays())],
                       [*first, *(g for grad in grads for g in grad.arrays())], shrink, factor)
        self._state.input_update(np.ascontiguousarray(delta, dtype=np.float32), lr, float(self.config.weight_decay))
        self._step = None

    def _first_replicated(self) -> list[np.ndarray]:
        return [self.first_bias] + ([] if self.first_side is None else [self.first_side])

    # ---------------------------------------------------------------- parameters
    def get_layers(self) -> list[Layer]:
        first_weight, out_weight, out_bias, out_side = self._state.export()
        first = Layer(first_weight, self.first_bias.copy(), None if self.first_side is None else self.first_side.copy())
        last = Layer(out_weight, out_bias, out_side if self.side_dim else None)
        return [first, *(layer.copy() for layer in self.middle), last]

    def set_layers(self, parts: list[Layer]) -> None:
        parts = _checked_parts(parts, int(self.data.samples.shape[1]), self.hidden, self.side_dim)
        first, *middle, last = parts
        self._state.load(first.weight, last.weight, last.bias, last.side_weight)
        self.first_bias, self.first_side = first.bias, first.side_weight
        self.middle = middle
        self._step = None


def _checked_parts(parts: Any, n_local: int, hidden: list[int], side_dim: int) -> list[Layer]:
    """Float32 copies of a shard's part of the network (:func:`~cfn_fast.backends.shard_base.split_layers`
    layout) after checking every shape: the first layer's columns and the output rows of the shard's inputs."""
    if isinstance(parts, Layer) or not isinstance(parts, (list, tuple)) or len(parts) != len(hidden) + 1:
        raise ValueError(f"parts must be a list of {len(hidden) + 1} Layer objects (split_layers), got {parts!r:.80}")
    widths = [*hidden, n_local]
    fan_in = n_local
    checked = []
    for k, layer in enumerate(parts):
        if not isinstance(layer, Layer):
            raise TypeError(f"parts[{k}] must be a cfn_fast.network.Layer, got {type(layer).__name__}")
        expected = {"weight": (widths[k], fan_in), "bias": (widths[k],),
                    "side_weight": (widths[k], side_dim) if side_dim else None}
        for name, shape in expected.items():
            value = getattr(layer, name)
            got = None if value is None else np.shape(value)
            if got != shape:
                raise ValueError(f"parts[{k}].{name} must have shape {shape}, got {got}")
            if value is not None and not np.all(np.isfinite(value)):
                raise ValueError(f"parts[{k}].{name} has NaN or infinite values")
        fan_in = widths[k]
        checked.append(Layer(np.array(layer.weight, dtype=np.float32), np.array(layer.bias, dtype=np.float32),
                             None if layer.side_weight is None else np.array(layer.side_weight, dtype=np.float32)))
    return checked
