"""The CFN estimator: U-CFN / I-CFN (and CFN++ with side information) behind a scikit-learn-like API.

The estimator keeps its settings (declared once in :mod:`cfn_fast.settings`) and, once fitted, one
:class:`~cfn_fast.fitted.value.Fitted` value bound to an engine (:class:`~cfn_fast.fitted.runtime.Runtime`).
Its verbs are thin: training goes through the public engine API (:mod:`cfn_fast.engine`) and the loop of
:mod:`cfn_fast.training.trainer`; scoring, recommending, folding in, encode / decode, the model file and
ONNX export are functions over the fitted value (:mod:`cfn_fast.fitted`, :mod:`cfn_fast.export`).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import interop, settings
from .backends import fallback_backend, resolve_backend
from .data.labelled import check_parallel
from .data.ratings import RatingSet
from .data.side_info import sample_side_features
from .engine import training_inputs
from .export.onnx import export_onnx
from .fitted import encoding, foldin, scoring
from .fitted.attributes import FittedAttributes
from .fitted.concurrency import ModelBusyError, mutating, reading
from .fitted.foldin import FoldIn, FoldInError
from .fitted.persistence import read_model, save_model
from .fitted.ranking import DEFAULT_MIN_SUPPORT
from .fitted.runtime import DeviceOutOfMemory, NotFittedError, Runtime
from .fitted.state import pickle_state, unpickle_state
from .fitted.value import Fitted, Network
from .metrics import rmse
from .network import Layer
from .profiling import Profile, ProfiledEngine
from .settings import AUTO, BLEND, DEFAULTS, EstimatorParams
from .sharding.plan import initial_network, shard_plan
from .training.blending import fit_blend
from .training.selection import select_kind
from .training.trainer import (
    Callback,
    DivergenceRule,
    EarlyStopping,
    TrainingDiverged,
    divergence_rule,
    reference_mse,
    run_epochs,
)

__all__ = ["CFN", "DEFAULTS", "NotFittedError", "DeviceOutOfMemory", "FoldInError", "TrainingDiverged",
           "EarlyStopping", "DivergenceRule", "ModelBusyError"]

log = logging.getLogger("cfn_fast")


class CFN(EstimatorParams, FittedAttributes):
    """Collaborative Filtering Network (Strub, Mary & Gaudel 2016): a denoising autoencoder that
    completes a sparse rating matrix, optionally with side information in every layer (CFN++).

    Parameters are those of :data:`cfn_fast.settings.SETTINGS` (each with its help text there):
    ``kind`` (``"item"`` I-CFN, ``"user"`` U-CFN, ``"auto"`` chosen with the centring on a validation
    part at fit), ``hidden``, ``epochs``, ``centring``, ``alpha``, ``beta``, ``mask_ratio``, ``lr``,
    ``lr_decay``, ``weight_decay``, ``batch_size``, ``backend``, ``use_side_info``, ``seed``, ``dtype``,
    ``verbose``, ``profile``.  ``None`` hyper-parameters take the per-kind :data:`DEFAULTS`; a default
    ``lr`` is scaled down on data denser than ML-1M (:func:`cfn_fast.settings.density_step_factor`), an
    explicit ``lr`` is used as given.

    Fitted attributes (read-only, over :attr:`fitted_`): ``kind_``, ``centring_``, ``selection_``,
    ``history_`` (one :class:`~cfn_fast.training.trainer.EpochRecord` per epoch), ``epochs_trained_``,
    ``best_epoch_``, ``backend_``, ``layers_``, ``train_``, ``preprocessing_``, ``inputs_``, ``side_``,
    ``profile_``, and ``engine_``.

    What each kind can score without retraining: U-CFN folds in **new users**; I-CFN folds in **new
    items**.  A new user of an I-CFN (or a new item of a U-CFN) is an *input dimension* of the
    autoencoder and cannot be added without retraining.
    """

    param_names = settings.SETTING_NAMES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings.init_from_signature(self, _SIGNATURE, args, kwargs)
        self._fitted: Fitted | None = None
        self._runtime: Runtime | None = None
        self._validation: RatingSet | None = None

    def resolved_params(self) -> dict[str, Any]:
        """Hyper-parameters with per-kind defaults filled in, validated (``ValueError`` naming the
        parameter, the allowed range and the value given); once fitted, for the kind trained and with
        the step the training data's density gives."""
        fitted = self._fitted
        resolved = settings.resolve(self.get_params()) if fitted is None or fitted.blend is not None else \
            settings.resolve(self.get_params(), fitted.kind, settings.known_per_sample(fitted.network.inputs))
        return {**{name: resolved[name] for name in settings.RESOLVED_NAMES},
                **({"kind": BLEND} if self.kind == BLEND else {})}

    # ------------------------------------------------------------------ training
    @mutating
    def fit(self, train: RatingSet, user_features: Any = None, item_features: Any = None,
            validation: RatingSet | None = None, *, early_stopping: EarlyStopping | None = None,
            callbacks: Sequence[Callback] = (), divergence: DivergenceRule | str | None = AUTO,
            initial_layers: Sequence[Layer] | None = None) -> "CFN":
        """Train from scratch on ``train`` for ``epochs`` epochs.  ``user_features`` / ``item_features``
        override the side information stored in ``train`` (only the sample side's is used).  ``validation``
        (same id universe) is scored after every epoch into ``history_``.  ``callbacks`` get each epoch's
        record; one returning True stops training.  ``early_stopping`` (needs ``validation``) restores the
        best epoch.  ``divergence``: the :class:`~cfn_fast.training.trainer.DivergenceRule` (``None``: only
        a non-finite loss); a diverging run raises :class:`TrainingDiverged`, the last good epoch kept.
        ``initial_layers`` (a warm start) replaces the random initialisation.  Users or items with no
        training ratings are allowed (see :meth:`predict_indices`)."""
        if not isinstance(train, RatingSet):
            hint = " (build one with RatingSet.from_dataframe)" if type(train).__name__ == "DataFrame" else \
                " (build one with RatingSet.from_arrays(user, item, rating))"
            raise TypeError(f"fit expects a RatingSet as train, got {type(train).__name__}{hint}")
        settings.resolve(self.get_params())
        backend = resolve_backend(self.backend, self.dtype, self.dropout, self.kernel_dim)
        train.validate("train")
        train.check_validation(validation)
        if self.kind == BLEND:
            return self._fit_blend(train, user_features, item_features, validation, divergence, backend,
                                   early_stopping is None and not callbacks and initial_layers is None)
        kind, centring, selection = self._resolve_kind(train, user_features, item_features, validation, divergence)
        features = sample_side_features(kind, train, user_features, item_features)
        inputs = training_inputs(train, kind, use_side_info=bool(self.use_side_info), features=features,
                                 centring=centring)
        p = settings.resolve(self.get_params(), kind, settings.known_per_sample(inputs.samples))
        plan = shard_plan(p, inputs.n_inputs, inputs.side_dim)
        layers = initial_network(plan, inputs.n_inputs, p["hidden"], inputs.side_dim, self.seed, initial_layers)
        network = Network(kind, inputs.preprocessing, inputs.samples, inputs.side, layers)
        fitted = Fitted(train, (network,), selection=selection)
        runtime = Runtime(fitted, backend, settings.train_config(p), sharding=plan)
        network.layers = runtime.built_layers()  # the engine built now: an error leaves the model as it was
        self._fitted, self._runtime, self._validation = fitted, runtime, validation
        return self._train(self.epochs, p, early_stopping, callbacks, divergence)

    def _fit_blend(self, train: RatingSet, user_features: Any, item_features: Any, validation: RatingSet | None,
                   divergence: Any, backend: str, plain: bool) -> "CFN":
        if not plain:
            raise ValueError("early_stopping, callbacks and initial_layers train one network: give a kind "
                             "('item' or 'user'); a blend (kind='blend') chooses its networks on validation")
        members, blend, profile = fit_blend(self, train, user_features, item_features, divergence, validation)
        fitted = Fitted(train, tuple(m.fitted_.network for m in members), epochs_trained=self.epochs,
                        profile=profile, blend=blend)
        self._runtime = Runtime(fitted, backend, settings.fitted_config(settings.resolve(self.get_params())),
                                members=tuple(m.runtime_ for m in members))
        self._fitted, self._validation = fitted, validation
        return self

    def _resolve_kind(self, train: RatingSet, user_features: Any, item_features: Any,
                      validation: RatingSet | None, divergence: Any) -> tuple[str, str, Any]:
        """``(kind, centring, selection)`` to train: as given, or for ``kind="auto"`` chosen on validation."""
        if self.kind != AUTO:
            return self.kind, self.centring or "sample", None
        choice = select_kind(self, train, user_features, item_features, divergence, validation)
        log.info("kind='auto' chose %s", choice.summary())
        return choice.kind, choice.centring, choice

    @mutating
    def partial_fit(self, epochs: int = 1, *, validation: RatingSet | None = None,
                    early_stopping: EarlyStopping | None = None, callbacks: Sequence[Callback] = (),
                    divergence: DivergenceRule | str | None = AUTO) -> "CFN":
        """Train the fitted (or loaded) model ``epochs`` more epochs; the lr schedule and epoch numbering go on (``fit``
        for 3 epochs equals ``fit`` for 2 then ``partial_fit(1)``); ``validation`` replaces ``fit``'s."""
        fitted = self._check_fitted()
        if fitted.blend is not None:
            raise ValueError("partial_fit continues one network; a blend (kind='blend') is trained by fit "
                             "(model.member(k) is a member as a model of its own)")
        settings.check(settings.is_int(epochs) and epochs >= 0, "epochs", epochs, "an integer >= 0")
        if self.kernel_dim:   # the fitted model holds W * K alone: going on would restart u and v
            raise ValueError(f"partial_fit cannot continue kernelised training (kernel_dim={self.kernel_dim}): the "
                             f"fitted network holds only W * K; set_params(kernel_dim=0) trains it on as a plain CFN")
        if validation is not None:
            fitted.train.check_validation(validation)
            self._validation = validation
        return self._train(int(epochs), self._sync_engine(), early_stopping, callbacks, divergence)

    def _sync_engine(self) -> dict[str, Any]:
        """Settings changed since the engine was built (``set_params`` after ``fit``, population-based training)
        take effect: the engine is rebuilt from the canonical layers with the new TrainConfig (lr and lr_decay come
        per epoch).  The architecture and the data the network learned cannot change without refitting."""
        fitted, runtime = self._check_fitted(), self._runtime
        p = settings.resolve(self.get_params(), fitted.kind, settings.known_per_sample(fitted.network.inputs))
        trained = {"kind": fitted.kind, "centring": fitted.network.preprocessing.centring}
        for name, value in (("kind", self.kind), ("centring", self.centring)):
            if value not in (None, AUTO, trained[name]):
                raise ValueError(f"{name}={value!r} does not match the fitted model ({name} {trained[name]!r}); "
                                 f"call fit to train a new one")
        if fitted.network.hidden != p["hidden"]:
            raise ValueError(f"hidden={p['hidden']} does not match the fitted network; call fit to train a new one")
        config, plan = settings.train_config(p), shard_plan(p, fitted.network.inputs.shape[1], fitted.network.side_dim)
        if runtime.engine.config != config or runtime.sharding != plan:
            self._runtime = Runtime(fitted, runtime.backend, config, sharding=plan)
        return p

    def _train(self, epochs: int, p: dict[str, Any], early_stopping: EarlyStopping | None,
               callbacks: Sequence[Callback], divergence: DivergenceRule | str | None) -> "CFN":
        validation, fitted, runtime = self._validation, self._fitted, self._runtime
        if early_stopping is not None and validation is None:
            raise ValueError("early_stopping needs a validation set: fit(..., validation=...)")
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}")
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables taking an EpochRecord, got {cb!r}")
        network, engine = fitted.network, runtime.engine

        def reference() -> float:
            with runtime.memory_guard("measuring the initial loss"):
                return reference_mse(engine, network.inputs, network.side, self.seed)

        rule = divergence_rule(divergence, p["alpha"] * p["mask_ratio"] + p["beta"] * (1.0 - p["mask_ratio"]),
                               reference)
        if self.profile:
            fitted.profile = fitted.profile or Profile(engine.name)
            engine = ProfiledEngine(engine, fitted.profile)
        report: dict[str, Any] = {}
        runtime.clear_caches()
        try:
            with runtime.memory_guard("training"):
                run_epochs(engine, first_epoch=fitted.epochs_trained + 1, epochs=epochs, lr=p["lr"],
                           lr_decay=p["lr_decay"], n_known=max(network.inputs.nnz, 1),
                           evaluate=None if validation is None else (lambda: self.score(validation)),
                           early_stopping=early_stopping, callbacks=callbacks, progress=self.verbose >= 1,
                           divergence=rule, history=fitted.history,
                           log_level=logging.INFO if self.verbose >= 2 else logging.DEBUG,
                           echo=self.verbose >= 2, report=report)
        finally:
            fitted.epochs_trained = fitted.history[-1].epoch if fitted.history else 0
            # predictions are then a function of the layers alone, identical after save/load, and partial_fit
            # resumes from what a file holds (Runtime.reload_layers)
            network.layers = runtime.reload_layers()
            runtime.clear_caches()
        if report.get("best_epoch") is not None:
            fitted.best_epoch = report["best_epoch"]
        return self

    # ------------------------------------------------------------------ the fitted value
    def _check_fitted(self) -> Fitted:
        if self._fitted is None:
            raise NotFittedError("this CFN model is not fitted yet: call fit(train) first")
        return self._fitted

    def _bind(self, fitted: Fitted, backend: str) -> None:
        self._fitted = fitted
        p = settings.resolve(self.get_params()) if fitted.blend is not None else \
            settings.resolve(self.get_params(), fitted.kind, settings.known_per_sample(fitted.network.inputs))
        self._runtime = Runtime(fitted, backend, settings.fitted_config(p))   # an ordinary network: no kernel

    def _rt(self, member: int | None = None) -> Runtime:
        """The runtime, or that of a blend's ``member``."""
        self._check_fitted()
        if member is None:
            return self._runtime
        members = self._runtime.members
        if self._fitted.blend is None:
            raise ValueError(f"member={member!r}: this is one network, not a blend (kind={self._fitted.kind!r}); "
                             f"leave member out")
        settings.check(settings.is_int(member) and 0 <= member < len(members), "member", member,
                       f"the index of one of this blend's {len(members)} network(s)")
        return members[member]

    def member(self, k: int) -> "CFN":
        """Network ``k`` of a blend as a model of its own (a copy: training it leaves the blend as it is)."""
        rt = self._rt(k)
        return self._bound(self.fitted_.blend.member_params[k], copy.deepcopy(rt.fitted), rt.backend)

    @classmethod
    def _bound(cls, params: dict[str, Any], fitted: Fitted, backend: str) -> "CFN":
        model = cls(**params)
        model._bind(fitted, backend)
        return model

    @mutating
    def gather(self) -> "CFN":
        """Join a network kept sharded (``shards=``, ``max_worker_bytes`` below its size) here (it must fit): an
        ordinary model again (encode, fold_in, ONNX, pickle).  Returns ``self``."""
        if not self._check_fitted().blend and self._fitted.network.kept_sharded:
            self._fitted.network.layers = self._fitted.network.layers.gather()
            self._bind(self._fitted, self._runtime.backend)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self._fitted is not None

    # ------------------------------------------------------------------ prediction
    @reading
    def predict(self, user_ids: Any, item_ids: Any, *, output: str = "numpy", stream: Any = None) -> Any:
        """Predicted ratings for pairs of original ``user_ids`` and ``item_ids`` (clipped to the scale).

        Unknown ids raise ``KeyError``; use :meth:`fold_in` for users (U-CFN) or items (I-CFN) not seen
        in training.  Ids may be any array (NumPy, PyTorch, JAX, CuPy, ...; see :mod:`cfn_fast.interop`);
        ``output`` picks the result's library (``"like"``: that of ``user_ids``); ``stream`` (cuda
        backend) is the caller's CUDA stream to run on."""
        rt = self._rt()
        interop.check_output(output)
        check_parallel({"user_ids": user_ids, "item_ids": item_ids})
        with encoding.stream_scope(rt, stream):  # device ids are copied to the host on the caller's stream
            users = scoring.ids_to_index(rt, user_ids, "user")
            items = scoring.ids_to_index(rt, item_ids, "item")
            if len(users) != len(items):
                raise ValueError(f"user_ids and item_ids differ in length: {len(users)} and {len(items)}")
            ratings = scoring.predict_pairs(rt, users, items)
        return interop.to_output(ratings, output, interop.origin_of(user_ids))

    @reading
    def predict_indices(self, users: Any, items: Any, *, output: str = "numpy", stream: Any = None) -> Any:
        """Predicted ratings for pairs of user and item *indices* of the training RatingSet.

        A sample (user for U-CFN, item for I-CFN) with no training ratings is predicted from its side
        information when the model has some, otherwise by the mean training rating of the input (the
        item's mean for U-CFN, the user's for I-CFN; the global mean if that has none).  ``output`` /
        ``stream`` as in :meth:`predict` (``"like"``: the library of ``users``)."""
        rt = self._rt()
        interop.check_output(output)
        with encoding.stream_scope(rt, stream):
            ratings = scoring.predict_pairs(rt, users, items)
        return interop.to_output(ratings, output, interop.origin_of(users))

    @reading
    def score(self, test: RatingSet) -> float:
        """RMSE in rating units on ``test`` (ids matched by original id, or by index on the same universe)."""
        fitted = self._check_fitted()
        if not isinstance(test, RatingSet):
            raise TypeError(f"score expects a RatingSet, got {type(test).__name__}")
        if test.same_universe(fitted.train):
            predicted = self.predict_indices(test.user, test.item)
        else:
            predicted = self.predict(test.user_ids[test.user], test.item_ids[test.item])
        return rmse(predicted, test.rating)

    # ------------------------------------------------------------------ recommendation, fold-in
    def recommend(self, user_id: Any, n: int = 10, exclude_seen: bool = True, *,
                  min_support: int = DEFAULT_MIN_SUPPORT) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` items for one known user: ``(item_ids, scores)``, best first.

        Scores are predicted ratings (:meth:`predict`'s up to float rounding, :meth:`recommend_batch`'s bit for bit);
        ties go by the unclipped score, then ascending item index (:func:`~cfn_fast.fitted.ranking.top_n`).  With
        ``exclude_seen`` the user's training items are never returned; nor are items with fewer than
        ``min_support`` training ratings (``0`` keeps every item), so fewer than ``n`` may come back.
        For a user not in the training data use :meth:`fold_in` (U-CFN)."""
        user_id = interop.to_host(user_id)
        if np.ndim(user_id) != 0:
            raise ValueError(f"recommend takes one user id; use recommend_batch for several, got {user_id!r}")
        return self.recommend_batch([user_id], n, exclude_seen, min_support=min_support)[0]

    @reading
    def recommend_batch(self, user_ids: Any, n: int = 10, exclude_seen: bool = True,
                        chunk: int = 256, *, min_support: int = DEFAULT_MIN_SUPPORT
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`recommend` for several users: one ``(item_ids, scores)`` pair per user, in order.
        U-CFN encodes each user's row and decodes every item; I-CFN encodes every item's training vector
        once (cached until the next training) and decodes only the output columns of the users."""
        rt = self._rt()
        settings.check(settings.is_int(n) and n >= 0, "n", n, "an integer >= 0")
        settings.check(settings.is_int(chunk) and chunk >= 1, "chunk", chunk, "a positive integer")
        users = scoring.ids_to_index(rt, user_ids, "user")
        return scoring.recommend_batch(rt, users, int(n), exclude_seen, int(chunk), min_support)

    @reading
    def fold_in(self, ids: Any = None, ratings: Any = None, features: Any = None, *,
                new: str | None = None) -> FoldIn:
        """Score a new row without retraining: a **new user** for U-CFN, a **new item** for I-CFN.

        ``ids`` / ``ratings`` are the new row's ratings over the *other* side (item ids for U-CFN, user ids
        for I-CFN): two sequences, one ``{id: rating}`` dict, or ``ids`` a 1 x n sparse row (training index
        order, as :meth:`encode`'s); ``features``: the row's side information, if the model has some.  ``new``
        names what is folded in ("user" or "item"; default: the model's sample side); the other raises
        :class:`FoldInError`.  Returns a :class:`~cfn_fast.fitted.foldin.FoldIn`:
        ``fold.predict(other_ids)``, ``fold.recommend(n)``, ``fold.ratings``."""
        rt = self._rt()
        return foldin.fold_in(rt, ids, ratings, features, new, foldin.feature_names(rt, new, self.use_side_info))

    # ------------------------------------------------------------------ codes, export
    @reading
    def encode(self, rows: Any = None, features: Any = None, *, return_means: bool = False,
               output: str = "numpy", stream: Any = None, member: int | None = None) -> Any:
        """Hidden codes (the last hidden layer, ``(n, hidden[-1])`` float32) of rating rows in the
        model's input space (see :mod:`cfn_fast.fitted.encoding`); ``rows=None`` encodes the training
        samples; with ``return_means`` also each row's centring mean, which :meth:`decode` takes.  A blend
        encodes with one of its networks: ``member=k``."""
        return encoding.encode(self._rt(member), rows, features, return_means=return_means, output=output,
                               stream=stream)

    @reading
    def decode(self, codes: Any, features: Any = None, cols: Any = None, *, means: Any = None,
               output: str = "numpy", stream: Any = None, member: int | None = None) -> Any:
        """The output layer on hidden ``codes``: ``(n, n_inputs)``, or only the output columns ``cols``;
        raw network outputs, or with ``means`` ratings exactly as :meth:`predict` computes them."""
        return encoding.decode(self._rt(member), codes, features, cols, means=means, output=output, stream=stream)

    def to_onnx(self, path: str | Path, graph: str = "predict", *, member: int | None = None,
                **options: Any) -> Path:
        """Write the fitted model as an ONNX model (needs the ``onnx`` extra); ``graph`` is ``"predict"``,
        ``"reconstruct"`` or ``"recommend"`` (see :mod:`cfn_fast.export.onnx`); ``member=k``: a blend's
        network ``k`` alone."""
        return export_onnx(self._rt(member), path, graph=graph, **options)

    # ------------------------------------------------------------------ persistence, travel
    @reading
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one versioned ``.npz`` (no pickles, SHA-256 checksum), atomically; a network
        kept sharded to a folder (:mod:`cfn_fast.fitted.sharded_file`).  See :mod:`cfn_fast.fitted.persistence`."""
        rt = self._rt()
        return save_model(path, rt.fitted, rt.backend, self.get_params(), self.resolved_params())

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None) -> "CFN":
        """Read a model written by :meth:`save`.  ``backend`` picks the engine to run it on (a GPU-trained
        model loads on ``"cpu"``/``"numpy"`` and vice versa); default: the saved ``backend`` parameter
        when it is available here, else ``"auto"``."""
        params, fitted, config = read_model(path)
        model = cls(**params)
        if backend is None:
            chosen = fallback_backend((model.backend,), config.get("backend_trained", model.backend), model.dtype,
                                      model.dropout)
        else:
            model.backend = backend
            chosen = resolve_backend(backend, model.dtype, model.dropout)
        model._bind(fitted, chosen)
        return model

    def __getstate__(self) -> dict[str, Any]:
        """Plain data only (pickle, cloudpickle, deepcopy, joblib, Ray, Dask): the settings, the
        validation set and the fitted value; the engine is rebuilt where the state lands."""
        attributes = {name: value for name, value in vars(self).items() if name not in ("_fitted", "_runtime")}
        return pickle_state(attributes, self._fitted, None if self._runtime is None else self._runtime.backend)

    def __setstate__(self, state: dict[str, Any], backend: str | None = None) -> None:
        attributes, fitted, fitted_on = unpickle_state(state, type(self).__name__)
        vars(self).update({"_fitted": None, "_runtime": None, "_validation": None, **attributes})
        if fitted is not None:
            self._bind(fitted, backend or fallback_backend((fitted_on, self.backend), fitted_on, self.dtype,
                                                           self.dropout))

    def to_backend(self, backend: str) -> "CFN":
        """A **new** model equal to this one that runs on ``backend`` (``"cpu"``, ``"cuda"``, ``"numpy"`` or
        ``"auto"``); this one is left as it is.  The copy predicts from the same canonical parameters and
        can go on training with ``partial_fit``.  Raises :class:`~cfn_fast.backends.BackendUnavailable`
        when the backend cannot run here."""
        resolved = resolve_backend(backend, self.dtype, self.dropout)
        moved = type(self).__new__(type(self))
        moved.__setstate__(copy.deepcopy(self.__getstate__()), backend=resolved)
        moved.backend = backend
        return moved


_SIGNATURE = settings.signature()
CFN.__init__.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
