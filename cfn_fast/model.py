"""The CFN estimator: U-CFN / I-CFN (and CFN++ with side information) behind a scikit-learn-like API.

Beyond ``fit`` / ``predict`` / ``score`` the estimator offers the product surface:
:meth:`CFN.recommend` / :meth:`CFN.recommend_batch` (top-n lists), :meth:`CFN.fold_in` (score a
new user in U-CFN or a new item in I-CFN without retraining), :meth:`CFN.save` /
:meth:`CFN.load` (one versioned, checksummed ``.npz``), :meth:`CFN.partial_fit`, per-epoch
``history_``, callbacks, early stopping and divergence detection.
"""
from __future__ import annotations

import logging
import math
import numbers
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from ._concurrency import ModelBusyError, mutating, reading
from . import interop
from . import state as _state
from ._params import EstimatorParams
from .backends import TrainConfig, engine_class, resolve_backend
from .backends.base import Engine
from .data.labelled import align_rows, align_vector, check_parallel
from .profiling import engine_for_training
from .data.ratings import RatingSet, build_csr
from .data.side_info import as_feature_matrix
from .defaults import DEFAULTS, density_step_factor
from .metrics import rmse
from .network import Layer, init_layers, layer_sizes
from .preprocessing import CENTRINGS, Preprocessing
from .recommend import DEFAULT_MIN_SUPPORT, FoldIn, check_min_support, top_n
from .trainer import Callback, DivergenceRule, EarlyStopping, EpochRecord, TrainingDiverged, run_epochs

__all__ = ["CFN", "DEFAULTS", "NotFittedError", "DeviceOutOfMemory", "FoldInError", "TrainingDiverged",
           "EarlyStopping", "DivergenceRule", "ModelBusyError"]

log = logging.getLogger("cfn_fast")

#: Floor of the mean squared centred rating used by the divergence rule (see :mod:`cfn_fast.trainer`).
_REFERENCE_FLOOR = 0.1
_AUTO = "auto"


class NotFittedError(RuntimeError):
    """The model must be fitted before this call."""


class DeviceOutOfMemory(MemoryError, RuntimeError):
    """An engine ran out of (GPU) memory.  Raised instead of CuPy's ``OutOfMemoryError``; names the
    data size and suggests a smaller ``batch_size`` / ``hidden`` or the ``cpu`` backend."""


class FoldInError(ValueError):
    """The requested fold-in is impossible for this kind of model (e.g. a new user in I-CFN)."""


@_state.register_model_class
class CFN(_state.PortableModel, EstimatorParams):
    """Collaborative Filtering Network (Strub, Mary & Gaudel 2016): a denoising autoencoder that
    completes a sparse rating matrix, optionally with side information in every layer (CFN++).

    Parameters
    ----------
    kind : ``"item"`` (I-CFN: one sample per item, over users), ``"user"`` (U-CFN) or ``"auto"``
        (chosen at fit, with the centring, on a validation part of the training set by
        :func:`cfn_fast.selection.select_kind`; the choice is ``kind_`` / ``centring_``, the
        validation scores ``selection_``; costs up to four extra fits on 90 % of the data).
    hidden : widths of the hidden layers, e.g. ``(600,)`` or ``(700, 500)``.
    epochs : number of training epochs for :meth:`fit`.
    centring : what the network's values are centred by (:mod:`cfn_fast.preprocessing`):
        ``"sample"``, the paper's (each sample's own mean), or ``"bias"``, the regularised bias
        model ``μ + b_u + b_i`` (the network learns its residuals; better on sparse data).  ``None``:
        ``"sample"`` for an explicit kind, chosen on validation for ``kind="auto"``.
    alpha, beta : loss weights of hidden (masked) and visible known entries.
    mask_ratio : probability that a known input entry is masked in a mini-batch.
    lr, lr_decay : learning rate schedule ``lr / (1 + epoch·lr_decay)``.
    weight_decay : λ applied to every parameter at every step.
    batch_size : samples per mini-batch.
    backend : ``"auto"``, ``"numpy"`` (reference), ``"cpu"`` (Cython) or ``"cuda"``.
    use_side_info : use the sample side's features (users for U-CFN, items for I-CFN) when given.
    seed : seeds initialisation, batch order and corruption (runs are deterministic for a seed).
    verbose : 0 silent, 1 tqdm progress bar, 2 also one line per epoch (logged at INFO on the
        ``"cfn_fast"`` logger, or written to stderr when logging is not configured).
    profile : time every phase of every mini-batch into ``profile_`` (a
        :class:`~cfn_fast.profiling.Profile`: table, JSON, Chrome trace) and push NVTX ranges;
        see :mod:`cfn_fast.profiling`.

    ``None`` hyper-parameters take the per-kind :data:`DEFAULTS`; a default ``lr`` is scaled
    down on data denser than ML-1M (:func:`cfn_fast.defaults.density_step_factor`), an explicit
    ``lr`` is used as given.

    Fitted attributes: ``kind_`` (the kind trained), ``centring_``, ``selection_`` (a
    :class:`~cfn_fast.selection.KindChoice` for ``kind="auto"``, else None), ``history_`` (one :class:`~cfn_fast.trainer.EpochRecord` per epoch: epoch,
    lr, train_loss, validation_rmse, seconds), ``epochs_trained_``, ``best_epoch_`` (with early
    stopping), ``backend_``, ``layers_``, ``train_``, ``preprocessing_``.

    What each kind can score without retraining: U-CFN folds in **new users** (a user is a
    sample, its ratings over known items are the input); I-CFN folds in **new items**.  A new
    user of an I-CFN (or a new item of a U-CFN) is an *input dimension* of the autoencoder and
    cannot be added without retraining.
    """

    param_names = ("kind", "centring", "hidden", "epochs", "alpha", "beta", "mask_ratio", "lr", "lr_decay", "weight_decay",
                   "batch_size", "backend", "use_side_info", "seed", "verbose", "profile")

    def __init__(self, kind: str = "item", hidden: Sequence[int] = (600,), epochs: int = 20, *,
                 centring: str | None = None,
                 alpha: float | None = None, beta: float | None = None, mask_ratio: float | None = None,
                 lr: float | None = None, lr_decay: float | None = None, weight_decay: float | None = None,
                 batch_size: int | None = None, backend: str = "auto", use_side_info: bool = True,
                 seed: int = 0, verbose: int = 0, profile: bool = False) -> None:
        self.kind = kind
        self.centring = centring
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
        self.profile = profile

    def resolved_params(self) -> dict[str, Any]:
        """Hyper-parameters with per-kind defaults filled in, validated (``ValueError`` naming the
        parameter, the allowed range and the value given)."""
        if not isinstance(self.kind, str) or (self.kind not in DEFAULTS and self.kind != _AUTO):
            raise ValueError(f"kind must be 'item', 'user' or 'auto', got {self.kind!r}")
        # before fit, "auto" is validated against the item defaults; fit resolves it again
        kind = self.kind if self.kind != _AUTO else getattr(self, "kind_", "item")
        defaults = DEFAULTS[kind]
        p = {name: getattr(self, name) if getattr(self, name) is not None else getattr(defaults, name)
             for name in defaults.__dataclass_fields__}
        if self.lr is None and hasattr(self, "inputs_"):  # the default step adapts to the data's density
            p["lr"] = p["lr"] * density_step_factor(kind, _known_per_sample(self.inputs_))
        p["hidden"] = _check_hidden(self.hidden)
        _check(_is_int(self.epochs) and self.epochs >= 0, "epochs", self.epochs, "an integer >= 0")
        for name in ("alpha", "beta", "weight_decay", "lr_decay"):
            _check(_is_real(p[name]) and _finite(p[name]) and p[name] >= 0, name, p[name],
                   "a finite number >= 0")
        _check(_is_real(p["lr"]) and _finite(p["lr"]) and p["lr"] > 0, "lr", p["lr"], "a finite number > 0")
        _check(_is_real(p["mask_ratio"]) and 0 <= p["mask_ratio"] < 1, "mask_ratio", p["mask_ratio"],
               "a number in [0, 1)")
        _check(p["alpha"] + p["beta"] > 0, "alpha + beta", p["alpha"] + p["beta"], "> 0")
        _check(_is_real(p["batch_size"]) and _finite(p["batch_size"]) and int(p["batch_size"]) == p["batch_size"]
               and p["batch_size"] >= 1, "batch_size", p["batch_size"], "a positive integer")
        _check(p["lr"] * p["weight_decay"] < 1, "lr * weight_decay", p["lr"] * p["weight_decay"],
               "< 1 (otherwise weight decay flips the sign of the weights)")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check((_is_int(self.verbose) or isinstance(self.verbose, bool)) and self.verbose >= 0, "verbose",
               self.verbose, "an integer >= 0")
        _check(isinstance(self.use_side_info, (bool, np.bool_)), "use_side_info", self.use_side_info,
               "True or False")
        _check(isinstance(self.profile, (bool, np.bool_)), "profile", self.profile, "True or False")
        _check(isinstance(self.backend, str), "backend", self.backend, "'auto', 'numpy', 'cpu' or 'cuda'")
        _check(self.centring is None or (isinstance(self.centring, str) and self.centring in CENTRINGS),
               "centring", self.centring, "None, 'sample' or 'bias'")
        for name in ("alpha", "beta", "mask_ratio", "lr", "lr_decay", "weight_decay"):
            p[name] = float(p[name])
        p["batch_size"] = int(p["batch_size"])
        p["kind"] = kind
        return p

    # ------------------------------------------------------------------ training
    @mutating
    def fit(self, train: RatingSet, user_features: Any = None, item_features: Any = None,
            validation: RatingSet | None = None, *, early_stopping: EarlyStopping | None = None,
            callbacks: Sequence[Callback] = (), divergence: DivergenceRule | str | None = _AUTO,
            initial_layers: Sequence[Layer] | None = None) -> "CFN":
        """Train from scratch on ``train`` for ``epochs`` epochs.

        ``user_features`` / ``item_features`` override the side information stored in
        ``train``; only the sample side's (users for U-CFN, items for I-CFN) is used.
        ``validation`` (same id universe) is scored after every epoch into ``history_``.
        ``callbacks`` are called with each epoch's record; one returning True stops training.
        ``early_stopping`` (needs ``validation``) stops when validation RMSE stalls and restores
        the best epoch.  ``divergence``: the :class:`~cfn_fast.trainer.DivergenceRule` (default:
        the documented rule; ``None`` checks only for a non-finite loss).  A diverging run raises
        :class:`~cfn_fast.trainer.TrainingDiverged` and leaves the last good epoch's weights.
        ``initial_layers`` (a warm start, e.g. the stacked layers of :class:`~cfn_fast.StackedCFN`)
        replaces the random initialisation; their shapes must match ``hidden`` and the side information.

        Users or items with no training ratings are allowed: they are predicted through side
        information when there is some, else by the mean rating of the other side (see
        :meth:`predict_indices`).
        """
        if not isinstance(train, RatingSet):
            hint = " (build one with RatingSet.from_dataframe)" if type(train).__name__ == "DataFrame" else \
                " (build one with RatingSet.from_arrays(user, item, rating))"
            raise TypeError(f"fit expects a RatingSet as train, got {type(train).__name__}{hint}")
        if validation is not None and not isinstance(validation, RatingSet):
            raise TypeError(f"validation must be a RatingSet or None, got {type(validation).__name__}")
        p = self.resolved_params()
        backend = resolve_backend(self.backend)
        _validate_rating_set(train, "train")
        if validation is not None:
            _validate_rating_set(validation, "validation")
            if not validation.same_universe(train):
                raise ValueError("validation must share train's users and items (split both from one RatingSet)")
        previous = dict(self.__dict__)
        try:
            self.kind_, centring = self._resolve_kind(train, user_features, item_features, validation, divergence)
            side = self._select_side(train, user_features, item_features)
            preprocessing = Preprocessing.fit(self.kind_, train, centring)
            inputs = preprocessing.centred_matrix(train)
            _check_no_duplicate_entries(inputs, self.kind_)
            self.backend_ = backend
            self.train_ = train
            self.preprocessing_ = preprocessing
            self.inputs_ = inputs
            p = self.resolved_params()  # again, now that the kind and the data's density are known
            self.side_ = side
            self._clear_caches()
            side_dim = 0 if side is None else side.shape[1]
            if initial_layers is None:
                layers = init_layers(inputs.shape[1], p["hidden"], side_dim, self.seed)
            else:
                layers = _checked_initial_layers(initial_layers, inputs.shape[1], p["hidden"], side_dim)
            self.engine_ = self._make_engine(layers, p)
            del layers  # the engine holds its own copy; don't keep a second one through training
            self.layers_ = self.engine_.get_layers()
            self.history_: list[EpochRecord] = []
            self.epochs_trained_ = 0
            self.best_epoch_: int | None = None
            self.profile_ = None
            self._validation = validation
        except BaseException:  # an interrupt or error before training starts leaves the object as it was
            self.__dict__.clear()
            self.__dict__.update(previous)
            raise
        return self._train(self.epochs, p, early_stopping, callbacks, divergence)

    @property
    def centring_(self) -> str:
        """The centring trained (fitted attribute): the fitted preprocessing's."""
        if "preprocessing_" not in self.__dict__:
            raise AttributeError("centring_: this CFN is not fitted yet")
        return self.preprocessing_.centring

    def _resolve_kind(self, train: RatingSet, user_features: Any, item_features: Any,
                      validation: RatingSet | None, divergence: Any) -> tuple[str, str]:
        """``(kind, centring)`` to train: as given, or for ``kind="auto"`` chosen on a validation run."""
        if self.kind != _AUTO:
            self.selection_ = None
            return self.kind, self.centring or "sample"
        from .selection import select_kind  # the selection trains candidate CFNs: imported on use
        choice = select_kind(self, train, user_features, item_features, divergence, validation)
        self.selection_ = choice
        log.info("kind='auto' chose %s", choice.summary())
        return choice.kind, choice.centring

    @mutating
    def partial_fit(self, epochs: int = 1, *, validation: RatingSet | None = None,
                    early_stopping: EarlyStopping | None = None, callbacks: Sequence[Callback] = (),
                    divergence: DivergenceRule | str | None = _AUTO) -> "CFN":
        """Continue training the fitted (or loaded) model for ``epochs`` more epochs; the lr
        schedule and the epoch numbering go on, so ``fit`` for 3 epochs equals ``fit`` for 2
        then ``partial_fit(1)``.  ``validation`` replaces the validation set given to ``fit``."""
        self._check_fitted()
        _check(_is_int(epochs) and epochs >= 0, "epochs", epochs, "an integer >= 0")
        if validation is not None:
            if not isinstance(validation, RatingSet):
                raise TypeError(f"validation must be a RatingSet or None, got {type(validation).__name__}")
            _validate_rating_set(validation, "validation")
            if not validation.same_universe(self.train_):
                raise ValueError("validation must share train's users and items (split both from one RatingSet)")
            self._validation = validation
        p = self.resolved_params()
        self._sync_engine(p)
        return self._train(int(epochs), p, early_stopping, callbacks, divergence)

    def _sync_engine(self, p: dict[str, Any]) -> None:
        """Settings changed since the engine was built (``set_params`` after ``fit``, population-based
        training) take effect: the engine is rebuilt from the canonical layers with the new
        :class:`TrainConfig`, so it equals a fresh engine with those settings (lr and lr_decay come
        per epoch and need no rebuild).  The architecture cannot change without refitting."""
        fitted = {"kind": self.kind_, "centring": self.centring_}
        for name, value in (("kind", self.kind), ("centring", self.centring)):
            if value not in (None, _AUTO, fitted[name]):  # the data the network learned cannot change
                raise ValueError(f"{name}={value!r} does not match the fitted model ({name} {fitted[name]!r}); "
                                 f"call fit to train a new one")
        sizes = [layer.weight.shape[::-1] for layer in self.layers_]
        if sizes != layer_sizes(self.inputs_.shape[1], p["hidden"]):
            raise ValueError(f"hidden={p['hidden']} does not match the fitted network; call fit to train a new one")
        if self.engine_.config != self._train_config(p):
            self.engine_ = self._make_engine([layer.copy() for layer in self.layers_], p)

    def _train(self, epochs: int, p: dict[str, Any], early_stopping: EarlyStopping | None,
               callbacks: Sequence[Callback], divergence: DivergenceRule | str | None) -> "CFN":
        validation = getattr(self, "_validation", None)
        if early_stopping is not None and validation is None:
            raise ValueError("early_stopping needs a validation set: fit(..., validation=...)")
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}")
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables taking an EpochRecord, got {cb!r}")
        evaluate = None if validation is None else (lambda: self.score(validation))
        report: dict[str, Any] = {}
        self._clear_caches()
        try:
            with self._memory_guard("training"):
                run_epochs(engine_for_training(self), first_epoch=self.epochs_trained_ + 1, epochs=epochs,
                           lr=p["lr"], lr_decay=p["lr_decay"], n_known=max(self.inputs_.nnz, 1),
                           evaluate=evaluate, early_stopping=early_stopping, callbacks=callbacks,
                           progress=self.verbose >= 1, divergence=self._divergence_rule(divergence, p),
                           history=self.history_, log_level=logging.INFO if self.verbose >= 2 else logging.DEBUG,
                           echo=self.verbose >= 2, report=report)
        finally:
            self.epochs_trained_ = self.history_[-1].epoch if self.history_ else 0
            # The engine goes on from the canonical float32 parameters it exports (an engine may keep
            # another representation, e.g. a folded weight-decay scale): predictions are then a
            # function of ``layers_`` alone, identical after save/load, and partial_fit resumes
            # from exactly what a saved model holds.
            self.layers_ = self.engine_.get_layers()
            self.engine_.set_layers(self.layers_)
            self._clear_caches()
        if report.get("best_epoch") is not None:
            self.best_epoch_ = report["best_epoch"]
        return self

    def _divergence_rule(self, divergence: DivergenceRule | str | None, p: dict[str, Any]) -> DivergenceRule | None:
        """The rule with its reference loss: α·mask + β·(1 − mask) times the larger of the mean squared
        centred rating (the zero output: each sample predicted by its mean) and the current network's
        mean squared error on (up to 1000) training samples, floored at ``_REFERENCE_FLOOR``."""
        if divergence is None:
            return None
        if isinstance(divergence, str) and divergence == _AUTO:
            divergence = DivergenceRule()
        if not isinstance(divergence, DivergenceRule):
            raise TypeError(f"divergence must be a DivergenceRule, 'auto' or None, got {divergence!r}")
        if divergence.reference_loss is not None:
            return divergence
        weight = p["alpha"] * p["mask_ratio"] + p["beta"] * (1.0 - p["mask_ratio"])
        return DivergenceRule(reference_loss=weight * self._reference_mse(),
                              loss_factor=divergence.loss_factor, max_abs_param=divergence.max_abs_param)

    def _reference_mse(self, max_samples: int = 1000) -> float:
        inputs = self.inputs_
        if inputs.nnz == 0:
            return _REFERENCE_FLOOR
        zero_output = float(np.mean(inputs.data.astype(np.float64) ** 2))
        trainable = np.flatnonzero(np.diff(inputs.indptr) > 0)
        if len(trainable) > max_samples:
            trainable = np.sort(np.random.default_rng(self.seed).choice(trainable, max_samples, replace=False))
        counts = np.diff(inputs.indptr)[trainable]
        rows = np.repeat(trainable, counts)
        sub = inputs[trainable]
        with self._memory_guard("measuring the initial loss"):
            output = self.engine_.predict_entries(inputs, self.side_, rows, sub.indices)
        network = float(np.mean((np.asarray(output, dtype=np.float64) - sub.data) ** 2))
        return max(zero_output, network if np.isfinite(network) else 0.0, _REFERENCE_FLOOR)

    def _train_config(self, p: dict[str, Any]) -> TrainConfig:
        return TrainConfig(alpha=float(p["alpha"]), beta=float(p["beta"]), mask_ratio=float(p["mask_ratio"]),
                           weight_decay=float(p["weight_decay"]), batch_size=p["batch_size"], seed=int(self.seed))

    def _make_engine(self, layers: list[Layer], p: dict[str, Any]) -> Engine:
        config = self._train_config(p)
        with self._memory_guard("building the engine"):
            return engine_class(self.backend_)(layers, config, self.inputs_, self.side_)

    @contextmanager
    def _memory_guard(self, action: str) -> Iterator[None]:
        """Turn a backend's out-of-memory error (any exception class named ``OutOfMemoryError``,
        e.g. CuPy's) into :class:`DeviceOutOfMemory` naming the data size and what to try."""
        try:
            yield
        except Exception as exc:
            if not any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
                raise
            inputs = self.inputs_
            side = 0 if self.side_ is None else self.side_.shape[1]
            try:
                p = self.resolved_params()
                hidden, batch = p["hidden"], p["batch_size"]
            except ValueError:  # pragma: no cover - params validated before any engine runs
                hidden, batch = self.hidden, self.batch_size
            raise DeviceOutOfMemory(
                f"backend {self.backend_!r} ran out of memory while {action}: {inputs.shape[0]:,} x "
                f"{inputs.shape[1]:,} rating matrix with {inputs.nnz:,} ratings, hidden {tuple(hidden)}, "
                f"batch_size {batch}, {side} side features. Try a smaller batch_size or hidden, "
                f"or backend='cpu' ({exc})") from exc

    def _select_side(self, train: RatingSet, user_features: Any, item_features: Any) -> np.ndarray | None:
        # a pandas DataFrame / Series is aligned on its index to the rating set's ids
        user_features = align_rows(user_features, train.user_ids, "user_features", "user")
        item_features = align_rows(item_features, train.item_ids, "item_features", "item")
        if self.kind_ == "user":
            given, stored, n, what = user_features, train.user_features, train.n_users, "user_features"
        else:
            given, stored, n, what = item_features, train.item_features, train.n_items, "item_features"
        for name, value, rows in (("user_features", user_features, train.n_users),
                                  ("item_features", item_features, train.n_items)):
            if value is not None:  # validate both, even the side this kind does not use
                _as_features(value, rows, name)
        _warn_unused_side(self.kind_, user_features, item_features)
        if not self.use_side_info:
            return None
        features = stored if given is None else given
        if features is None:
            return None
        return _as_features(features, n, what)

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if "_engine" not in self.__dict__ and not _state.is_fitted(self):
            raise NotFittedError("this CFN model is not fitted yet: call fit(train) first")

    def _clear_caches(self) -> None:
        for name in ("_codes", "_input_means", "_seen"):
            self.__dict__.pop(name, None)

    @reading
    def predict(self, user_ids: Any, item_ids: Any, *, output: str = "numpy", stream: Any = None) -> Any:
        """Predicted ratings for pairs of original ``user_ids`` and ``item_ids`` (clipped to the scale).

        Unknown ids raise ``KeyError``; use :meth:`fold_in` for users (U-CFN) or items (I-CFN)
        not seen in training.  Ids may be any array (NumPy, PyTorch, JAX, CuPy, ...; see
        :mod:`cfn_fast.interop`); ``output`` picks the result's library (``"like"``: that of
        ``user_ids``); ``stream`` (cuda backend) is the caller's CUDA stream to run on.
        """
        self._check_fitted()
        interop.check_output(output)
        check_parallel({"user_ids": user_ids, "item_ids": item_ids})
        from .encoding import stream_scope
        with stream_scope(self, stream):  # device ids are copied to the host on the caller's stream
            users = self._ids_to_index(user_ids, "user")
            items = self._ids_to_index(item_ids, "item")
            if len(users) != len(items):
                raise ValueError(f"user_ids and item_ids differ in length: {len(users)} and {len(items)}")
            ratings = self._predict_index_pairs(users, items)
        return interop.to_output(ratings, output, interop.origin_of(user_ids))

    def _ids_to_index(self, ids: Any, side: str) -> np.ndarray:
        ids = interop.to_host(ids)
        lookup = self.train_.user_index if side == "user" else self.train_.item_index
        try:
            return lookup(ids)
        except KeyError as exc:
            text = exc.args[0] if exc.args else str(exc)
            if side == ("user" if self.kind_ == "user" else "item"):
                hint = f"use fold_in to score a new {side} without retraining"
            else:
                hint = (f"a new {side} is an input dimension of this {'U' if self.kind_ == 'user' else 'I'}-CFN "
                        f"and needs retraining")
            raise KeyError(f"{text} ({hint})") from None

    @reading
    def predict_indices(self, users: Any, items: Any, *, output: str = "numpy", stream: Any = None) -> Any:
        """Predicted ratings for pairs of user and item *indices* of the training RatingSet.

        A sample (user for U-CFN, item for I-CFN) with no training ratings is predicted from its
        side information when the model has some, otherwise by the mean training rating of the
        input (the item's mean for U-CFN, the user's for I-CFN; the global mean if that has none).
        ``output`` / ``stream`` as in :meth:`predict` (``"like"``: the library of ``users``).
        """
        self._check_fitted()
        interop.check_output(output)
        from .encoding import stream_scope
        with stream_scope(self, stream):
            ratings = self._predict_index_pairs(users, items)
        return interop.to_output(ratings, output, interop.origin_of(users))

    def _predict_index_pairs(self, users: Any, items: Any) -> np.ndarray:
        users = _as_index(users, self.train_.n_users, "user")
        items = _as_index(items, self.train_.n_items, "item")
        if len(users) != len(items):
            raise ValueError(f"users and items differ in length: {len(users)} and {len(items)}")
        samples, inputs = (users, items) if self.kind_ == "user" else (items, users)
        outputs = np.zeros(len(samples), dtype=np.float32)
        if len(samples) == 0:
            return outputs.astype(np.float64)
        counts = self.preprocessing_.sample_count[samples]
        # cold samples (no training ratings) are predicted from side information when there is some
        use_net = (counts > 0) | (self.side_ is not None)
        if use_net.any():
            with self._memory_guard("predicting"):
                outputs[use_net] = self.engine_.predict_entries(self.inputs_, self.side_, samples[use_net],
                                                                inputs[use_net])
        ratings = self.preprocessing_.to_rating(samples, outputs, inputs)
        fallback = ~use_net
        if fallback.any():
            ratings[fallback] = self._input_mean_rating(inputs[fallback])
        return ratings

    def _input_mean_rating(self, inputs: np.ndarray) -> np.ndarray:
        """Mean training rating of each input (item for U-CFN, user for I-CFN); global mean if none."""
        def compute() -> np.ndarray:
            pre, train = self.preprocessing_, self.train_
            index, n = (train.item, train.n_items) if self.kind_ == "user" else (train.user, train.n_users)
            counts = np.bincount(index, minlength=n)
            sums = np.bincount(index, weights=train.rating.astype(np.float64), minlength=n)
            global_rating = pre.mid + pre.half_range * pre.global_mean
            means = np.where(counts > 0, sums / np.maximum(counts, 1), global_rating)
            return np.clip(means, pre.low, pre.high)
        return self._cached("_input_means", compute)[inputs]

    @reading
    def score(self, test: RatingSet) -> float:
        """RMSE in rating units on ``test`` (ids matched by original id, or by index on the same universe)."""
        self._check_fitted()
        if not isinstance(test, RatingSet):
            raise TypeError(f"score expects a RatingSet, got {type(test).__name__}")
        if test.same_universe(self.train_):
            predicted = self.predict_indices(test.user, test.item)
        else:
            predicted = self.predict(test.user_ids[test.user], test.item_ids[test.item])
        return rmse(predicted, test.rating)

    # ------------------------------------------------------------------ recommendation
    def recommend(self, user_id: Any, n: int = 10, exclude_seen: bool = True, *,
                  min_support: int = DEFAULT_MIN_SUPPORT) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items for one known user: ``(item_ids, scores)``, best first.

        Scores are predicted ratings in rating units (exactly what :meth:`predict` gives, up to
        float rounding); ties (e.g. several items clipped to the top of the scale) are broken by
        the unclipped score, then by item order.  With ``exclude_seen`` the user's training items
        are never returned; items with fewer than ``min_support`` training ratings are never
        returned either (default :data:`~cfn_fast.recommend.DEFAULT_MIN_SUPPORT`, ``0`` keeps
        every item; see ``bench/min_support_ml1m.py``), so fewer than ``n`` may come back.  A user with no
        training ratings is scored through side information or the mean fallback, as in
        :meth:`predict_indices`.  For a user not in the training data use :meth:`fold_in`
        (U-CFN).
        """
        user_id = interop.to_host(user_id)
        if np.ndim(user_id) != 0:
            raise ValueError(f"recommend takes one user id; use recommend_batch for several, got {user_id!r}")
        return self.recommend_batch([user_id], n, exclude_seen, min_support=min_support)[0]

    @reading
    def recommend_batch(self, user_ids: Any, n: int = 10, exclude_seen: bool = True,
                        chunk: int = 256, *, min_support: int = DEFAULT_MIN_SUPPORT
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`recommend` for several users: one ``(item_ids, scores)`` pair per user, in order.

        U-CFN encodes each user's row and decodes every item; I-CFN encodes every item's training
        vector once (the codes are cached until the next training) and decodes only the output
        columns of the requested users.
        """
        self._check_fitted()
        _check(_is_int(n) and n >= 0, "n", n, "an integer >= 0")
        _check(_is_int(chunk) and chunk >= 1, "chunk", chunk, "a positive integer")
        min_support = check_min_support(min_support)
        users = self._ids_to_index(user_ids, "user")
        seen = self._seen_items() if exclude_seen else None
        support = np.bincount(self.train_.item, minlength=self.train_.n_items) if min_support else None
        result = []
        for start in range(0, len(users), chunk):
            block = users[start:start + chunk]
            scores, unclipped = self._user_scores(block, unclipped=True)
            for row, u in enumerate(block):
                banned = None if seen is None else seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
                best = top_n(scores[row], int(n), banned, unclipped=unclipped[row], support=support,
                             min_support=min_support)
                result.append((self.train_.item_ids[best], scores[row, best]))
        return result

    def _seen_items(self) -> sp.csr_matrix:
        train = self.train_
        return self._cached("_seen", lambda: build_csr(train.user, train.item, np.ones(train.nnz, dtype=np.float32),
                                                       (train.n_users, train.n_items)))

    def _item_codes(self) -> np.ndarray:
        """Hidden codes of every item's training vector (I-CFN), cached until the next training."""
        def compute() -> np.ndarray:
            with self._memory_guard("encoding every item"):
                return self.engine_.encode(self.inputs_, self.side_)
        return self._cached("_codes", compute)

    def _user_scores(self, users: np.ndarray, unclipped: bool = False) -> Any:
        """Predicted ratings ``(len(users), n_items)`` of known user indices; with ``unclipped``
        also the same scores before clipping to the rating scale (the ranking's tie-breaker)."""
        pre = self.preprocessing_
        n_items = self.train_.n_items
        raw = np.empty((len(users), n_items), dtype=np.float64)
        if self.kind_ == "user":
            use_net = (pre.sample_count[users] > 0) | (self.side_ is not None)
            net = users[use_net]
            if len(net):
                side = None if self.side_ is None else self.side_[net]
                with self._memory_guard("recommending"):
                    out = self.engine_.decode(self.engine_.encode(self.inputs_[net], side), side)
                unit = np.asarray(out, dtype=np.float64) + pre.unit_offsets(pre.sample_mean[net])
                raw[use_net] = pre.unclipped(unit)
            if (~use_net).any():
                raw[~use_net] = self._input_mean_rating(np.arange(n_items))[None, :]
        else:
            with self._memory_guard("recommending"):
                out = self.engine_.decode(self._item_codes(), self.side_, cols=users)  # (n_items, len(users))
            unit = np.asarray(out, dtype=np.float64) + pre.unit_offsets(pre.sample_mean, users)
            raw[:] = pre.unclipped(unit.T)
            cold = (pre.sample_count == 0) if self.side_ is None else np.zeros(n_items, dtype=bool)
            if cold.any():
                raw[:, cold] = self._input_mean_rating(users)[:, None]
        scores = np.clip(raw, pre.low, pre.high)
        return (scores, raw) if unclipped else scores

    # ------------------------------------------------------------------ fold-in
    @reading
    def fold_in(self, ids: Any = None, ratings: Any = None, features: Any = None, *,
                new: str | None = None) -> FoldIn:
        """Score a new row without retraining: a **new user** for U-CFN, a **new item** for I-CFN.

        ``ids`` / ``ratings`` are the new row's ratings over the *other* side (item ids for
        U-CFN, user ids for I-CFN), as two sequences or one ``{id: rating}`` dict; ``features``
        is the new row's side-information vector, required when the model was trained with side
        information.  The row is preprocessed exactly as in training (scaled, centred by its own
        mean), fed through the network and the output inverted.  A row with no ratings is
        centred by the global mean and predicted from its side information alone (or, without
        side information, by each input's mean rating).

        ``new`` names what is folded in ("user" or "item"; default: the model's sample side).
        A new user cannot be folded into an I-CFN (nor a new item into a U-CFN): users are the
        *input dimensions* of the item autoencoder, so adding one needs retraining;
        :class:`FoldInError` says so.

        Returns a :class:`~cfn_fast.recommend.FoldIn`: ``fold.predict(other_ids)``,
        ``fold.recommend(n)``, ``fold.ratings`` (every known id of the other side).
        """
        self._check_fitted()
        sample_side = "user" if self.kind_ == "user" else "item"
        other_side = "item" if sample_side == "user" else "user"
        if new is not None and new not in ("user", "item"):
            raise ValueError(f"new must be 'user' or 'item', got {new!r}")
        if new is not None and new != sample_side:
            model = "an I-CFN" if self.kind_ == "item" else "a U-CFN"
            raise FoldInError(
                f"{model} cannot fold in a new {new}: {new}s are the input dimensions of its "
                f"{sample_side} autoencoder, so a new {new} needs retraining "
                f"({'a U-CFN' if new == 'user' else 'an I-CFN'} model folds in new {new}s)")
        ids, values = _fold_in_ratings(ids, ratings)
        index = self._ids_to_index(ids, other_side) if len(ids) else np.zeros(0, dtype=np.int32)
        if len(np.unique(index)) != len(index):
            raise ValueError(f"fold-in ratings name the same {other_side} id more than once")
        pre = self.preprocessing_
        if len(values):
            bad = ~np.isfinite(values)
            if bad.any():
                raise ValueError(f"fold-in ratings contain {int(bad.sum())} NaN or infinite value(s)")
            outside = (values < pre.low) | (values > pre.high)
            if outside.any():
                raise ValueError(f"{int(outside.sum())} fold-in rating(s) outside the scale "
                                 f"[{pre.low:g}, {pre.high:g}], e.g. {float(values[outside][0]):g}")
        side = self._fold_in_features(features, sample_side)
        n_inputs = self.inputs_.shape[1]
        unit = (values.astype(np.float64) - pre.mid) / pre.half_range
        mean = pre.row_mean(unit, index)
        if len(values) == 0 and side is None:
            predicted = self._input_mean_rating(np.arange(n_inputs)).astype(np.float64)
            unclipped = predicted
        else:
            centred = pre.centre(unit, np.full(len(unit), mean, dtype=np.float32), index)
            row = build_csr(np.zeros(len(index), dtype=np.int64), index.astype(np.int64), centred, (1, n_inputs))
            with self._memory_guard("folding in"):
                out = self.engine_.decode(self.engine_.encode(row, side), side)
            unclipped = pre.unclipped(np.asarray(out, dtype=np.float64)[0] + pre.unit_offsets(np.array([mean]))[0])
            predicted = np.clip(unclipped, pre.low, pre.high)
        train = self.train_
        other_ids, other_index = (train.item_ids, train.item) if other_side == "item" else (train.user_ids, train.user)
        return FoldIn(self, sample_side, other_ids, predicted, index.astype(np.int64), float(mean),
                      unclipped=unclipped, support=np.bincount(other_index, minlength=len(other_ids)))

    def _fold_in_features(self, features: Any, sample_side: str) -> np.ndarray | None:
        if self.side_ is None:
            if features is not None:
                raise ValueError(f"this model was trained without {sample_side} side information; "
                                 f"fold in without features")
            return None
        dim = self.side_.shape[1]
        if features is None:
            raise ValueError(f"this model uses {dim} {sample_side} features: pass features= "
                             f"(a vector of {dim} numbers) for the new {sample_side}")
        features = interop.to_host(features)
        names = (self.train_.user_feature_names if sample_side == "user" else self.train_.item_feature_names) \
            if self.use_side_info else None
        features = align_vector(features, names, "fold-in features")
        if sp.issparse(features):
            features = features.toarray()
        try:
            arr = np.asarray(features, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"fold-in features must be {dim} numbers, got {features!r}") from None
        arr = arr.reshape(1, -1) if arr.ndim <= 1 or (arr.ndim == 2 and arr.shape[0] == 1) else arr
        if arr.shape != (1, dim):
            raise ValueError(f"fold-in features must have {dim} values (the model's {sample_side} features), "
                             f"got shape {np.shape(features)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("fold-in features contain NaN or infinite values")
        return np.ascontiguousarray(arr)

    # ------------------------------------------------------------------ codes, export
    @reading
    def encode(self, rows: Any = None, features: Any = None, *, return_means: bool = False,
               output: str = "numpy", stream: Any = None) -> Any:
        """Hidden codes (the last hidden layer, ``(n, hidden[-1])`` float32) of rating rows.

        ``rows`` are samples in the model's input space, in rating units: for a U-CFN users over
        the training items, for an I-CFN items over the training users (columns in training
        index order).  A SciPy sparse matrix (stored entries are the known ratings) or a dense
        array (NaN = unknown), of any array library.  Each row is scaled and centred by its own
        mean as in training.  ``features``: the rows' side information (required when the model
        has some).  ``rows=None`` encodes the training samples.  With ``return_means`` also
        returns each row's centring mean (unit scale), which :meth:`decode` takes to give ratings
        (NaN for a row with no rating in a model without side information: decode then falls back
        to each input's mean rating, as :meth:`predict` does).
        ``output`` / ``stream`` as in :meth:`predict` (``"like"``: the library of ``rows``).
        """
        from .encoding import encode
        return encode(self, rows, features, return_means=return_means, output=output, stream=stream)

    @reading
    def decode(self, codes: Any, features: Any = None, cols: Any = None, *, means: Any = None,
               output: str = "numpy", stream: Any = None) -> Any:
        """The output layer on hidden ``codes``: ``(n, n_inputs)``, or only the output columns
        ``cols`` (input-space indices: items for U-CFN, users for I-CFN).

        Without ``means`` the result is the network's raw output: centred unit scale, in (-1, 1).
        With ``means`` (one centring mean per row, e.g. from ``encode(..., return_means=True)``)
        it is in rating units, the centring and scaling undone and clipped to the scale, exactly
        as :meth:`predict` and :meth:`fold_in` compute them.  ``features`` as in :meth:`encode`.
        On the cuda backend, CUDA ``codes`` are used in place (no host copy).
        """
        from .encoding import decode
        return decode(self, codes, features, cols, means=means, output=output, stream=stream)

    def to_onnx(self, path: str | Path, graph: str = "predict", **options: Any) -> Path:
        """Write the fitted network as an ONNX model (needs the ``onnx`` extra); ``graph`` is
        ``"predict"``, ``"reconstruct"`` or ``"recommend"``.  See :mod:`cfn_fast.export.onnx` for
        each graph's inputs, outputs and options."""
        from .export.onnx import export_onnx
        return export_onnx(self, path, graph=graph, **options)

    # ------------------------------------------------------------------ persistence
    @reading
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one versioned ``.npz`` (no pickles, SHA-256 checksum), atomically.
        See :mod:`cfn_fast.persistence`."""
        from .persistence import save_model
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None) -> "CFN":
        """Read a model written by :meth:`save`.  ``backend`` picks the engine to run it on (a
        GPU-trained model loads on ``"cpu"``/``"numpy"`` and vice versa); default: the saved
        ``backend`` parameter when it is available here, else ``"auto"``."""
        from .persistence import load_model
        return load_model(path, backend=backend)


# ----------------------------------------------------------------------------- validation helpers
def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _finite(value: Any) -> bool:
    """``math.isfinite`` for a real number (also an int too large for ``np.isfinite``)."""
    try:
        return math.isfinite(value)
    except (OverflowError, TypeError):
        return False


def _checked_initial_layers(layers: Any, n_inputs: int, hidden: tuple[int, ...], side_dim: int) -> list[Layer]:
    """Copies of ``layers`` as float32, after checking they fit this network (clear errors, never a kernel crash)."""
    sizes = layer_sizes(n_inputs, hidden)
    if isinstance(layers, Layer) or not hasattr(layers, "__len__") or len(layers) != len(sizes):
        raise ValueError(f"initial_layers must be a sequence of {len(sizes)} Layer objects for hidden={hidden}, "
                         f"got {type(layers).__name__}")
    out = []
    for k, (layer, (fan_in, fan_out)) in enumerate(zip(layers, sizes)):
        if not isinstance(layer, Layer):
            raise TypeError(f"initial_layers[{k}] must be a cfn_fast.network.Layer, got {type(layer).__name__}")
        expected = {"weight": (fan_out, fan_in), "bias": (fan_out,),
                    "side_weight": (fan_out, side_dim) if side_dim else None}
        for name, shape in expected.items():
            value = getattr(layer, name)
            if shape is None:
                if value is not None:
                    raise ValueError(f"initial_layers[{k}].side_weight must be None: this model has no side "
                                     f"information")
                continue
            got = None if value is None else np.shape(value)
            if got != shape:
                raise ValueError(f"initial_layers[{k}].{name} must have shape {shape}, got {got}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"initial_layers[{k}].{name} has NaN or infinite values")
        out.append(Layer(np.array(layer.weight, dtype=np.float32), np.array(layer.bias, dtype=np.float32),
                         None if layer.side_weight is None else np.array(layer.side_weight, dtype=np.float32)))
    return out


def _check_hidden(hidden: Any) -> tuple[int, ...]:
    expected = "a positive integer or a non-empty sequence of positive integers (layer widths)"
    values = [hidden] if _is_int(hidden) else hidden
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"hidden must be {expected}, got {hidden!r}")
    values = list(values)
    _check(len(values) >= 1 and all(_is_int(h) and h >= 1 for h in values), "hidden", hidden, expected)
    return tuple(int(h) for h in values)


def _as_index(index: Any, n: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(interop.to_host(index)))
    if arr.ndim != 1:
        raise ValueError(f"{what} indices must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what} indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)]
        raise IndexError(f"{what} indices must lie in [0, {n}), got {bad[:5].tolist()}")
    return arr


def _as_features(features: Any, n_rows: int, what: str) -> np.ndarray:
    return as_feature_matrix(features, n_rows, what)


def _validate_rating_set(ratings: RatingSet, what: str) -> None:
    """Check a RatingSet's internal consistency before an engine sees it (RatingSet.from_arrays
    guarantees all of this; a hand-built one may not)."""
    user, item, rating = (np.asarray(a) for a in (ratings.user, ratings.item, ratings.rating))
    if not (user.ndim == item.ndim == rating.ndim == 1 and len(user) == len(item) == len(rating)):
        raise ValueError(f"{what}: user, item and rating must be 1-D arrays of one length, got shapes "
                         f"{user.shape}, {item.shape}, {rating.shape}")
    if len(rating) == 0:
        raise ValueError(f"{what} has no ratings")
    if user.dtype.kind not in "iu" or item.dtype.kind not in "iu":
        raise TypeError(f"{what}: user and item must be integer index arrays, got {user.dtype} and {item.dtype}")
    if rating.dtype.kind not in "iuf":
        raise TypeError(f"{what}: ratings must be numbers, got dtype {rating.dtype}")
    for name, index, n in (("user", user, ratings.n_users), ("item", item, ratings.n_items)):
        if index.min() < 0 or index.max() >= n:
            raise ValueError(f"{what}: {name} indices must lie in [0, {n}), found {int(index.min())}.."
                             f"{int(index.max())}")
    low, high = (float(s) for s in ratings.scale)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"{what}: rating scale must be (low, high) with low < high, got {ratings.scale}")
    bad = ~np.isfinite(rating)
    if bad.any():
        raise ValueError(f"{what}: ratings contain {int(bad.sum())} NaN or infinite value(s)")
    outside = (rating < low) | (rating > high)
    if outside.any():
        raise ValueError(f"{what}: {int(outside.sum())} rating(s) outside the scale [{low:g}, {high:g}]")
    for name, feats, n in (("user_features", ratings.user_features, ratings.n_users),
                           ("item_features", ratings.item_features, ratings.n_items)):
        if feats is not None:
            _as_features(feats, n, f"{what}.{name}")


def _known_per_sample(inputs: sp.csr_matrix) -> float:
    """Mean number of known entries of the samples (rows) that have any."""
    non_empty = int(np.count_nonzero(np.diff(inputs.indptr)))
    return inputs.nnz / non_empty if non_empty else 0.0


def _warn_unused_side(kind: str, user_features: Any, item_features: Any) -> None:
    """Features of the side a CFN does not read are ignored: say so rather than silently train plain CFN."""
    unused, used = ("item", "user") if kind == "user" else ("user", "item")
    given = item_features if unused == "item" else user_features
    if given is not None:
        warnings.warn(f"{unused}_features are ignored: a {'U' if kind == 'user' else 'I'}-CFN uses only "
                      f"{used} features (pass {used}_features=, or train kind={unused!r} to use "
                      f"{unused} features)", UserWarning, stacklevel=4)


def _check_no_duplicate_entries(inputs: sp.csr_matrix, kind: str) -> None:
    """The training CSR has sorted column indices per row: a repeat is a duplicate (user, item)."""
    if inputs.nnz < 2:
        return
    same = inputs.indices[1:] == inputs.indices[:-1]
    row_start = np.zeros(inputs.nnz, dtype=bool)
    starts = inputs.indptr[:-1][np.diff(inputs.indptr) > 0]
    row_start[starts] = True
    if np.any(same & ~row_start[1:]):
        raise ValueError("train has duplicate (user, item) pairs; build it with RatingSet.from_arrays("
                         "..., duplicates='last' or 'mean')")


def _fold_in_ratings(ids: Any, ratings: Any) -> tuple[np.ndarray, np.ndarray]:
    if ratings is None and hasattr(ids, "index") and hasattr(ids, "to_numpy") and not hasattr(ids, "columns"):
        ids = dict(zip(ids.index, ids.to_numpy()))  # a pandas Series of ratings indexed by id
    check_parallel({"fold-in ids": ids, "fold-in ratings": ratings})
    if isinstance(ids, dict):
        if ratings is not None:
            raise ValueError("pass fold-in ratings either as a {id: rating} dict or as ids and ratings, not both")
        ids, ratings = list(ids.keys()), list(ids.values())
    if ids is None:
        ids = []
    if ratings is None:
        ratings = []
    ids, ratings = interop.to_host(ids), interop.to_host(ratings)
    ids_arr = np.asarray(ids)
    values = np.asarray(ratings)
    if ids_arr.ndim != 1 or values.ndim != 1:
        raise ValueError(f"fold-in ids and ratings must be one-dimensional, got shapes {ids_arr.shape} "
                         f"and {values.shape}")
    if len(ids_arr) != len(values):
        raise ValueError(f"fold-in ids and ratings differ in length: {len(ids_arr)} and {len(values)}")
    if values.size and values.dtype.kind not in "iuf":
        raise ValueError(f"fold-in ratings must be numbers, got dtype {values.dtype}")
    return ids_arr, values.astype(np.float64)
