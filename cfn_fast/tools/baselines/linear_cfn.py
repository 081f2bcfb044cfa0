"""Linear I-CFN: the paper's non-linearity ablation (Sec. 4.3, "Impact of the non-linearity").

I-CFN with every tanh replaced by the identity, everything else as in CFN: the same scaling and
per-item centring, masking noise, α/β loss, plain SGD with weight decay on every parameter, the
same initialisation and mini-batch order.  The CFN engines have no activation option, so this
variant subclasses the NumPy reference engine and swaps its forward / backward passes; it is a
harness-side ablation, not a product feature.  As in the paper, α, β, the masking ratio and the
hidden width are kept from I-CFN and only lr, lr decay and weight decay are tuned.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cfn_fast.backends.numpy_backend import NumpyEngine, corrupted_batch, reconstruction_loss
from cfn_fast.corruption import epoch_key
from cfn_fast.data.ratings import RatingSet
from cfn_fast.network import Layer, init_layers
from cfn_fast.preprocessing import Preprocessing
from cfn_fast.settings import init_from_signature, parameter_names, resolve, signature, train_config
from cfn_fast.training.trainer import run_epochs

from .common import Baseline

__all__ = ["LinearICFN"]


def _forward(layers: list[Layer], inputs: np.ndarray) -> list[np.ndarray]:
    acts = [inputs]
    for layer in layers:
        acts.append(acts[-1] @ layer.weight.T + layer.bias)
    return acts


class _LinearEngine(NumpyEngine):
    """The NumPy reference engine with identity activations (no side information)."""

    name = "numpy-linear"

    def gradients(self, rows: np.ndarray, epoch: int) -> tuple[float, list[Layer]]:
        cfg = self.config
        X, known, hidden = corrupted_batch(self.samples, rows, epoch_key(cfg.seed, epoch), self.threshold)
        acts = _forward(self.layers, np.where(known & ~hidden, X, np.float32(0.0)))
        loss, delta = reconstruction_loss(acts[-1], X, known, hidden, cfg.alpha, cfg.beta)
        grads: list[Layer] = []
        for index in range(len(self.layers) - 1, -1, -1):
            grads.append(Layer(weight=delta.T @ acts[index], bias=delta.sum(axis=0)))
            if index > 0:
                delta = delta @ self.layers[index].weight
        return loss, grads[::-1]

    def encode(self, inputs: sp.csr_matrix, side: np.ndarray | None, chunk: int = 512) -> np.ndarray:
        width = self.layers[-1].weight.shape[1]
        codes = np.empty((inputs.shape[0], width), dtype=np.float32)
        for start in range(0, inputs.shape[0], chunk):
            stop = min(start + chunk, inputs.shape[0])
            codes[start:stop] = _forward(self.layers[:-1], inputs[start:stop].toarray())[-1]
        return codes

    def predict_entries(self, inputs: sp.csr_matrix, side: np.ndarray | None, rows: np.ndarray,
                        cols: np.ndarray) -> np.ndarray:
        needed, local = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        codes = self.encode(inputs[needed], None)
        out = self.layers[-1]
        cols = np.asarray(cols, dtype=np.int64)
        return (np.einsum("ij,ij->i", codes[local], out.weight[cols]) + out.bias[cols]).astype(np.float32)


class LinearICFN(Baseline):
    name = "Linear I-CFN"
    source = "Strub et al. 2016, Sec. 4.3 (I-CFN without its non-linearity)"
    differences = ("identity activations in every layer (the engines only have tanh): a NumPy-reference variant "
                   "in the harness; predictions clipped to the scale like CFN's")
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init_from_signature(self, _SIGNATURE, args, kwargs)

    def fit(self, train: RatingSet) -> LinearICFN:
        if not 0 <= self.mask_ratio < 1 or not self.lr > 0 or self.lr * self.weight_decay >= 1:
            raise ValueError(f"LinearICFN needs 0 <= mask_ratio < 1, lr > 0, lr*weight_decay < 1; "
                             f"got {self.get_params()}")
        train = self._start(train)
        self.preprocessing_ = Preprocessing.fit("item", train)
        self.inputs_ = self.preprocessing_.centred_matrix(train)
        hidden = tuple(int(h) for h in np.atleast_1d(self.hidden))
        layers = init_layers(self.inputs_.shape[1], hidden, 0, int(self.seed))
        config = train_config(resolve({**self.get_params(), "kind": "item"}))
        self.engine_ = _LinearEngine(layers, config, self.inputs_, None)
        self.history_ = run_epochs(self.engine_, first_epoch=1, epochs=int(self.epochs), lr=float(self.lr),
                                   lr_decay=float(self.lr_decay), n_known=max(self.inputs_.nnz, 1))
        return self

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.engine_.predict_entries(self.inputs_, None, items, users)
        return self.preprocessing_.to_rating(items, out)


#: CFN's training settings (the declaration's), with this variant's defaults (no kind, backend or side information).
_SIGNATURE = signature({"alpha": 1.0, "beta": 0.5, "mask_ratio": 0.25, "lr": 0.01, "lr_decay": 0.3,
                        "weight_decay": 0.01, "batch_size": 35},
                       exclude=("kind", "centring", "backend", "use_side_info", "verbose", "profile"))
LinearICFN.param_names = parameter_names(_SIGNATURE)
LinearICFN.__init__.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
