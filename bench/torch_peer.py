"""A straightforward dense PyTorch CFN: what a user would write instead of cfn_fast (a benchmark peer).

The same model, loss, masking, SGD with weight decay and lr schedule as cfn_fast's engines,
written the usual deep-learning way: every mini-batch is a dense ``B x n_inputs`` tensor,
the network is ``Linear + tanh`` layers on ``[h, side]``, autograd computes the gradients of
``loss / B`` and ``torch.optim.SGD(weight_decay=λ)`` updates every parameter.  Masks come from
:mod:`cfn_fast.corruption` (the same entries are hidden as in the library), so the peer
trains the very same function; only the execution strategy differs.

It plugs into ``cfn_fast.CFN`` as an engine (``model.engine_ = TorchEngine(...)``), so the
library's preprocessing, lr schedule, prediction and scoring are reused unchanged.
``device`` is ``"cpu"`` or ``"cuda"`` (the GPU benchmark reuses this file).

PyTorch is a benchmark-only dependency: ``pip install torch``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from cfn_fast.backends.base import Engine, TrainConfig, epoch_order
from cfn_fast.corruption import epoch_key, hidden_entries, mask_threshold
from cfn_fast.network import Layer

__all__ = ["TorchEngine"]


class TorchEngine(Engine):
    """Dense mini-batch CFN in PyTorch (autograd + torch.optim.SGD)."""

    name = "torch"

    def __init__(self, layers: list[Layer], config: TrainConfig, samples: sp.csr_matrix,
                 side: np.ndarray | None, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(layers, config, samples, side)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.threshold = mask_threshold(config.mask_ratio)
        self.n_inputs = samples.shape[1]
        self._side_t = None if self.side is None else torch.from_numpy(self.side).to(self.device)
        self.params: list[list[torch.Tensor]] = []
        self.set_layers(layers)

    # ---------------------------------------------------------------- the model
    def _forward(self, x: torch.Tensor, side: torch.Tensor | None, n_layers: int | None = None) -> torch.Tensor:
        h = x
        for layer in self.params[:n_layers]:
            z = torch.nn.functional.linear(h, layer[0], layer[1])
            if side is not None:
                z = z + torch.nn.functional.linear(side, layer[2])
            h = torch.tanh(z)
        return h

    def _batch(self, rows: np.ndarray, epoch: int):
        """Dense X, known and hidden masks of a mini-batch (masks from cfn_fast.corruption)."""
        batch = self.samples[rows]
        counts = np.diff(batch.indptr)
        local = np.repeat(np.arange(len(rows)), counts)
        hidden = hidden_entries(self.samples.indptr, rows, epoch_key(self.config.seed, epoch), self.threshold)
        index = torch.from_numpy(local * self.n_inputs + batch.indices.astype(np.int64)).to(self.device)
        shape = (len(rows), self.n_inputs)
        x = torch.zeros(shape[0] * shape[1], device=self.device)
        x[index] = torch.from_numpy(batch.data).to(self.device)
        known = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=self.device)
        known[index] = True
        hid = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=self.device)
        hid[index] = torch.from_numpy(hidden).to(self.device)
        side = None if self._side_t is None else self._side_t[torch.from_numpy(rows).to(self.device)]
        return x.view(shape), known.view(shape), hid.view(shape), side

    def _loss(self, rows: np.ndarray, epoch: int) -> torch.Tensor:
        x, known, hidden, side = self._batch(rows, epoch)
        visible = known & ~hidden
        output = self._forward(torch.where(visible, x, torch.zeros_like(x)), side)
        weight = torch.where(hidden, self.config.alpha, torch.where(known, self.config.beta, 0.0))
        return (weight * (output - x) ** 2).sum()

    # ---------------------------------------------------------------- training
    def sgd_step(self, rows: np.ndarray, epoch: int, lr: float) -> float:
        rows = np.asarray(rows, dtype=np.int64)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(rows, epoch)
        (loss / len(rows)).backward()
        self.optimizer.step()                  # p <- p - lr (g / B + λ p)
        return float(loss.detach())

    def train_epoch(self, epoch: int, lr: float) -> float:
        order = epoch_order(self.config.seed, epoch, self.trainable)
        size = self.config.batch_size
        return sum(self.sgd_step(order[start:start + size], epoch, lr) for start in range(0, len(order), size))

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        for p in self._flat():
            p.grad = None
        loss = self._loss(np.asarray(rows, dtype=np.int64), epoch)
        loss.backward()
        grads = [Layer(*[None if p is None else p.grad.detach().cpu().numpy().copy() for p in layer])
                 for layer in self._padded()]
        return float(loss.detach()), grads

    # ---------------------------------------------------------------- parameters
    def _flat(self) -> list[torch.Tensor]:
        return [p for layer in self.params for p in layer if p is not None]

    def _padded(self) -> list[list[torch.Tensor | None]]:
        return [layer + [None] * (3 - len(layer)) for layer in self.params]

    def get_layers(self) -> list[Layer]:
        return [Layer(*[None if p is None else p.detach().cpu().numpy().copy() for p in layer])
                for layer in self._padded()]

    def set_layers(self, layers: list[Layer]) -> None:
        self.params = [[torch.tensor(np.asarray(a, np.float32), device=self.device, requires_grad=True)
                        for a in layer.arrays()] for layer in layers]
        self.optimizer = torch.optim.SGD(self._flat(), lr=0.0, weight_decay=self.config.weight_decay)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None, chunk: int = 512) -> np.ndarray:
        out = []
        for start in range(0, inputs.shape[0], chunk):
            x = torch.from_numpy(inputs[start:start + chunk].toarray()).to(self.device)
            s = None if side is None else \
                torch.from_numpy(np.asarray(side[start:start + chunk], np.float32)).to(self.device)
            out.append(self._forward(x, s, len(self.params) - 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.params[-1][0].shape[1]), np.float32)

    @torch.no_grad()
    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None,
                        rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        needed, local = np.unique(rows, return_inverse=True)
        codes = torch.from_numpy(self.encode(inputs[needed], None if side is None else side[needed])).to(self.device)
        weight, bias = self.params[-1][0], self.params[-1][1]
        c = torch.from_numpy(cols).to(self.device)
        z = (codes[torch.from_numpy(local).to(self.device)] * weight[c]).sum(1) + bias[c]
        if side is not None:
            z = z + (torch.from_numpy(np.asarray(side[rows], np.float32)).to(self.device)
                     * self.params[-1][2][c]).sum(1)
        return torch.tanh(z).cpu().numpy().astype(np.float32)
