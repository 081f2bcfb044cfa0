"""The CFN estimator: U-CFN / I-CFN (and CFN++ with side information) behind a scikit-learn-like API."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .backends import TrainConfig, engine_class, resolve_backend
from .backends.base import Engine
from .data.ratings import RatingSet
from .defaults import DEFAULTS
from .metrics import rmse
from .network import Layer, init_layers
from .preprocessing import Preprocessing, sample_axes
from .trainer import Callback, EarlyStopping, EpochRecord, run_epochs

__all__ = ["CFN", "DEFAULTS", "NotFittedError"]

log = logging.getLogger("cfn_fast")


class NotFittedError(RuntimeError):
    """The model must be fitted before this call."""


class CFN:
    """Collaborative Filtering Network (Strub, Mary & Gaudel 2016): a denoising autoencoder that
    completes a sparse rating matrix, optionally with side information in every layer (CFN++).

    Parameters
    ----------
    kind : ``"item"`` (I-CFN: one sample per item, over users) or ``"user"`` (U-CFN).
    hidden : widths of the hidden layers, e.g. ``(600,)`` or ``(700, 500)``.
    epochs : number of training epochs for :meth:`fit`.
    alpha, beta : loss weights of hidden (masked) and visible known entries.
    mask_ratio : probability that a known input entry is masked in a mini-batch.
    lr, lr_decay : learning rate schedule ``lr / (1 + epoch·lr_decay)``.
    weight_decay : λ applied to every parameter at every step.
    batch_size : samples per mini-batch.
    backend : ``"auto"``, ``"numpy"`` (reference), ``"cpu"`` (Cython) or ``"cuda"``.
    use_side_info : use the sample side's features (users for U-CFN, items for I-CFN) when given.
    seed : seeds initialisation, batch order and corruption (runs are deterministic for a seed).
    verbose : 0 silent, 1 progress bar, 2 also a log line per epoch.

    ``None`` hyper-parameters take the per-kind :data:`DEFAULTS`.
    """

    def __init__(self, kind: str = "item", hidden: Sequence[int] = (600,), epochs: int = 20, *,
                 alpha: float | None = None, beta: float | None = None, mask_ratio: float | None = None,
                 lr: float | None = None, lr_decay: float | None = None, weight_decay: float | None = None,
                 batch_size: int | None = None, backend: str = "auto", use_side_info: bool = True,
                 seed: int = 0, verbose: int = 0) -> None:
        self.kind = kind
        self.hidden = hidden
        self.epochs = epochs
        self.alpha = alpha
        self.beta = beta
        self.mask_ratio = mask_ratio
        self.lr = lr
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.backend = backend
        self.use_side_info = use_side_info
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------ configuration
    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in
                ("kind", "hidden", "epochs", "alpha", "beta", "mask_ratio", "lr", "lr_decay", "weight_decay",
                 "batch_size", "backend", "use_side_info", "seed", "verbose")}

    def set_params(self, **params: Any) -> "CFN":
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"CFN({args})"

    def resolved_params(self) -> dict[str, Any]:
        """Hyper-parameters with per-kind defaults filled in, validated."""
        if self.kind not in DEFAULTS:
            raise ValueError(f"kind must be 'item' or 'user', got {self.kind!r}")
        defaults = DEFAULTS[self.kind]
        p = {name: getattr(self, name) if getattr(self, name) is not None else getattr(defaults, name)
             for name in defaults.__dataclass_fields__}
        hidden = tuple(int(h) for h in np.atleast_1d(self.hidden))
        _check(len(hidden) >= 1 and all(h >= 1 for h in hidden), "hidden", self.hidden,
               "a non-empty sequence of positive widths")
        _check(isinstance(self.epochs, (int, np.integer)) and self.epochs >= 0, "epochs", self.epochs,
               "a non-negative integer")
        for name in ("alpha", "beta", "weight_decay", "lr_decay"):
            _check(np.isfinite(p[name]) and p[name] >= 0, name, p[name], "a finite number >= 0")
        _check(np.isfinite(p["lr"]) and p["lr"] > 0, "lr", p["lr"], "a finite number > 0")
        _check(0 <= p["mask_ratio"] < 1, "mask_ratio", p["mask_ratio"], "in [0, 1)")
        _check(p["alpha"] + p["beta"] > 0, "alpha + beta", p["alpha"] + p["beta"], "> 0")
        _check(int(p["batch_size"]) == p["batch_size"] and p["batch_size"] >= 1, "batch_size", p["batch_size"],
               "a positive integer")
        _check(p["lr"] * p["weight_decay"] < 1, "lr * weight_decay", p["lr"] * p["weight_decay"],
               "< 1 (otherwise weight decay flips the sign of the weights)")
        p["batch_size"] = int(p["batch_size"])
        p["hidden"] = hidden
        return p

    # ------------------------------------------------------------------ training
    def fit(self, train: RatingSet, user_features: Any = None, item_features: Any = None,
            validation: RatingSet | None = None, *, early_stopping: EarlyStopping | None = None,
            callbacks: Sequence[Callback] = ()) -> "CFN":
        """Train from scratch on ``train`` for ``epochs`` epochs.

        ``user_features`` / ``item_features`` override the side information stored in
        ``train``; only the sample side's (users for U-CFN, items for I-CFN) is used.
        ``validation`` (same id universe) is scored after every epoch into ``history_``.
        """
        if not isinstance(train, RatingSet):
            raise TypeError(f"fit expects a RatingSet, got {type(train).__name__}")
        p = self.resolved_params()
        if validation is not None and not validation.same_universe(train):
            raise ValueError("validation must share train's users and items (split both from one RatingSet)")
        self.backend_ = resolve_backend(self.backend)
        self.train_ = train
        self.preprocessing_ = Preprocessing.fit(self.kind, train)
        self.inputs_ = self.preprocessing_.centred_matrix(train)
        self.side_ = self._select_side(train, user_features, item_features)
        side_dim = 0 if self.side_ is None else self.side_.shape[1]
        layers = init_layers(self.inputs_.shape[1], p["hidden"], side_dim, self.seed)
        self.engine_ = self._make_engine(layers, p)
        self.history_: list[EpochRecord] = []
        self.epochs_trained_ = 0
        self._validation = validation
        return self._train(self.epochs, p, early_stopping, callbacks)

    def partial_fit(self, epochs: int = 1, *, early_stopping: EarlyStopping | None = None,
                    callbacks: Sequence[Callback] = ()) -> "CFN":
        """Continue training the fitted model for ``epochs`` more epochs (the lr schedule goes on)."""
        self._check_fitted()
        return self._train(epochs, self.resolved_params(), early_stopping, callbacks)

    def _train(self, epochs: int, p: dict[str, Any], early_stopping: EarlyStopping | None,
               callbacks: Sequence[Callback]) -> "CFN":
        if early_stopping is not None and self._validation is None:
            raise ValueError("early_stopping needs a validation set: fit(..., validation=...)")
        evaluate = None if self._validation is None else (lambda: self.score(self._validation))
        records = run_epochs(self.engine_, first_epoch=self.epochs_trained_ + 1, epochs=epochs,
                             lr=p["lr"], lr_decay=p["lr_decay"], n_known=max(self.inputs_.nnz, 1),
                             evaluate=evaluate, early_stopping=early_stopping, callbacks=tuple(callbacks),
                             progress=self.verbose >= 1)
        self.history_.extend(records)
        self.epochs_trained_ += len(records)
        self.layers_ = self.engine_.get_layers()
        return self

    def _make_engine(self, layers: list[Layer], p: dict[str, Any]) -> Engine:
        config = TrainConfig(alpha=float(p["alpha"]), beta=float(p["beta"]), mask_ratio=float(p["mask_ratio"]),
                             weight_decay=float(p["weight_decay"]), batch_size=p["batch_size"], seed=int(self.seed))
        return engine_class(self.backend_)(layers, config, self.inputs_, self.side_)

    def _select_side(self, train: RatingSet, user_features: Any, item_features: Any) -> np.ndarray | None:
        if not self.use_side_info:
            return None
        if self.kind == "user":
            given, stored, n, what = user_features, train.user_features, train.n_users, "user_features"
        else:
            given, stored, n, what = item_features, train.item_features, train.n_items, "item_features"
        features = stored if given is None else given
        if features is None:
            return None
        if sp.issparse(features):
            features = features.toarray()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != n:
            raise ValueError(f"{what} must have shape ({n}, n_features) for this data set, got {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ValueError(f"{what} contains NaN or infinite values")
        return np.ascontiguousarray(features)

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "engine_"):
            raise NotFittedError("this CFN model is not fitted yet: call fit(train) first")

    def predict(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Predicted ratings for pairs of original ``user_ids`` and ``item_ids`` (clipped to the scale).

        Unknown ids raise ``KeyError``; use :meth:`fold_in` for users or items not seen in training.
        """
        self._check_fitted()
        users = self.train_.user_index(user_ids)
        items = self.train_.item_index(item_ids)
        if len(users) != len(items):
            raise ValueError(f"user_ids and item_ids differ in length: {len(users)} and {len(items)}")
        return self.predict_indices(users, items)

    def predict_indices(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for pairs of user and item *indices* of the training RatingSet."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        samples, inputs = (users, items) if self.kind == "user" else (items, users)
        outputs = np.zeros(len(samples), dtype=np.float32)
        if len(samples) == 0:
            return outputs.astype(np.float64)
        counts = self.preprocessing_.sample_count[samples]
        # cold samples (no training ratings) are predicted from side information when there is some
        use_net = (counts > 0) | (self.side_ is not None)
        if use_net.any():
            outputs[use_net] = self.engine_.predict_entries(self.inputs_, self.side_, samples[use_net],
                                                            inputs[use_net])
        ratings = self.preprocessing_.to_rating(samples, outputs)
        fallback = ~use_net
        if fallback.any():
            ratings[fallback] = self._input_mean_rating(inputs[fallback])
        return ratings

    def _input_mean_rating(self, inputs: np.ndarray) -> np.ndarray:
        """Mean training rating of each input (user for I-CFN, item for U-CFN); global mean if none."""
        if not hasattr(self, "_input_means"):
            pre = self.preprocessing_
            csc = self.inputs_.tocsc()
            counts = np.diff(csc.indptr)
            unit = self.inputs_.copy()
            unit.data = unit.data + np.repeat(pre.sample_mean, np.diff(self.inputs_.indptr))
            sums = np.asarray(unit.sum(axis=0)).ravel()
            means = np.where(counts > 0, sums / np.maximum(counts, 1), pre.global_mean)
            self._input_means = np.clip(pre.mid + pre.half_range * means, pre.low, pre.high)
        return self._input_means[inputs]

    def score(self, test: RatingSet) -> float:
        """RMSE in rating units on ``test`` (ids matched by original id, or by index on the same universe)."""
        self._check_fitted()
        if test.same_universe(self.train_):
            predicted = self.predict_indices(test.user, test.item)
        else:
            predicted = self.predict(test.user_ids[test.user], test.item_ids[test.item])
        return rmse(predicted, test.rating)


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
