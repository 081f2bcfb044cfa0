"""ALS-WR: alternating least squares with weighted-λ regularisation (Zhou, Wilkinson, Schreiber & Pan 2008).

    min_{U,V} Σ_(u,i)∈K (r_ui − u_u·v_i)² + λ (Σ_u n_u ‖u_u‖² + Σ_i n_i ‖v_i‖²)

with ``n_u`` / ``n_i`` the numbers of ratings of user u / item i.  Each half-step solves every
user's (then every item's) ridge problem exactly (:func:`ridge_rows`, vectorised).  As in the
paper, the first item factor is initialised to the item's mean rating and the others to small
random numbers; the model fits the raw ratings (no bias terms), so does the original.
"""
from __future__ import annotations

import numpy as np

from cfn_fast.data.ratings import RatingSet

from .common import Baseline, ridge_rows

__all__ = ["ALSWR"]


class ALSWR(Baseline):
    name = "ALS-WR"
    source = "Zhou et al. 2008, 'Large-scale parallel collaborative filtering for the Netflix Prize'"
    differences = ("exact per-row ridge solves in NumPy (the paper ran Apache Mahout, rank 200); rank and λ "
                   "chosen on the validation split; users/items without training ratings fall back to means")
    param_names = ("rank", "reg", "n_iter", "seed")

    def __init__(self, rank: int = 50, reg: float = 0.05, n_iter: int = 15, seed: int = 0) -> None:
        self.rank = rank
        self.reg = reg
        self.n_iter = n_iter
        self.seed = seed

    def fit(self, train: RatingSet) -> ALSWR:
        if int(self.rank) < 1 or not self.reg > 0 or int(self.n_iter) < 1:
            raise ValueError(f"ALSWR needs rank >= 1, reg > 0, n_iter >= 1; got {self.get_params()}")
        train = self._start(train)
        k = int(self.rank)
        rng = np.random.default_rng(self.seed)
        r = train.rating.astype(np.float64)
        V = rng.uniform(-0.01, 0.01, (train.n_items, k))
        V[:, 0] = self.stats_.item_mean
        lam_u = self.reg * np.maximum(self.stats_.user_count, 1)
        lam_i = self.reg * np.maximum(self.stats_.item_count, 1)
        U = np.zeros((train.n_users, k))
        for _ in range(int(self.n_iter)):
            U = ridge_rows(train.user, train.item, r, train.n_users, V, lam_u)
            V = ridge_rows(train.item, train.user, r, train.n_items, U, lam_i)
        self.user_factors_, self.item_factors_ = U, V
        return self

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("nk,nk->n", self.user_factors_[users], self.item_factors_[items])
