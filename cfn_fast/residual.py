"""CFN on the residuals of the regularised bias model: ``r̂ = μ + b_u + b_i + CFN(r − μ − b_u − b_i)``.

The paper's CFN centres each sample by its own mean, so an I-CFN starts from the item means and
must learn every user's offset through its weights.  With a few ratings per row that is more
than the data can teach, and the regularised bias model (:class:`~cfn_fast.baselines.UserItemBias`)
scores better than CFN (bench/README.md, density sweep).  :class:`ResidualCFN` fits the bias model
first and trains the given CFN on what it leaves: where the residuals carry no structure the
network learns little and the result stays at the bias model's level; where they do, CFN adds
to it.  It is an option next to :class:`~cfn_fast.CFN`, which stays the paper's model exactly.

Scope: ``fit`` / ``predict`` / ``predict_indices`` / ``score``; the wrapped model (``cfn_``) and the
bias model (``bias_``) are fitted estimators of their own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ._params import EstimatorParams
from .baselines import UserItemBias
from .data.ratings import RatingSet
from .metrics import rmse
from .model import CFN, NotFittedError

__all__ = ["ResidualCFN"]

#: Residuals are clipped to ±this fraction of the scale's span and normalised by it, so that the
#: network sees values of the size plain CFN sees (±1 for ±2 stars on 1..5).  Tried on the
#: sweep's 3,000 x 1,500 set: 1 (±4 stars, no clipping) 0.745, 0.5 0.685, plain CFN 0.690 (I-CFN).
RESIDUAL_HALF_RANGE = 0.5


class ResidualCFN(EstimatorParams):
    """A :class:`~cfn_fast.CFN` trained on the residuals of a regularised ``μ + b_u + b_i`` model.

    Parameters
    ----------
    cfn : the CFN to train on the residuals (default: ``CFN(kind="auto")`` with its defaults).
    bias_reg : shrinkage of the user and item offsets (in ratings, see ``UserItemBias.reg``).
    """

    param_names = ("cfn", "bias_reg")

    def __init__(self, cfn: CFN | None = None, bias_reg: float = 10.0) -> None:
        self.cfn = cfn
        self.bias_reg = bias_reg

    def fit(self, train: RatingSet, validation: RatingSet | None = None, **fit_kwargs: Any) -> "ResidualCFN":
        """Fit the bias model on ``train``, then the CFN on the residual ratings (``validation``,
        if given, is turned into residuals the same way and passed on, as are ``fit_kwargs``)."""
        if not isinstance(train, RatingSet):
            raise TypeError(f"fit expects a RatingSet as train, got {type(train).__name__}")
        self.bias_ = UserItemBias(reg=self.bias_reg).fit(train)
        self.scale_ = tuple(float(s) for s in train.scale)
        model = CFN(kind="auto") if self.cfn is None else self.cfn
        self.cfn_ = type(model)(**model.get_params())
        residual_validation = None if validation is None else self._residuals(validation)
        self.cfn_.fit(self._residuals(train), validation=residual_validation, **fit_kwargs)
        self.train_ = train
        return self

    def _residuals(self, ratings: RatingSet) -> RatingSet:
        """``ratings`` minus the bias model, clipped to ``±RESIDUAL_HALF_RANGE · (high − low)``."""
        low, high = self.scale_
        base = self.bias_.predict_indices(ratings.user, ratings.item)
        half = RESIDUAL_HALF_RANGE * (high - low)
        residual = np.clip(ratings.rating.astype(np.float64) - base, -half, half).astype(np.float32)
        return replace(ratings, rating=residual, scale=(-half, half))

    def predict_indices(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for user / item indices of the training set, clipped to the scale."""
        if not hasattr(self, "cfn_"):
            raise NotFittedError("this ResidualCFN is not fitted yet: call fit(train) first")
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = self.bias_.predict_indices(users, items) + self.cfn_.predict_indices(users, items)
        return np.clip(out - self._unshrunk_mean(users, items), *self.scale_)

    def _unshrunk_mean(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """CFN centres each sample by its own mean residual: with few ratings that mean undoes the
        bias model's shrinkage.  This is the part of it the bias model's shrinkage
        ``n / (n + bias_reg)`` would have removed, in rating units."""
        pre = self.cfn_.preprocessing_
        samples = users if self.cfn_.kind_ == "user" else items
        count = pre.sample_count[samples].astype(np.float64)
        shrink = float(self.bias_reg) / (count + float(self.bias_reg))
        return pre.half_range * pre.sample_mean[samples].astype(np.float64) * shrink

    def predict(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Predicted ratings for original user and item ids (unknown ids raise ``KeyError``)."""
        if not hasattr(self, "cfn_"):
            raise NotFittedError("this ResidualCFN is not fitted yet: call fit(train) first")
        return self.predict_indices(self.train_.user_index(user_ids), self.train_.item_index(item_ids))

    def score(self, test: RatingSet) -> float:
        """RMSE on ``test`` (same users and items as the training set)."""
        if not hasattr(self, "cfn_"):
            raise NotFittedError("this ResidualCFN is not fitted yet: call fit(train) first")
        if not test.same_universe(self.train_):
            raise ValueError("test must share the training set's users and items (split both from one RatingSet)")
        return rmse(self.predict_indices(test.user, test.item), test.rating)
