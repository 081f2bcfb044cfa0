"""Low-rank factors of the ratings: the matrix-factorisation member of a blend.

``Factors`` fits ``r_ui ≈ p_u · q_i`` by ALS-WR (Zhou et al. 2008): alternating exact ridge solves, each row's
penalty ``reg · n`` for its ``n`` ratings, the first item factor started at the item's mean rating, on the ratings
mapped linearly onto 1..5 (the scale the penalty was tuned on; predictions are mapped back and clipped).  A blend
(:mod:`cfn_fast.training.blending`) weighs it beside its CFN networks: its errors differ from an autoencoder's,
which is what a blend gains from (ML-1M figures in bench/README.md, "Predictions").  Fitted on the bias model's
residuals instead, it was worse alone (0.865 against 0.853 test RMSE) and gained the blend half as much.

A user or item without training ratings has all-zero factors (its ridge problem has no data) and is predicted
by the bias model.  A new user or item folds in by one ridge solve against the other side's factors, by the rule
a training row's factors were found.

:func:`ridge_rows` (the batched solver) and :func:`blas_threads` also serve the baselines of ``cfn_fast.tools``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..data.ratings import RatingSet
from ..preprocessing import BiasModel

__all__ = ["Factors", "ridge_rows", "blas_threads", "single_thread_blas", "FACTOR_RANK", "FACTOR_REG",
           "FACTOR_SWEEPS", "FACTOR_SCALE"]

#: Rank, penalty (per rating) and sweeps of a factor member by default (the blend's choices by quality are
#: ``cfn_fast.training.blending.FACTOR_CANDIDATES``): on ML-1M rank 20 beat ALS-WR's rank 50 and took a third of
#: the time (bench/README.md).
FACTOR_RANK = 20
FACTOR_REG = 0.05
FACTOR_SWEEPS = 15
#: The scale the factors are fitted on (and ``reg`` tuned on): ratings are mapped onto it linearly.
FACTOR_SCALE = (1.0, 5.0)


@dataclass
class Factors:
    """``p_u · q_i`` on :data:`FACTOR_SCALE`, ALS-WR; ``low`` / ``high``: the data's own scale."""

    user_factors: np.ndarray   # (n_users, rank) float64
    item_factors: np.ndarray   # (n_items, rank) float64
    reg: float
    low: float
    high: float

    @classmethod
    def fit(cls, train: RatingSet, rank: int = FACTOR_RANK, reg: float = FACTOR_REG, sweeps: int = FACTOR_SWEEPS,
            seed: int = 0) -> "Factors":
        low, high = (float(s) for s in train.scale)
        model = cls(np.zeros((train.n_users, rank)), np.zeros((train.n_items, rank)), float(reg), low, high)
        rating = model.to_factor_scale(train.rating)
        item_count = np.bincount(train.item, minlength=train.n_items)
        item_factors = np.random.default_rng(seed).uniform(-0.01, 0.01, (train.n_items, rank))
        item_factors[:, 0] = np.where(item_count > 0, np.bincount(train.item, rating, train.n_items)
                                      / np.maximum(item_count, 1), rating.mean())
        user_reg = reg * np.maximum(np.bincount(train.user, minlength=train.n_users), 1)
        item_reg = reg * np.maximum(item_count, 1)
        user_factors = model.user_factors
        for _ in range(sweeps):
            user_factors = ridge_rows(train.user, train.item, rating, train.n_users, item_factors, user_reg)
            item_factors = ridge_rows(train.item, train.user, rating, train.n_items, user_factors, item_reg)
        model.user_factors, model.item_factors = user_factors, item_factors
        return model

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    def to_factor_scale(self, rating: np.ndarray) -> np.ndarray:
        ref_low, ref_high = FACTOR_SCALE
        scale = (ref_high - ref_low) / (self.high - self.low)
        return ref_low + (np.asarray(rating, dtype=np.float64) - self.low) * scale

    def to_rating(self, value: np.ndarray) -> np.ndarray:
        """Values on :data:`FACTOR_SCALE` as ratings of the data's scale, clipped."""
        ref_low, ref_high = FACTOR_SCALE
        rating = self.low + (value - ref_low) * ((self.high - self.low) / (ref_high - ref_low))
        return np.clip(rating, self.low, self.high)

    def predict(self, bias: BiasModel, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of pairs of training indices (the bias model's where a side has no ratings)."""
        p, q = self.user_factors[users], self.item_factors[items]
        known = p.any(axis=1) & q.any(axis=1)
        return np.where(known, self.to_rating(np.einsum("nk,nk->n", p, q)), bias.predict(users, items))

    def user_scores(self, bias: BiasModel, users: np.ndarray) -> np.ndarray:
        """Predicted ratings of the ``users`` for every item: ``(len(users), n_items)``."""
        p = self.user_factors[users]
        known = p.any(axis=1)[:, None] & self.item_factors.any(axis=1)[None, :]
        items = np.arange(len(self.item_factors))
        return np.where(known, self.to_rating(p @ self.item_factors.T), bias.predict(users[:, None], items[None, :]))

    def row_of_new(self, bias_row: np.ndarray, new: str, others: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Predicted ratings of a new user (item) with ``ratings`` of training ``others`` (items, or users) for
        every item (user); ``bias_row``: the bias model's row for it, used where the factors have nothing."""
        other = self.item_factors if new == "user" else self.user_factors
        if len(others) == 0:
            return bias_row
        factors = ridge_rows(np.zeros(len(others), dtype=np.int64), others, self.to_factor_scale(ratings), 1, other,
                             self.reg * len(others))[0]
        return np.where(other.any(axis=1), self.to_rating(other @ factors), bias_row)


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit BLAS to ``n`` threads inside the block (``None``: all cores); a no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a core dependency; tolerate a stripped install
        yield
        return
    with threadpool_limits(limits=n if n is not None else (os.cpu_count() or 1), user_api="blas"):
        yield


def single_thread_blas() -> contextlib.AbstractContextManager[None]:
    """Many tiny BLAS calls run faster on one thread (no fork/join per call, no spinning on a busy machine)."""
    return blas_threads(1)


def ridge_rows(rows: np.ndarray, cols: np.ndarray, y: np.ndarray, n_rows: int, factors: np.ndarray,
               reg: np.ndarray | float, *, weights: np.ndarray | None = None,
               prior_precision: np.ndarray | None = None, prior_shift: np.ndarray | None = None,
               noise_precision: float = 1.0, rng: np.random.Generator | None = None,
               chunk: int = 2048) -> np.ndarray:
    """Solve (or sample) every row's regularised least-squares problem at once.

    The observations are triples ``(rows[n], cols[n], y[n])``.  For row ``r`` with observed
    columns ``j``::

        A_r = c · Σ_j w_rj f_j f_jᵀ + reg_r · I + P        b_r = c · Σ_j w_rj y_rj f_j + s
        x_r = A_r⁻¹ b_r               (or x_r ~ N(A_r⁻¹ b_r, A_r⁻¹) when ``rng`` is given: a Gibbs draw)

    with ``f_j = factors[j]``, ``c = noise_precision``, ``P = prior_precision`` and
    ``s = prior_shift`` (BPMF), weights ``w`` (LLORMA's kernel; 1 when None).  All Gram matrices
    are built row by row with one BLAS product each; the solves (and Cholesky draws) are batched.
    """
    factors = np.asarray(factors, dtype=np.float64)
    n_cols, k = factors.shape
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    cols_sorted = np.asarray(cols, dtype=np.int64)[order]
    w = np.ones(len(order)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    wy = w * np.asarray(y, dtype=np.float64)[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    rhs = noise_precision * (sp.csr_matrix((wy, cols_sorted, indptr), shape=(n_rows, n_cols)) @ factors)
    if prior_shift is not None:
        rhs = rhs + prior_shift
    reg = np.broadcast_to(np.asarray(reg, dtype=np.float64), (n_rows,))
    out = np.empty((n_rows, k), dtype=np.float64)
    diag = np.arange(k)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        A = np.zeros((stop - start, k, k))
        # one small BLAS product per row beats a sparse product with the k² outer products
        with single_thread_blas():
            for r in range(start, stop):
                a, b = indptr[r], indptr[r + 1]
                if b > a:
                    f = factors[cols_sorted[a:b]]
                    A[r - start] = (f.T * w[a:b]) @ f
        if noise_precision != 1.0:
            A *= noise_precision
        A[:, diag, diag] += reg[start:stop, None]
        if prior_precision is not None:
            A += prior_precision
        b = rhs[start:stop, :, None]
        if rng is None:
            out[start:stop] = np.linalg.solve(A, b)[..., 0]
        else:
            # a draw from N(A⁻¹b, A⁻¹): with A = L Lᵀ, x = A⁻¹b + L⁻ᵀ z
            L = np.linalg.cholesky(A)
            mean = np.linalg.solve(A, b)[..., 0]
            z = rng.standard_normal((stop - start, k, 1))
            out[start:stop] = mean + np.linalg.solve(np.swapaxes(L, 1, 2), z)[..., 0]
    return out
