"""SVDFeature-style feature-based matrix factorisation (Chen, Zhang, Zheng, Cui, Wu & Yu, JMLR 2012).

SVDFeature predicts with global, user and item *features* α (user side), β (item side)::

    r̂_ui = μ + Σ_j α_j b^(u)_j + Σ_j β_j b^(i)_j + (Σ_j α_j p_j)ᵀ (Σ_j β_j q_j)

Here a user's features are its id (one-hot) plus its side information, an item's its id plus
its side information, each side-feature row scaled to unit norm (1/√(active features)) as the
toolkit's examples do.  Hence the biases are partly predicted from side features
(``b_u + f_uᵀ w_u``) and the latent factors are re-weighted by them (``p_u + F_uᵀ P_f``).
Trained by SGD on the squared error with L2 regularisation on every parameter a rating
touches; the paper ran the SVDFeature toolkit with rank 64, other settings by random search.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cfn_fast.data.ratings import RatingSet

from .common import Baseline, single_thread_blas

__all__ = ["SVDFeature"]


def _normalised(features: np.ndarray | None, n: int) -> np.ndarray:
    if features is None:
        return np.zeros((n, 0), dtype=np.float64)
    f = np.asarray(features, dtype=np.float64)
    norm = np.sqrt((f ** 2).sum(axis=1, keepdims=True))
    return np.divide(f, norm, out=np.zeros_like(f), where=norm > 0)


def _scatter(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Dense (n × cols) sum of ``values`` by row index (duplicates add up)."""
    indicator = sp.csc_matrix((np.ones(len(rows)), rows, np.arange(len(rows) + 1)), shape=(n, len(rows)))
    return indicator @ values


def _feature_step(f: np.ndarray, grad: np.ndarray, param: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Per-feature mean over the batch's ratings of (gradient − reg · param), weighted by feature value."""
    weight = np.abs(f).sum(axis=0)
    step = f.T @ grad - weight[:, None] * reg * param
    return step / np.maximum(weight, 1e-12)[:, None]


class SVDFeature(Baseline):
    name = "SVDFeature"
    source = "Chen et al. 2012, 'SVDFeature: a toolkit for feature-based collaborative filtering' (JMLR)"
    differences = ("re-implemented in NumPy with mini-batch SGD instead of the C++ toolkit's per-rating SGD: id "
                   "parameters take every rating's step of the mini-batch at once, shared side-feature parameters "
                   "the mean step of the ratings that use them (a summed step diverges); "
                   "features = id + the data set's side information (ids only where the data set has none)")
    param_names = ("rank", "lr", "reg", "reg_bias", "n_epochs", "lr_decay", "batch_size", "use_side_info",
                   "seed")

    def __init__(self, rank: int = 64, lr: float = 0.02, reg: float = 0.05, reg_bias: float = 0.005,
                 n_epochs: int = 20, lr_decay: float = 0.92, batch_size: int = 2048, use_side_info: bool = True,
                 seed: int = 0) -> None:
        self.rank = rank
        self.lr = lr
        self.reg = reg
        self.reg_bias = reg_bias
        self.n_epochs = n_epochs
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.use_side_info = use_side_info
        self.seed = seed

    def fit(self, train: RatingSet) -> SVDFeature:
        if int(self.rank) < 1 or not self.lr > 0 or self.reg < 0 or int(self.n_epochs) < 1:
            raise ValueError(f"SVDFeature needs rank >= 1, lr > 0, reg >= 0, n_epochs >= 1; got {self.get_params()}")
        train = self._start(train)
        k = int(self.rank)
        rng = np.random.default_rng(self.seed)
        Fu = _normalised(train.user_features if self.use_side_info else None, train.n_users)
        Fi = _normalised(train.item_features if self.use_side_info else None, train.n_items)
        mu = self.stats_.global_mean
        scale = 0.1 / np.sqrt(k)
        # last column of each parameter block is the bias: [P | b_u], [P_f | w_u], ...
        U = np.hstack([scale * rng.standard_normal((train.n_users, k)), np.zeros((train.n_users, 1))])
        V = np.hstack([scale * rng.standard_normal((train.n_items, k)), np.zeros((train.n_items, 1))])
        Uf = np.hstack([scale * rng.standard_normal((Fu.shape[1], k)), np.zeros((Fu.shape[1], 1))])
        Vf = np.hstack([scale * rng.standard_normal((Fi.shape[1], k)), np.zeros((Fi.shape[1], 1))])
        reg = np.r_[np.full(k, float(self.reg)), float(self.reg_bias)]
        with single_thread_blas():
            self._epochs(U, V, Uf, Vf, Fu, Fi, reg, mu)
        full_u = U + Fu @ Uf
        full_v = V + Fi @ Vf
        self.mu_ = mu
        self.user_bias_, self.item_bias_ = full_u[:, k], full_v[:, k]
        self.user_factors_, self.item_factors_ = full_u[:, :k], full_v[:, :k]
        return self

    def _epochs(self, U: np.ndarray, V: np.ndarray, Uf: np.ndarray, Vf: np.ndarray, Fu: np.ndarray,
                Fi: np.ndarray, reg: np.ndarray, mu: float) -> None:
        """SGD epochs, updating the parameter blocks in place."""
        train, k = self.train_, int(self.rank)
        users, items = train.user.astype(np.int64), train.item.astype(np.int64)
        r = train.rating.astype(np.float64)
        size = int(self.batch_size)
        for epoch in range(int(self.n_epochs)):
            lr = self.lr * self.lr_decay ** epoch
            order = np.random.default_rng((self.seed, epoch)).permutation(len(r))
            for start in range(0, len(order), size):
                b = order[start:start + size]
                u, i = users[b], items[b]
                fu, fi = Fu[u], Fi[i]
                pu = U[u] + fu @ Uf
                qi = V[i] + fi @ Vf
                e = r[b] - (mu + pu[:, k] + qi[:, k] + np.einsum("nk,nk->n", pu[:, :k], qi[:, :k]))
                gu = np.empty_like(pu)
                gu[:, :k] = e[:, None] * qi[:, :k]
                gu[:, k] = e
                gi = np.empty_like(qi)
                gi[:, :k] = e[:, None] * pu[:, :k]
                gi[:, k] = e
                # id parameters: every rating's SGD step, applied together (a sparse scatter-add)
                U += _scatter(u, lr * (gu - reg * U[u]), train.n_users)
                V += _scatter(i, lr * (gi - reg * V[i]), train.n_items)
                # shared feature parameters: the mean step of the ratings that use each feature
                if fu.shape[1]:
                    Uf += lr * _feature_step(fu, gu, Uf, reg)
                if fi.shape[1]:
                    Vf += lr * _feature_step(fi, gi, Vf, reg)
            if not np.all(np.isfinite(U)):
                raise FloatingPointError(f"SVDFeature diverged in epoch {epoch + 1}: lower lr (now {self.lr})")

    def _covered(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # side features give cold users / items a prediction too
        return np.ones(len(users), dtype=bool)

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (self.mu_ + self.user_bias_[users] + self.item_bias_[items]
                + np.einsum("nk,nk->n", self.user_factors_[users], self.item_factors_[items]))
