"""I-AutoRec (Sedhain, Menon, Sanner & Xie, WWW 2015): an item-based autoencoder, full-batch training.

One sample per item: the vector ``r_i`` of its ratings by all users (0 where unknown)::

    ĥ(r_i) = W · σ(V r_i + μ) + b          sigmoid hidden layer, identity output
    min   Σ_i ‖r_i − ĥ(r_i)‖²_observed + (λ/2) (‖W‖² + ‖V‖²)

Only observed entries enter the error; the ratings are used as they are (no centring or
scaling); training is full-batch L-BFGS (``scipy.optimize``) or iRprop⁻ on the whole matrix,
as in the paper.  Differences from CFN: identity output, no masking noise, no loss on
unknown entries through weight decay of missing inputs, and no side information.
"""
from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from cfn_fast.data.ratings import RatingSet

from .common import Baseline, blas_threads, single_thread_blas

__all__ = ["IAutoRec"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class IAutoRec(Baseline):
    name = "I-AutoRec"
    source = "Sedhain et al. 2015, 'AutoRec: autoencoders meet collaborative filtering' (WWW)"
    differences = ("NumPy/SciPy re-implementation (the authors' code is not public); float32 arithmetic; a fixed "
                   "budget of max_iter full-batch iterations; λ chosen on the validation split")
    param_names = ("hidden", "reg", "max_iter", "optimizer", "seed")

    def __init__(self, hidden: int = 500, reg: float = 1.0, max_iter: int = 100, optimizer: str = "lbfgs",
                 seed: int = 0) -> None:
        self.hidden = hidden
        self.reg = reg
        self.max_iter = max_iter
        self.optimizer = optimizer
        self.seed = seed

    # ------------------------------------------------------------------ training
    def fit(self, train: RatingSet) -> IAutoRec:
        if int(self.hidden) < 1 or self.reg < 0 or int(self.max_iter) < 1:
            raise ValueError(f"IAutoRec needs hidden >= 1, reg >= 0, max_iter >= 1; got {self.get_params()}")
        if self.optimizer not in ("lbfgs", "rprop"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'rprop', got {self.optimizer!r}")
        train = self._start(train)
        n_users, k = train.n_users, int(self.hidden)
        self._X = sp.csr_matrix((train.rating.astype(np.float32), (train.item, train.user)),
                                shape=(train.n_items, n_users))
        self._X.sort_indices()
        self._XT = self._X.T.tocsr()
        self._rows = np.repeat(np.arange(train.n_items), np.diff(self._X.indptr))
        rng = np.random.default_rng(self.seed)
        # uniform ±1/√fan_in (the usual Torch default of the era)
        shapes = {"V": (k, n_users), "mu": (k,), "W": (n_users, k), "b": (n_users,)}
        bound = {"V": 1 / np.sqrt(n_users), "mu": 1 / np.sqrt(n_users), "W": 1 / np.sqrt(k), "b": 1 / np.sqrt(k)}
        self._shapes = shapes
        theta = np.concatenate([rng.uniform(-bound[n], bound[n], s).ravel() for n, s in shapes.items()])
        # The optimiser's own vector updates are many small BLAS calls: one thread.  The products of the
        # loss use every core only when they are big enough to gain from it.
        self._big = train.n_items * n_users * k > 20_000_000
        with single_thread_blas():
            if self.optimizer == "lbfgs":
                result = scipy.optimize.minimize(self._loss_grad, theta.astype(np.float64), jac=True,
                                                 method="L-BFGS-B",
                                                 options={"maxiter": int(self.max_iter), "maxcor": 10})
                theta = result.x
                self.n_iter_ = int(result.nit)
            else:
                theta = self._rprop(theta.astype(np.float32))
                self.n_iter_ = int(self.max_iter)
        self.params_ = self._unpack(np.asarray(theta, dtype=np.float32))
        self.hidden_codes_ = _sigmoid(self._X @ self.params_["V"].T + self.params_["mu"])
        del self._X, self._XT, self._rows, self._big
        return self

    def _unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        out, start = {}, 0
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            out[name] = theta[start:start + size].reshape(shape)
            start += size
        return out

    def _loss_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        with blas_threads(None if self._big else 1):
            return self._loss_grad_inner(theta)

    def _loss_grad_inner(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = self._unpack(np.asarray(theta, dtype=np.float32))
        X, lam = self._X, np.float32(self.reg)
        H = _sigmoid(X @ p["V"].T + p["mu"])                       # items x k
        err = self._output_at_observed(H, p["W"], p["b"]) - X.data    # nnz
        loss = float(np.dot(err.astype(np.float64), err)) + 0.5 * float(self.reg) * (
            float(np.sum(p["W"].astype(np.float64) ** 2)) + float(np.sum(p["V"].astype(np.float64) ** 2)))
        dO = sp.csr_matrix((2.0 * err, X.indices, X.indptr), shape=X.shape)   # items x users
        dOT = dO.T.tocsr()
        grads = {"W": np.asarray(dOT @ H) + lam * p["W"],
                 "b": np.asarray(dO.sum(axis=0)).ravel().astype(np.float32)}
        dZ = np.asarray(dO @ p["W"]) * H * (1.0 - H)                # items x k
        grads["V"] = np.asarray(self._XT @ dZ).T + lam * p["V"]
        grads["mu"] = dZ.sum(axis=0)
        flat = np.concatenate([grads[n].ravel() for n in self._shapes]).astype(np.float64)
        return loss, flat

    def _output_at_observed(self, H: np.ndarray, W: np.ndarray, b: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Decoder output at the observed (item, user) entries, by blocks of items (dense GEMM per block)."""
        X = self._X
        out = np.empty(X.nnz, dtype=np.float32)
        for start in range(0, X.shape[0], chunk):
            stop = min(start + chunk, X.shape[0])
            a, z = X.indptr[start], X.indptr[stop]
            if z == a:
                continue
            block = H[start:stop] @ W.T                               # chunk x users
            out[a:z] = block[self._rows[a:z] - start, X.indices[a:z]] + b[X.indices[a:z]]
        return out

    def _rprop(self, theta: np.ndarray, eta_plus: float = 1.2, eta_minus: float = 0.5,
               step0: float = 0.01, step_max: float = 1.0, step_min: float = 1e-7) -> np.ndarray:
        """iRprop⁻: per-weight step sizes adapted on the sign of successive full-batch gradients."""
        step = np.full_like(theta, step0)
        prev = np.zeros_like(theta)
        for _ in range(int(self.max_iter)):
            _, g = self._loss_grad(theta)
            g = g.astype(np.float32)
            sign = np.sign(g * prev)
            step = np.where(sign > 0, np.minimum(step * eta_plus, step_max),
                            np.where(sign < 0, np.maximum(step * eta_minus, step_min), step))
            g = np.where(sign < 0, 0.0, g).astype(np.float32)
            theta -= np.sign(g) * step
            prev = g
        return theta

    # ------------------------------------------------------------------ prediction
    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        p = self.params_
        return np.einsum("nk,nk->n", self.hidden_codes_[items], p["W"][users]) + p["b"][users]
