"""``CFN(kind="auto")``: which autoencoder and which centring a data set gets, chosen on validation.

The candidates are I-CFN and U-CFN, each with the paper's per-sample centring and with the bias
model's (``centring="bias"``, see :mod:`cfn_fast.preprocessing`); a ``centring`` given to the model
keeps only that one.  Each candidate is the model's own settings (defaults, seed, backend, side
information) trained on the training set less a validation part (:data:`VALIDATION_FRACTION` of
its ratings, drawn with the model's seed), for the model's number of epochs, and scored on that
part; the best validation RMSE wins and the model is then trained on all of the training set.
A validation set passed to ``fit`` is used instead of a carved part (the candidates then train on
all of the training set).  The test set is never looked at.  The cost: up to four fits on 90 % of the data
before the real one (about 5x a fixed kind).

Why a validation run and not a rule: which one wins depends on more than the shape.  On the
density sweep (bench/README.md) the better-observed side wins on most sets but not on a set with
5,600 users x 30 items, and the bias centring wins on sparse sets (3-27 ratings per sample) and on
ML-1M's U-CFN but loses on ML-1M's I-CFN.  The shape rule :func:`~cfn_fast.settings.choose_kind`
(with the bias centring, the safer one on little data) is kept for sets too small to hold a
validation part (under :data:`MIN_RATINGS_FOR_VALIDATION` ratings) and for ``epochs=0``.

This module never imports the estimator: it gets the model and builds candidates with its class.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..data.ratings import RatingSet
from ..data.split import train_test_split
from ..settings import choose_kind
from .trainer import TrainingDiverged

__all__ = ["KindChoice", "select_kind", "candidates", "VALIDATION_FRACTION", "MIN_RATINGS_FOR_VALIDATION",
           "VALIDATION_SEED_OFFSET"]

log = logging.getLogger("cfn_fast")

#: Share of the training ratings held out to compare the candidates.
VALIDATION_FRACTION = 0.1

#: Fewest training ratings for a validation run (10 % of it is then at least 20 ratings).
MIN_RATINGS_FOR_VALIDATION = 200

#: Added to the model's seed for the validation draw, so that it differs from a test split drawn
#: with the same seed (as :func:`cfn_fast.data.train_validation_test_split` does).
VALIDATION_SEED_OFFSET = 1_000_003

KINDS = ("item", "user")


@dataclass(frozen=True)
class KindChoice:
    """What ``kind="auto"`` chose (``CFN.selection_``)."""

    kind: str
    centring: str
    how: str            # "validation part", "validation set given to fit" or "shape rule (...)"
    validation_rmse: dict[str, float] = field(default_factory=dict)  # "item/sample" -> RMSE (inf: diverged)
    seconds: float = 0.0

    def summary(self) -> str:
        name = f"{'I' if self.kind == 'item' else 'U'}-CFN, {self.centring} centring"
        if not self.validation_rmse:
            return f"{name} by the {self.how}"
        scores = ", ".join(f"{key} {value:.4f}" for key, value in self.validation_rmse.items())
        return f"{name} on the {self.how} ({scores}; {self.seconds:.1f} s)"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "centring": self.centring, "how": self.how,
                "validation_rmse": dict(self.validation_rmse), "seconds": self.seconds}


def candidates(centring: str | None) -> list[tuple[str, str]]:
    """``(kind, centring)`` pairs compared; ties go to the first (I-CFN, the paper's centring)."""
    centrings = ("sample", "bias") if centring is None else (centring,)
    return [(kind, c) for kind in KINDS for c in centrings]


def select_kind(model: Any, train: RatingSet, user_features: Any = None, item_features: Any = None,
                divergence: Any = "auto", validation: RatingSet | None = None) -> KindChoice:
    """Choose ``(kind, centring)`` for ``model`` (a ``CFN`` with ``kind="auto"``) on ``train``.

    A ``validation`` set given to ``fit`` is used as it is (the candidates then train on all of
    ``train``); else one is carved from ``train``."""
    if (validation is None and train.nnz < MIN_RATINGS_FOR_VALIDATION) or not model.epochs:
        kind = choose_kind(train.n_users, train.n_items, train.nnz)
        why = "too few ratings to validate" if model.epochs else "epochs=0"
        return KindChoice(kind, model.centring or "bias", f"shape rule ({why})")
    started = time.perf_counter()
    if validation is None:
        part, validation = train_test_split(train, VALIDATION_FRACTION, seed=int(model.seed) + VALIDATION_SEED_OFFSET)
        how = "validation part"
    else:
        part, how = train, "validation set given to fit"
    params = {**model.get_params(), "verbose": 0, "profile": False}
    scores: dict[str, float] = {}
    for kind, centring in candidates(model.centring):
        candidate = type(model)(**{**params, "kind": kind, "centring": centring})
        try:
            candidate.fit(part, user_features, item_features, divergence=divergence)
            score = candidate.score(validation)
        except TrainingDiverged:
            score = math.inf
        scores[f"{kind}/{centring}"] = score if math.isfinite(score) else math.inf
        log.info("kind='auto': %s-CFN, %s centring: validation RMSE %.4f", kind, centring, scores[f"{kind}/{centring}"])
    best = min(scores, key=lambda key: scores[key])  # first of equals: dicts keep the candidates' order
    kind, centring = best.split("/")
    return KindChoice(kind, centring, how, scores, time.perf_counter() - started)
