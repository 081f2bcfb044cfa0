"""Deeper CFN by the authors' recipe: layer-wise pre-training, then fine-tuning of the whole network.

The authors' Torch code (``TrainNetwork.lua`` with ``conf.movieLens.1M.V.lua``) builds a 2-layer
CFN ``in -> 700 -> 500 -> 700 -> in`` in steps:

1. a 1-hidden-layer CFN ``in -> 700 -> in`` is trained on the ratings (masking noise, α/β loss);
2. an inner autoencoder ``700 -> 500 -> 700`` is trained on the codes of step 1;
3. the stack ``[encoder 1, encoder 2, decoder 2, decoder 1]`` is fine-tuned on the ratings with
   the CFN loss and its own hyper-parameters.

:class:`StackedCFN` does steps 1 and 3 with this package's :class:`~cfn_fast.CFN` (each step is a
plain CFN training, so every backend and the whole CFN semantics apply unchanged).  Step 2 is not
done: the authors' configuration trains it for 5 epochs at learning rate 1e-5, which leaves the
inner layers at their initialisation for all practical purposes; here they start from Torch's
uniform(±1/√fan_in) initialisation.  With more than two widths, ``hidden=(h1, h2, h3)``, one
level is added and fine-tuned at a time.

After ``fit``, :attr:`StackedCFN.model_` is an ordinary fitted :class:`~cfn_fast.CFN` with
``hidden=(h1, h2, ..., h2, h1)``: predictions, recommendations, fold-in, ``partial_fit`` and
``save`` go through it (a saved model loads back as a ``CFN``).
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import resolve_backend
from .data.ratings import RatingSet
from .fitted.concurrency import mutating
from .fitted.ranking import DEFAULT_MIN_SUPPORT
from .fitted.runtime import NotFittedError
from .model import CFN
from .network import insert_middle_layers
from .settings import (
    AUTHORS_ML1M_FINETUNE,
    AUTHORS_ML1M_PRETRAIN,
    EstimatorParams,
    check_hidden,
    init_from_signature,
    parameter_names,
    signature,
)

__all__ = ["StackedCFN", "insert_middle_layers", "AUTHORS_ML1M_PRETRAIN", "AUTHORS_ML1M_FINETUNE"]

_TRAINING_KEYS = ("epochs", "batch_size", "lr", "lr_decay", "weight_decay", "alpha", "beta", "mask_ratio")


def _mirror(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(widths)
    return widths + widths[-2::-1]


class StackedCFN(EstimatorParams):
    """A CFN with ``len(hidden)`` encoder layers trained by layer-wise pre-training + fine-tuning.

    ``hidden=(700, 500)`` is the authors' ML-1M network ``in -> 700 -> 500 -> 700 -> in``.
    ``pretrain`` holds the training settings of the 1-hidden-layer step (keys of :class:`CFN`:
    epochs, batch_size, lr, lr_decay, weight_decay, alpha, beta, mask_ratio; missing keys take
    the CFN defaults); ``epochs`` and the other keyword arguments are the fine-tuning settings.
    ``kind="auto"`` (and ``centring=None`` with it) is resolved by the pre-training's validation run
    and kept by every later stage.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init_from_signature(self, _SIGNATURE, args, kwargs)

    def _common(self) -> dict[str, Any]:
        # kind="auto" is resolved once, by the pre-training; every later stage trains what it chose
        pretrained = self.__dict__.get("pretrained_")
        kind, centring = (self.kind, self.centring) if pretrained is None else (pretrained.kind_, pretrained.centring_)
        return {"kind": kind, "centring": centring, "backend": self.backend, "use_side_info": self.use_side_info,
                "seed": self.seed, "dtype": self.dtype, "verbose": self.verbose}

    def _pretrain_settings(self) -> dict[str, Any]:
        given = {} if self.pretrain is None else self.pretrain
        if not isinstance(given, dict):
            raise TypeError(f"pretrain must be a dict of CFN training settings or None, got {type(given).__name__}")
        unknown = sorted(set(given) - set(_TRAINING_KEYS))
        if unknown:
            raise ValueError(f"pretrain: unknown setting(s) {unknown}; allowed: {', '.join(_TRAINING_KEYS)}")
        return dict(given)

    def _finetune_model(self, widths: Sequence[int]) -> CFN:
        tuned = {name: getattr(self, name) for name in _TRAINING_KEYS}
        return CFN(hidden=_mirror(widths), **tuned, **self._common())

    @mutating
    def fit(self, train: RatingSet, user_features: Any = None, item_features: Any = None,
            validation: RatingSet | None = None, **fit_options: Any) -> "StackedCFN":
        """Pre-train the outer layer, then add and fine-tune one level at a time.  ``validation`` and
        ``fit_options`` (callbacks, early_stopping, divergence) apply to the last fine-tuning."""
        widths = check_hidden(self.hidden)
        if len(widths) < 2:
            raise ValueError(f"StackedCFN needs at least two hidden widths (e.g. (700, 500)), got {self.hidden!r}; "
                             f"use CFN for a one-hidden-layer network")
        features = {"user_features": user_features, "item_features": item_features}
        self.__dict__.pop("pretrained_", None)           # a refit chooses kind="auto" anew
        first = CFN(hidden=widths[:1], **self._common(), **self._pretrain_settings())
        self._finetune_model(widths).resolved_params()          # bad fine-tuning settings fail before any training
        self.pretrained_ = first.fit(train, **features)
        layers = self.pretrained_.layers_
        for depth in range(2, len(widths) + 1):
            model = self._finetune_model(widths[:depth])
            start = insert_middle_layers(layers, widths[depth - 1], seed=self.seed + depth)
            last = depth == len(widths)
            self.model_ = model                   # scoring callbacks of the last stage see the model in training
            model.fit(train, **features, initial_layers=start,
                      **({"validation": validation, **fit_options} if last else {}))
            layers = model.layers_
        return self

    # ------------------------------------------------------------------ the fitted CFN does the rest
    def _fitted(self) -> CFN:
        model = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError("this StackedCFN is not fitted yet: call fit(train) first")
        return model

    @property
    def history_(self) -> list:
        """The last fine-tuning's epochs (the pre-training's are in ``pretrained_.history_``)."""
        return self._fitted().history_

    def predict(self, user_ids: Any, item_ids: Any, **options: Any) -> Any:
        return self._fitted().predict(user_ids, item_ids, **options)

    def predict_indices(self, users: Any, items: Any, **options: Any) -> Any:
        return self._fitted().predict_indices(users, items, **options)

    def encode(self, *args: Any, **options: Any) -> Any:
        return self._fitted().encode(*args, **options)

    def decode(self, *args: Any, **options: Any) -> Any:
        return self._fitted().decode(*args, **options)

    def to_onnx(self, path: str | Path, graph: str = "predict", **options: Any) -> Path:
        return self._fitted().to_onnx(path, graph, **options)

    def score(self, test: RatingSet) -> float:
        return self._fitted().score(test)

    def recommend(self, user_id: Any, n: int = 10, exclude_seen: bool = True, *,
                  min_support: int = DEFAULT_MIN_SUPPORT) -> tuple[np.ndarray, np.ndarray]:
        return self._fitted().recommend(user_id, n, exclude_seen, min_support=min_support)

    def to_backend(self, backend: str) -> "StackedCFN":
        """A new StackedCFN equal to this one whose fitted networks run on ``backend`` (see
        :meth:`CFN.to_backend`); this one is left as it is."""
        resolve_backend(backend, self.dtype, self.dropout)
        moved = copy.copy(self)
        moved.backend = backend
        for name in ("pretrained_", "model_"):
            if name in self.__dict__:
                setattr(moved, name, getattr(self, name).to_backend(backend))
        return moved

    def save(self, path: str | Path) -> Path:
        """Save the fitted network as a plain :class:`CFN` model file (``CFN.load`` reads it)."""
        return self._fitted().save(path)


#: The constructor: CFN's settings (but ``profile``) with the authors' ML-1M depth as defaults, and the
#: pre-training's settings.
_SIGNATURE = signature({"hidden": (700, 500), "epochs": 15}, exclude=("profile",),
                       extra=(inspect.Parameter("pretrain", inspect.Parameter.KEYWORD_ONLY, default=None),))
StackedCFN.param_names = parameter_names(_SIGNATURE)
StackedCFN.__init__.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
