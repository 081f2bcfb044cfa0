"""LLORMA: local low-rank matrix approximation (Lee, Kim, Lebanon & Singer, ICML 2013), parallel variant.

1. A global low-rank factorisation gives every user and item an embedding; the distance between
   two users (items) is the angle between their embeddings, ``d = arccos(cos(x, y))``.
2. ``n_anchors`` anchor points ``(u_t, i_t)`` are drawn among the training ratings.
3. Around each anchor, a rank-``rank`` model is fitted to the ratings weighted by the product
   Epanechnikov kernel ``K_t(u, i) = K_h(d(u_t, u)) · K_h(d(i_t, i))`` with
   ``K_h(d) = ¾ (1 − (d/h)²)₊`` (width ``h``; the paper's recommendation is 0.8).
   Here every model fits the residuals of a global bias model ``μ + b_u + b_i``.
4. A prediction is the kernel-weighted average of the local models:
   ``r̂_ui = Σ_t K_t(u,i) r̂_t(u,i) / Σ_t K_t(u,i)``; pairs no anchor covers fall back to the global model.

The paper ran the PREA toolkit with rank 20 and 30 anchors (a pseudo-rank of 600).
"""
from __future__ import annotations

import numpy as np

from cfn_fast.data.ratings import RatingSet

from .common import Baseline, UserItemBias, ridge_rows

__all__ = ["LLORMA", "epanechnikov"]


def epanechnikov(distance: np.ndarray, width: float) -> np.ndarray:
    """``¾ (1 − (d/h)²)`` inside the width, 0 outside."""
    return np.maximum(0.0, 0.75 * (1.0 - (np.asarray(distance) / width) ** 2))


def _angles(embedding: np.ndarray, anchor: int) -> np.ndarray:
    norm = np.linalg.norm(embedding, axis=1)
    cos = embedding @ embedding[anchor] / np.maximum(norm * norm[anchor], 1e-12)
    return np.arccos(np.clip(cos, -1.0, 1.0))


class LLORMA(Baseline):
    name = "LLORMA"
    source = "Lee et al. 2013, 'Local low-rank matrix approximation' (ICML), parallel LLORMA"
    differences = ("local models fitted by kernel-weighted ALS (weighted-λ ridge, exact per-row solves) instead of "
                   "PREA's gradient descent; all models fit the residuals of a global bias model "
                   "μ + b_u + b_i (without it "
                   "rank-20 local models under a strong ridge shrink to the global mean); global embedding = "
                   "weighted-λ ALS of the raw ratings (rank embedding_rank), which also covers pairs no anchor reaches")
    param_names = ("rank", "n_anchors", "width", "reg", "n_iter", "embedding_rank", "embedding_reg", "seed")

    def __init__(self, rank: int = 20, n_anchors: int = 30, width: float = 0.8, reg: float = 0.05,
                 n_iter: int = 6, embedding_rank: int = 10, embedding_reg: float = 0.1, seed: int = 0) -> None:
        self.rank = rank
        self.n_anchors = n_anchors
        self.width = width
        self.reg = reg
        self.n_iter = n_iter
        self.embedding_rank = embedding_rank
        self.embedding_reg = embedding_reg
        self.seed = seed

    def fit(self, train: RatingSet) -> LLORMA:
        if int(self.rank) < 1 or int(self.n_anchors) < 1 or not self.width > 0 or not self.reg > 0:
            raise ValueError(f"LLORMA needs rank >= 1, n_anchors >= 1, width > 0, reg > 0; got {self.get_params()}")
        train = self._start(train)
        rng = np.random.default_rng(self.seed)
        u, i = train.user, train.item
        self.bias_ = UserItemBias().fit(train)
        y = train.rating.astype(np.float64) - self.bias_.estimate(u, i)
        # 1. global embedding from a factorisation of the raw ratings (its leading factor carries the rating
        #    level, so angles spread over [0, π/2] as with the SVD the paper uses); also the fallback model
        Ug, Vg = self._als(u, i, train.rating.astype(np.float64), np.ones(len(y)), int(self.embedding_rank),
                           float(self.embedding_reg), rng)
        self.global_ = (Ug, Vg)
        # 2. anchors among the training ratings
        picks = rng.choice(train.nnz, size=min(int(self.n_anchors), train.nnz), replace=False)
        self.anchors_ = np.stack([u[picks], i[picks]], axis=1)
        kernels_u, kernels_i, local_u, local_v = [], [], [], []
        for au, ai in self.anchors_:
            ku = epanechnikov(_angles(Ug, au), self.width)
            ki = epanechnikov(_angles(Vg, ai), self.width)
            w = ku[u] * ki[i]
            sel = w > 0
            U, V = self._als(u[sel], i[sel], y[sel], w[sel], int(self.rank), float(self.reg), rng)
            kernels_u.append(ku.astype(np.float32))
            kernels_i.append(ki.astype(np.float32))
            local_u.append(U.astype(np.float32))
            local_v.append(V.astype(np.float32))
        self.kernels_u_, self.kernels_i_ = np.stack(kernels_u), np.stack(kernels_i)
        self.local_u_, self.local_v_ = np.stack(local_u), np.stack(local_v)
        return self

    def _als(self, u: np.ndarray, i: np.ndarray, y: np.ndarray, w: np.ndarray, rank: int, reg: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Weighted ALS with weighted-λ regularisation (λ · the row's total kernel weight)."""
        n_users, n_items = self.train_.n_users, self.train_.n_items
        wu = np.bincount(u, weights=w, minlength=n_users)
        wi = np.bincount(i, weights=w, minlength=n_items)
        lam_u = reg * np.maximum(wu, 1e-6)
        lam_i = reg * np.maximum(wi, 1e-6)
        V = 0.1 * rng.standard_normal((n_items, rank))
        V[:, 0] += np.bincount(i, weights=y * w, minlength=n_items) / np.maximum(wi, 1e-6)
        U = np.zeros((n_users, rank))
        for _ in range(int(self.n_iter)):
            U = ridge_rows(u, i, y, n_users, V, lam_u, weights=w)
            V = ridge_rows(i, u, y, n_items, U, lam_i, weights=w)
        return U, V

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        Ug, Vg = self.global_
        out = np.einsum("nk,nk->n", Ug[users], Vg[items])      # fallback: the global model
        num = np.zeros(len(users))
        den = np.zeros(len(users))
        for ku, ki, U, V in zip(self.kernels_u_, self.kernels_i_, self.local_u_, self.local_v_):
            w = ku[users].astype(np.float64) * ki[items]
            num += w * np.einsum("nk,nk->n", U[users], V[items])
            den += w
        covered = den > 0
        out[covered] = self.bias_.estimate(users[covered], items[covered]) + num[covered] / den[covered]
        return out
