"""What every baseline shares: the tiny estimator interface, simple reference predictors and the
vectorised ridge solver behind the alternating-least-squares family (ALS-WR, BPMF, LLORMA).

The interface, deliberately small so the paper harness treats CFN and every baseline alike::

    model = Baseline(**settings).fit(train)          # train: RatingSet
    model.predict_indices(users, items)               # indices of train's universe -> ratings
    model.score(test)                                 # RMSE, same universe as train

Predictions are clipped to the rating scale, and pairs the model cannot cover (a user or item
without training ratings) fall back to the item / user / global mean: the harness never skips a
test rating.

Scale: every baseline trains on ratings mapped linearly onto the 1..5 scale its defaults were
tuned on (:data:`REFERENCE_SCALE`), and maps its predictions back, just as CFN trains on ratings
normalised to [-1, 1].  On a 1..5 set the map is the identity (exactly the paper's baselines); on
1..100 or -10..10 the defaults (learning rates, ridge penalties, BPMF's noise precision, the
initial factor sizes) see the magnitudes they were tuned for, instead of diverging or scoring
below the global mean.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from cfn_fast.data.ratings import RatingSet
from cfn_fast.fitted.concurrency import mutating, reading
from cfn_fast.metrics import rmse
from cfn_fast.settings import EstimatorParams
from cfn_fast.training.factors import blas_threads, ridge_rows, single_thread_blas

__all__ = [
    "REFERENCE_SCALE",
    "Baseline",
    "GlobalMean",
    "ItemMean",
    "MeanStats",
    "UserItemBias",
    "blas_threads",
    "check_train",
    "ridge_rows",
    "single_thread_blas",
    "to_reference_scale",
]


#: The scale every baseline's defaults assume (MovieLens stars); other scales are mapped onto it.
REFERENCE_SCALE = (1.0, 5.0)


def to_reference_scale(ratings: RatingSet) -> RatingSet:
    """``ratings`` with values mapped linearly from their scale onto :data:`REFERENCE_SCALE`
    (the same object when the scale already is the reference)."""
    low, high = (float(s) for s in ratings.scale)
    if (low, high) == REFERENCE_SCALE:
        return ratings
    ref_low, ref_high = REFERENCE_SCALE
    mapped = ref_low + (ratings.rating.astype(np.float64) - low) * ((ref_high - ref_low) / (high - low))
    return replace(ratings, rating=mapped.astype(np.float32), scale=REFERENCE_SCALE)


def check_train(train: Any) -> RatingSet:
    if not isinstance(train, RatingSet):
        raise TypeError(f"fit expects a RatingSet, got {type(train).__name__}")
    if train.nnz == 0:
        raise ValueError("cannot fit on an empty rating set")
    return train


@dataclass(frozen=True)
class MeanStats:
    """Training means used for fallbacks and centring."""

    global_mean: float
    user_mean: np.ndarray   # global mean where a user has no rating
    item_mean: np.ndarray
    user_count: np.ndarray
    item_count: np.ndarray

    @classmethod
    def of(cls, train: RatingSet) -> MeanStats:
        r = train.rating.astype(np.float64)
        mu = float(r.mean())
        uc = np.bincount(train.user, minlength=train.n_users)
        ic = np.bincount(train.item, minlength=train.n_items)
        us = np.bincount(train.user, weights=r, minlength=train.n_users)
        its = np.bincount(train.item, weights=r, minlength=train.n_items)
        return cls(mu, np.where(uc > 0, us / np.maximum(uc, 1), mu), np.where(ic > 0, its / np.maximum(ic, 1), mu),
                   uc, ic)

    def fallback(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Item mean when the item was rated, else user mean, else global mean."""
        return np.where(self.item_count[items] > 0, self.item_mean[items], self.user_mean[users])


def _restored_on_failure(fit: Any) -> Any:
    @functools.wraps(fit)
    def wrapper(self: Baseline, *args: Any, **kwargs: Any) -> Any:
        with self.attributes_restored_on_failure():
            return fit(self, *args, **kwargs)
    return wrapper


class Baseline(EstimatorParams):
    """Base class: parameters in ``__init__`` (stored as attributes), ``fit`` / ``predict_indices`` / ``score``;
    ``get_params`` and ``repr`` come from :class:`EstimatorParams`, ``set_params`` names the allowed parameters."""

    #: Short name used in the report.
    name: ClassVar[str] = "baseline"
    #: Where the method comes from (reference) and what this implementation changes.
    source: ClassVar[str] = ""
    differences: ClassVar[str] = ""
    #: Names of the constructor parameters (reported as settings).
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One fit at a time per object, and a fit that fails or is interrupted leaves the object as it
        # was (cfn_fast.fitted.concurrency); predictions run concurrently but not during another thread's fit.
        super().__init_subclass__(**kwargs)
        if "fit" in cls.__dict__:
            cls.fit = mutating(_restored_on_failure(cls.__dict__["fit"]))  # type: ignore[method-assign]
        if "predict_indices" in cls.__dict__:
            cls.predict_indices = reading(cls.__dict__["predict_indices"])  # type: ignore[method-assign]

    @contextlib.contextmanager
    def attributes_restored_on_failure(self) -> Iterator[None]:
        """Put back the attributes this object had if the block raises (``KeyboardInterrupt`` included):
        a baseline has no epochs, so its fit either completes or leaves the object as it was."""
        previous = dict(vars(self))
        try:
            yield
        except BaseException:
            vars(self).clear()
            vars(self).update(previous)
            raise

    def set_params(self, **params: Any) -> Baseline:
        for key, value in params.items():
            if key not in self.param_names:
                raise ValueError(f"{type(self).__name__} has no parameter {key!r}; it has {self.param_names}")
            setattr(self, key, value)
        return self

    def fit(self, train: RatingSet) -> Baseline:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train) first")

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _covered(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs the model itself predicts; others take :meth:`MeanStats.fallback`."""
        return (self.stats_.user_count[users] > 0) & (self.stats_.item_count[items] > 0)

    @reading
    def predict_indices(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for user / item indices of the training universe, clipped to the scale."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"users and items must be 1-D arrays of equal length, got {users.shape} and {items.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.train_.n_users
                           or items.min() < 0 or items.max() >= self.train_.n_items):
            raise IndexError("user or item index outside the training universe")
        out = self.stats_.fallback(users, items).astype(np.float64)
        covered = self._covered(users, items)
        if covered.any():
            out[covered] = self._raw_predict(users[covered], items[covered])
        return self._from_reference_scale(out)

    def _from_reference_scale(self, values: np.ndarray) -> np.ndarray:
        """Predictions made on :data:`REFERENCE_SCALE` back on the data's scale, clipped to it."""
        low, high = getattr(self, "scale_", self.train_.scale)
        ref_low, ref_high = REFERENCE_SCALE
        if (low, high) != REFERENCE_SCALE:
            values = low + (values - ref_low) * ((high - low) / (ref_high - ref_low))
        return np.clip(values, low, high)

    def score(self, test: RatingSet) -> float:
        """RMSE on ``test`` (split from the same RatingSet as the training data)."""
        self._check_fitted()
        if not test.same_universe(self.train_):
            raise ValueError("test must share the training set's users and items (split both from one RatingSet)")
        return rmse(self.predict_indices(test.user, test.item), test.rating)

    def _start(self, train: RatingSet) -> RatingSet:
        """Check ``train``, keep its scale in ``scale_`` and return it mapped onto the reference
        scale: the fit trains on that (``train_`` and ``stats_`` are in reference units)."""
        check_train(train)
        self.scale_ = tuple(float(s) for s in train.scale)
        train = to_reference_scale(train)
        self.train_ = train
        self.stats_ = MeanStats.of(train)
        return train


class GlobalMean(Baseline):
    """Every rating predicted by the training mean (the floor every method must clear)."""

    name = "Global mean"
    source = "reference predictor"

    def fit(self, train: RatingSet) -> GlobalMean:
        train = self._start(train)
        return self

    def _covered(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.ones(len(users), dtype=bool)

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.stats_.global_mean)


class ItemMean(Baseline):
    """Each item's training mean (user mean, then global mean, for unrated items)."""

    name = "Item mean"
    source = "reference predictor"

    def fit(self, train: RatingSet) -> ItemMean:
        train = self._start(train)
        return self

    def _covered(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.zeros(len(users), dtype=bool)


class UserItemBias(Baseline):
    """μ + b_u + b_i fitted by a few rounds of regularised alternating means (Koren's baseline predictor)."""

    name = "Bias (μ + b_u + b_i)"
    source = "reference predictor (Koren 2008 baseline estimates)"
    param_names = ("reg", "n_iter")

    def __init__(self, reg: float = 10.0, n_iter: int = 10) -> None:
        self.reg = reg
        self.n_iter = n_iter

    def fit(self, train: RatingSet) -> UserItemBias:
        train = self._start(train)
        mu = self.stats_.global_mean
        r = train.rating.astype(np.float64) - mu
        bu = np.zeros(train.n_users)
        bi = np.zeros(train.n_items)
        for _ in range(int(self.n_iter)):
            bi = np.bincount(train.item, r - bu[train.user], train.n_items) / (self.stats_.item_count + self.reg)
            bu = np.bincount(train.user, r - bi[train.item], train.n_users) / (self.stats_.user_count + self.reg)
        self.mu_, self.bu_, self.bi_ = mu, bu, bi
        return self

    def _covered(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.ones(len(users), dtype=bool)

    def estimate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """μ + b_u + b_i for index arrays, unclipped and in the reference scale (what models built on the
        bias, such as LLORMA, add their residuals to)."""
        return self.mu_ + self.bu_[users] + self.bi_[items]

    def _raw_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.estimate(users, items)


# ----------------------------------------------------------------------------- ridge solver
