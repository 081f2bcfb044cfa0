"""BPMF: Bayesian probabilistic matrix factorisation by Gibbs sampling (Salakhutdinov & Mnih, ICML 2008).

Model (ratings centred by the training mean)::

    r_ui ~ N(u_u·v_i, α⁻¹)
    u_u ~ N(μ_U, Λ_U⁻¹),  v_i ~ N(μ_V, Λ_V⁻¹)
    (μ_U, Λ_U), (μ_V, Λ_V) ~ Normal-Wishart(μ₀ = 0, β₀, W₀ = I, ν₀ = D)

One Gibbs sweep draws the user hyper-parameters given U, every user given V (in one batched
draw, :func:`ridge_rows`), the item hyper-parameters given V and every item given U.  After
``burn_in`` sweeps, each sweep's factors are kept; a prediction is the average over the kept
samples of the (clipped) sampled rating, as in the authors' Matlab code.  The paper's settings
are the authors' recommendations: rank 10, α = 2, β₀ = 2, ν₀ = D, W₀ = I.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from cfn_fast.data.ratings import RatingSet

from .common import Baseline, ridge_rows

__all__ = ["BPMF"]

_INIT_REG = 2.5   # ridge of the starting sweeps (a MAP estimate under a unit-precision prior, α = 2)


class BPMF(Baseline):
    name = "BPMF"
    source = "Salakhutdinov & Mnih 2008, 'Bayesian probabilistic matrix factorization using MCMC'"
    differences = ("initialised by a few ridge-ALS sweeps instead of a PMF run; prediction averages the clipped "
                   "rating of every kept sample (stored factors), as the authors' code does on its probe set")
    param_names = ("rank", "n_samples", "burn_in", "alpha", "beta0", "seed")

    def __init__(self, rank: int = 10, n_samples: int = 60, burn_in: int = 10, alpha: float = 2.0,
                 beta0: float = 2.0, seed: int = 0) -> None:
        self.rank = rank
        self.n_samples = n_samples
        self.burn_in = burn_in
        self.alpha = alpha
        self.beta0 = beta0
        self.seed = seed

    def fit(self, train: RatingSet) -> BPMF:
        if int(self.rank) < 1 or int(self.n_samples) < 1 or int(self.burn_in) < 0 or not self.alpha > 0:
            raise ValueError(f"BPMF needs rank >= 1, n_samples >= 1, burn_in >= 0, alpha > 0; got {self.get_params()}")
        train = self._start(train)
        k = int(self.rank)
        rng = np.random.default_rng(self.seed)
        y = train.rating.astype(np.float64) - self.stats_.global_mean
        # MAP-like start: a few ridge ALS sweeps (the authors start from a PMF solution)
        V = 0.1 * rng.standard_normal((train.n_items, k))
        U = np.zeros((train.n_users, k))
        for _ in range(3):
            U = ridge_rows(train.user, train.item, y, train.n_users, V, _INIT_REG)
            V = ridge_rows(train.item, train.user, y, train.n_items, U, _INIT_REG)
        kept_u, kept_v = [], []
        for sweep in range(int(self.burn_in) + int(self.n_samples)):
            mu_u, lam_u = self._hyper(U, rng)
            U = ridge_rows(train.user, train.item, y, train.n_users, V, 0.0, prior_precision=lam_u,
                           prior_shift=lam_u @ mu_u, noise_precision=self.alpha, rng=rng)
            mu_v, lam_v = self._hyper(V, rng)
            V = ridge_rows(train.item, train.user, y, train.n_items, U, 0.0, prior_precision=lam_v,
                           prior_shift=lam_v @ mu_v, noise_precision=self.alpha, rng=rng)
            if sweep >= self.burn_in:
                kept_u.append(U.astype(np.float32))
                kept_v.append(V.astype(np.float32))
        self.user_samples_ = np.stack(kept_u)    # samples x users x rank
        self.item_samples_ = np.stack(kept_v)
        return self

    def _hyper(self, X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw (μ, Λ) from the Normal-Wishart posterior given the factor rows X."""
        n, k = X.shape
        beta0, nu0 = float(self.beta0), float(k)
        x_bar = X.mean(axis=0)
        S = np.cov(X, rowvar=False, bias=True).reshape(k, k)
        W0_inv = np.eye(k)
        W_inv = W0_inv + n * S + (beta0 * n / (beta0 + n)) * np.outer(x_bar, x_bar)
        W = np.linalg.inv(W_inv)
        W = 0.5 * (W + W.T)
        lam = np.atleast_2d(stats.wishart.rvs(df=nu0 + n, scale=W, random_state=rng))
        mu_star = n * x_bar / (beta0 + n)
        cov = np.linalg.inv((beta0 + n) * lam)
        mu = rng.multivariate_normal(mu_star, 0.5 * (cov + cov.T))
        return mu, lam

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        low, high = self.train_.scale
        total = np.zeros(len(users))
        for U, V in zip(self.user_samples_, self.item_samples_):
            total += np.clip(np.einsum("nk,nk->n", U[users], V[items]) + self.stats_.global_mean, low, high)
        return total / len(self.user_samples_)
