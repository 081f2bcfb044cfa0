"""``CFN(kind="blend")``, the default: the bias model and CFN networks, weighted on validation.

What a blend predicts: ``clip(bias + Σ_k w_k · (member_k − bias))``, where ``bias`` is the regularised bias
model μ + b_u + b_i (:class:`~cfn_fast.preprocessing.BiasModel`) and each member is a CFN network's clipped
prediction, or the low-rank factors' (:class:`~cfn_fast.training.factors.Factors`, ALS-WR: an autoencoder's errors
and a factorisation's differ, and the blend gains from that) (:class:`Blend`).

How it is chosen, never looking at a test set:

1. The candidates (:func:`candidate_params`: for ``quality="default"`` I-CFN and U-CFN, each with the
   paper's per-sample centring and with the bias centring, trained with the model's settings; ``"best"`` adds
   longer, wider, other-seed, dropout (:data:`DROPOUT_MEMBER`) and deeper pre-trained (:data:`PRETRAINED_MEMBER`)
   I-CFNs; and the factor members of :data:`FACTOR_CANDIDATES`) are trained on the training set less a validation part
   (:data:`~cfn_fast.training.selection.VALIDATION_FRACTION` of its ratings, drawn with the model's seed; a
   validation set given to ``fit`` is used instead), and the bias model on the same part.
2. The weights minimise the squared error on the validation part, non-negative (a member's departure
   from the bias model is trusted or not, never reversed), with a ridge penalty of ``τ`` pseudo-ratings
   per member pulling them towards 0, i.e. towards the bias model alone.  ``τ`` is chosen from
   :data:`SHRINKAGE_GRID` (which ends in ∞: the bias model alone) by :data:`CV_FOLDS`-fold
   cross-validation *within* the validation part, with the one-standard-error rule
   (:func:`choose_shrinkage`).  That is the shrinkage small sets need: with 5,000 ratings
   the validation part holds 500, and when the networks do not beat the bias model there the cross-validation
   keeps the bias model alone.
3. The networks with a weight (at most :data:`MAX_MEMBERS` of them, the largest) and the factors, if they
   have one, are trained again on all of the training set, with the weights found; so is the bias model.  A
   folded-in user (item) is predicted by the members that can fold one in (U-CFN and the factors for users,
   I-CFN and the factors for items) with weights chosen the same way over those members alone.

Sets too small to hold a validation part (under
:data:`~cfn_fast.training.selection.MIN_RATINGS_FOR_VALIDATION` ratings), and ``epochs=0``, get the bias
model alone: nothing can show that a network would do better.

This module never imports the estimator: it gets the model and builds the members with its class.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.linalg
import scipy.optimize

from ..data.ratings import RatingSet
from ..data.split import train_test_split
from ..metrics import rmse
from ..network import insert_middle_layers
from ..preprocessing import BiasModel
from ..profiling import Profile
from ..settings import AUTHORS_ML1M_FINETUNE, AUTHORS_ML1M_PRETRAIN, KINDS
from .factors import Factors
from .selection import MIN_RATINGS_FOR_VALIDATION, VALIDATION_FRACTION, VALIDATION_SEED_OFFSET
from .trainer import TrainingDiverged

__all__ = ["Blend", "fit_blend", "candidate_params", "blend_weights", "choose_shrinkage", "SHRINKAGE_GRID", "CV_FOLDS",
           "MAX_MEMBERS", "DROPOUT_MEMBER", "PRETRAINED_MEMBER", "PRETRAIN", "fit_member",
           "KERNEL_MEMBER", "candidate_name"]

log = logging.getLogger("cfn_fast")

#: Ridge penalties tried, in pseudo-ratings per member (a member's penalty is τ times its mean squared
#: departure from the bias model); ∞ is the bias model alone.
SHRINKAGE_GRID = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, math.inf)

#: Folds of the cross-validation that chooses the shrinkage inside the validation part.
CV_FOLDS = 5

#: Most networks a blend keeps (and trains again on the whole training set), by quality: this bounds the
#: default's fit time and its recommend time (bench/README.md, "Predictions": on ML-1M a third network changed
#: the test RMSE by 4e-5 and cost 15 % more fit time and 35 % more recommend time).
MAX_MEMBERS = {"default": 2, "best": 8}

#: ``(rank, reg)`` of the factor members a blend weighs, by quality (ML-1M validation figures in bench/README.md:
#: rank 20 alone beat rank 50 and took a third of the time; several ranks and penalties blend better than one).
FACTOR_CANDIDATES = {"default": ((20, 0.05),), "best": ((20, 0.05), (50, 0.05), (80, 0.08), (10, 0.03))}

#: ``quality="best"``: an I-CFN trained twice as long with dropout on its hidden layer (its errors differ from the
#: other I-CFNs'; ML-1M validation figures in bench/README.md, "Blend candidates").
DROPOUT_MEMBER = {"hidden": (600,), "dropout": 0.2}

#: ``quality="best"``: the authors' deeper I-CFN ``in -> 700 -> 500 -> 700 -> in``, its outer layer pre-trained alone
#: first (:data:`~cfn_fast.settings.AUTHORS_ML1M_PRETRAIN`, then the fine-tuning settings; as
#: :class:`~cfn_fast.StackedCFN`), the epochs of both steps scaled by the blend's ``epochs`` / 20.
PRETRAINED_MEMBER = {"hidden": (700, 500, 700), **AUTHORS_ML1M_FINETUNE}

#: The key of a candidate's pre-training settings (:func:`fit_member`); not a setting of the fitted member.
PRETRAIN = "pretrain"

#: The Sparse-FC-style member of ``quality="best"``: an I-CFN with kernelised weights (``kernel_dim``, Muller et
#: al. 2018: 5-dimensional unit vectors).  One layer of 600 rather than their two of 500: on the ML-1M validation
#: part it scored 0.8481 and took weight 0.062 in the blend, two layers of 500 0.8578 and 0.016 (bench/README.md,
#: "Kernelised weights").  It trains on the cpu engine (cuda has no kernelised weights).
KERNEL_MEMBER = {"kind": "item", "hidden": (600,), "kernel_dim": 5}

#: What the members do not take from the blend's own settings.
_NOT_FOR_MEMBERS = {"kind": None, "centring": None, "quality": "default"}


@dataclass
class Blend:
    """How a blend predicts: ``clip(bias + Σ_k w_k · (member_k − bias))``, each member's prediction clipped
    to the scale, the weights chosen on validation (:mod:`cfn_fast.training.blending`).

    ``weights``: one per member network, for known users and items.  ``fold_in_weights``: ``{"user": ...,
    "item": ...}``, the weights for a folded-in user (item): zero for the networks that cannot fold one in (an
    I-CFN's users are its inputs), chosen on validation as the others.  ``member_params``: each network's
    constructor settings.  ``factors``: the matrix-factorisation members (:class:`~cfn_fast.training.factors.Factors`)
    that earned a weight, with ``factor_weights`` ``{"pairs": ..., "user": ..., "item": ...}`` (one weight each).
    ``report``: how the weights were chosen (validation RMSEs, shrinkage, seconds)."""

    bias: BiasModel
    weights: np.ndarray
    fold_in_weights: dict[str, np.ndarray]
    member_params: tuple[dict[str, Any], ...]
    report: dict[str, Any] = field(default_factory=dict)
    factors: tuple[Factors, ...] = ()
    factor_weights: dict[str, np.ndarray] = field(
        default_factory=lambda: {use: np.zeros(0) for use in ("pairs", "user", "item")})

    def combine(self, use: str, base: np.ndarray, members: list[np.ndarray | None],
                factors: Callable[[Factors], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(ratings, unclipped)`` of the bias model's predictions ``base``, the member networks' (clipped)
        predictions and the factor members' (``factors(f)``, computed only for those with a weight), blended
        with the weights of ``use``: ``"pairs"`` (known users and items), or ``"user"`` / ``"item"`` (a fold-in)."""
        weights = self.weights if use == "pairs" else self.fold_in_weights[use]
        unclipped = np.array(base, dtype=np.float64)
        for weight, member in zip(weights, members):
            if weight:
                unclipped += weight * (member - base)
        for weight, factor in zip(self.factor_weights[use], self.factors):
            if weight:
                unclipped += weight * (factors(factor) - base)
        return np.clip(unclipped, self.bias.low, self.bias.high), unclipped

    def summary(self) -> str:
        members = [f"{p['kind']}/{p['centring']}×{w:.3f}" for p, w in zip(self.member_params, self.weights)]
        members += [f"factors r{f.rank}×{w:.3f}" for f, w in zip(self.factors, self.factor_weights["pairs"])]
        return f"bias model + ({', '.join(members) or 'no network'})"


def candidate_params(params: dict[str, Any], quality: str) -> list[dict[str, Any]]:
    """Constructor settings of the networks a blend weighs, from the blend's own ``params``: for
    ``"default"`` I-CFN and U-CFN with each centring (a ``centring`` given keeps only that one); ``"best"``
    adds the same networks trained twice as long, I-CFN with 1,000 hidden units and other seeds, and with the
    first centring an I-CFN with dropout (:data:`DROPOUT_MEMBER`) and a deeper pre-trained one
    (:data:`PRETRAINED_MEMBER`, whose :data:`PRETRAIN` entry :func:`fit_member` takes), and a Sparse-FC-style
    I-CFN with kernelised weights (:data:`KERNEL_MEMBER`)."""
    base = {**params, **_NOT_FOR_MEMBERS}
    centrings = ("sample", "bias") if params.get("centring") is None else (params["centring"],)
    out = [{**base, "kind": kind, "centring": c} for kind in KINDS for c in centrings]
    if quality == "best":
        epochs = 2 * int(params["epochs"])
        seed = int(params["seed"])
        out += [{**member, "epochs": epochs, "seed": seed + 1} for member in list(out)]
        out += [{**base, "kind": "item", "centring": c, "hidden": (1000,), "epochs": epochs, "seed": seed + 2}
                for c in centrings]
        first = {**base, "kind": "item", "centring": centrings[0]}
        out.append({**first, **DROPOUT_MEMBER, "epochs": epochs, "seed": seed + 3})
        blend_epochs = int(params["epochs"])
        out.append({**first, **_scaled(PRETRAINED_MEMBER, blend_epochs), "seed": seed + 4,
                    PRETRAIN: _scaled(AUTHORS_ML1M_PRETRAIN, blend_epochs)})
        out.append({**base, **KERNEL_MEMBER, "centring": centrings[0], "seed": seed + 5})
    return out


def _scaled(recipe: dict[str, Any], blend_epochs: int) -> dict[str, Any]:
    """``recipe`` with its epochs scaled by ``blend_epochs / 20``: the authors' epochs at the default 20."""
    return {**recipe, "epochs": max(1, round(recipe["epochs"] * blend_epochs / 20))}


def fit_member(model_class: Callable[..., Any], member: dict[str, Any], train: RatingSet, user_features: Any,
               item_features: Any, divergence: Any) -> Any:
    """A candidate network fitted on ``train``: ``model_class(**member)``; for a member with a :data:`PRETRAIN`
    entry and ``hidden=(h1, h2, h1)``, the authors' layer-wise recipe (:class:`~cfn_fast.StackedCFN`): a
    ``(h1,)`` network trained with those settings, a middle pair of width ``h2`` inserted, the whole fine-tuned."""
    settings = _settings(member)
    model = model_class(**settings)
    features = {"user_features": user_features, "item_features": item_features, "divergence": divergence}
    if PRETRAIN not in member:
        return model.fit(train, **features)
    hidden = tuple(settings["hidden"])
    if len(hidden) != 3 or hidden[0] != hidden[2]:
        raise ValueError(f"a pre-trained member has hidden=(h1, h2, h1), got {hidden}")
    outer = model_class(**{**settings, **member[PRETRAIN], "hidden": hidden[:1]}).fit(train, **features)
    start = insert_middle_layers(outer.layers_, hidden[1], seed=int(settings["seed"]) + 2)
    return model.fit(train, **features, initial_layers=start)


def _settings(member: dict[str, Any]) -> dict[str, Any]:
    """A member's constructor settings (what the blend records): without its pre-training recipe."""
    return {name: value for name, value in member.items() if name != PRETRAIN}


def fit_blend(model: Any, train: RatingSet, user_features: Any = None, item_features: Any = None,
              divergence: Any = "auto", validation: RatingSet | None = None) -> tuple[list[Any], Blend, Any]:
    """Train the blend ``model`` (a ``CFN`` with ``kind="blend"``) on ``train``: ``(members, blend, profile)``,
    the fitted member models in the blend's order, the :class:`Blend`, and with ``profile=True`` one
    :class:`~cfn_fast.profiling.Profile` of every network trained (candidates and refits, in order)."""
    started = time.perf_counter()
    params = model.get_params()
    if (validation is None and train.nnz < MIN_RATINGS_FOR_VALIDATION) or not params["epochs"]:
        why = "too few ratings to validate" if params["epochs"] else "epochs=0"
        report = {"how": f"bias model alone ({why})", "seconds": time.perf_counter() - started}
        return [], Blend(BiasModel.fit(train), np.zeros(0), {"user": np.zeros(0), "item": np.zeros(0)}, (),
                         report), None
    if validation is None:
        part, validation = train_test_split(train, VALIDATION_FRACTION,
                                            seed=int(params["seed"]) + VALIDATION_SEED_OFFSET)
        how = "validation part"
    else:
        part, how = train, "validation set given to fit"
    candidates, fitted, predictions, scores = candidate_params(params, params["quality"]), [], [], {}
    for member in candidates:
        name = candidate_name(member)
        try:
            candidate = fit_member(type(model), member, part, user_features, item_features, divergence)
            predicted = candidate.predict_indices(validation.user, validation.item)
        except TrainingDiverged:
            log.info("kind='blend': %s diverged; left out", name)
            continue
        scores[name] = rmse(predicted, validation.rating)
        fitted.append((member, candidate))
        predictions.append(predicted)
        log.info("kind='blend': %s: validation RMSE %.4f", name, scores[name])
    seed, configs = int(params["seed"]), FACTOR_CANDIDATES[params["quality"]]
    bias = BiasModel.fit(part)
    base = bias.predict(validation.user, validation.item)
    factor_models = [Factors.fit(part, rank, reg, seed=seed) for rank, reg in configs]
    for (rank, reg), factors in zip(configs, factor_models):     # the factor members are the last columns
        predictions.append(factors.predict(bias, validation.user, validation.item))
        scores[f"factors/r{rank}/reg{reg:g}"] = rmse(predictions[-1], validation.rating)
    deltas = np.stack(predictions, axis=1) - base[:, None]
    residual = validation.rating.astype(np.float64) - base
    shrinkage, cv_rmse = choose_shrinkage(deltas, residual, seed=seed)
    weights = blend_weights(deltas, residual, shrinkage)
    n = len(fitted)
    chosen_factors = [j for j in range(len(configs)) if weights[n + j] > 0]
    keep = _kept(weights[:n], MAX_MEMBERS[params["quality"]]) + [n + j for j in chosen_factors]
    weights = blend_weights(deltas[:, keep], residual, shrinkage)
    kept = [fitted[k] for k in keep if k < n]
    kinds = np.array([member["kind"] for member, _ in kept] + ["factors"] * len(chosen_factors))
    fold_in = {side: _restricted(deltas[:, keep], residual, shrinkage, (kinds == side) | (kinds == "factors"))
               for side in KINDS}
    report = {"how": how, "validation_rmse": scores, "bias_rmse": rmse(base, validation.rating),
              "cv_rmse": cv_rmse, "shrinkage": shrinkage,
              "blend_rmse": rmse(np.clip(base + deltas[:, keep] @ weights, bias.low, bias.high),
                                 validation.rating)}
    if how == "validation part":
        kept = [(member, fit_member(type(model), member, train, user_features, item_features, divergence))
                for member, _ in kept]
        bias = BiasModel.fit(train)
        factor_models = [Factors.fit(train, *configs[j], seed=seed) if j in chosen_factors else None
                         for j in range(len(configs))]
    factors = tuple(factor_models[j] for j in chosen_factors)
    report["seconds"] = time.perf_counter() - started
    runs = [c for _, c in fitted] + ([c for _, c in kept] if how == "validation part" else [])
    profile = Profile.combined([run.profile_ for run in runs if run.profile_ is not None])
    m = len(kept)
    factor_weights = {use: w[m:] for use, w in (("pairs", weights), ("user", fold_in["user"]),
                                                  ("item", fold_in["item"]))}
    blend = Blend(bias, weights[:m], {side: w[:m] for side, w in fold_in.items()},
                  tuple(_settings(member) for member, _ in kept), report, factors, factor_weights)
    log.info("kind='blend' chose %s (validation RMSE %.4f, bias model %.4f; %.1f s)", blend.summary(),
             report["blend_rmse"], report["bias_rmse"], report["seconds"])
    return [candidate for _, candidate in kept], blend, profile


def candidate_name(member: dict[str, Any]) -> str:
    """A candidate's name in the blend's report (kind, centring, widths, variant, epochs, seed)."""
    extra = (f"/k{member['kernel_dim']}" if member.get("kernel_dim") else "") + \
        (f"/dropout{member['dropout']:g}" if member.get("dropout") else "") + \
        ("/pretrained" if PRETRAIN in member else "")
    return (f"{member['kind']}/{member['centring']}/h{'x'.join(map(str, member['hidden']))}{extra}"
            f"/e{member['epochs']}/s{member['seed']}")


def _kept(weights: np.ndarray, most: int) -> list[int]:
    """Indices of the members with a weight, the ``most`` largest, in their original order."""
    order = [int(k) for k in np.argsort(-weights, kind="stable") if weights[k] > 0][:most]
    return sorted(order)


def _restricted(deltas: np.ndarray, residual: np.ndarray, shrinkage: float, usable: np.ndarray) -> np.ndarray:
    """Weights over the ``usable`` members alone (zero elsewhere), with the same shrinkage."""
    weights = np.zeros(deltas.shape[1])
    if usable.any():
        weights[usable] = blend_weights(deltas[:, usable], residual, shrinkage)
    return weights


def blend_weights(deltas: np.ndarray, residual: np.ndarray, shrinkage: float) -> np.ndarray:
    """Non-negative ``w`` minimising ``‖residual − deltas·w‖² + shrinkage · Σ_k mean(deltas_k²) · w_k²``:
    the members' departures from the bias model fitted to what it leaves, each penalised as ``shrinkage``
    pseudo-ratings (∞: all zero, the bias model alone)."""
    k = deltas.shape[1]
    if k == 0 or math.isinf(shrinkage):
        return np.zeros(k)
    gram = deltas.T @ deltas
    gram[np.diag_indices(k)] += shrinkage * np.mean(deltas ** 2, axis=0) + 1e-12 * (1.0 + np.trace(gram))
    # nnls on the Cholesky factor of the normal equations: the same solution without the n x k matrix
    factor = scipy.linalg.cholesky(gram, lower=False)
    target = scipy.linalg.solve_triangular(factor, deltas.T @ residual, trans="T")
    weights, _ = scipy.optimize.nnls(factor, target)
    return weights


def choose_shrinkage(deltas: np.ndarray, residual: np.ndarray, seed: int) -> tuple[float, dict[str, float]]:
    """The ridge penalty of :data:`SHRINKAGE_GRID` chosen by :data:`CV_FOLDS`-fold cross-validation of
    :func:`blend_weights` on the validation part, and each penalty's cross-validated RMSE.

    The one-standard-error rule (as glmnet's ``lambda.1se``), on paired errors: the largest penalty whose
    cross-validated squared error exceeds the least one by no more than the standard error of their
    rating-by-rating difference.  Why: a small validation part makes the least error partly luck, and a
    blend that only seems better there can lose to the bias model on new ratings; the larger penalty is
    closer to the bias model, which is what the blend must never lose to."""
    n = len(residual)
    fold = np.random.default_rng(seed).permutation(n) % CV_FOLDS
    squared = np.empty((len(SHRINKAGE_GRID), n))
    for row, shrinkage in enumerate(SHRINKAGE_GRID):
        for f in range(CV_FOLDS):
            held = fold == f
            weights = blend_weights(deltas[~held], residual[~held], shrinkage)
            squared[row, held] = (residual[held] - deltas[held] @ weights) ** 2
    errors = {str(s): math.sqrt(float(e.mean())) if n else 0.0 for s, e in zip(SHRINKAGE_GRID, squared)}
    best = int(np.argmin(squared.mean(axis=1))) if n else len(SHRINKAGE_GRID) - 1
    for row in range(len(SHRINKAGE_GRID) - 1, best, -1):      # from the bias model alone downwards
        difference = squared[row] - squared[best]
        if difference.mean() <= difference.std() / math.sqrt(n):
            return SHRINKAGE_GRID[row], errors
    return SHRINKAGE_GRID[best], errors
