"""Every method of the paper's comparison behind one recipe: fixed settings (the budget), a random-search
space for the tuned hyper-parameters, and a factory ``make(params, seed) -> estimator``.

CFN and the baselines share the estimator interface the harness needs: ``fit(train)``,
``predict_indices(users, items)``, ``score(test)``.  CFN++ variants reuse the hyper-parameters chosen
for the plain variant (the paper changes only the input), so they are never searched separately.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfn_fast.settings import DEFAULTS, search_space
from cfn_fast.tools import baselines as bl

__all__ = ["PRESETS", "TABLE1_METHODS", "Method", "Preset", "method_table", "sample_params"]


# ----------------------------------------------------------------------------- search-space atoms
@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class Choice:
    values: tuple

    def draw(self, rng: np.random.Generator) -> Any:
        value = self.values[int(rng.integers(len(self.values)))]
        return value.item() if isinstance(value, np.generic) else value


def sample_params(space: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration (4 significant digits, so the JSON stays readable)."""
    out = {}
    for name in sorted(space):
        value = space[name].draw(rng)
        out[name] = float(f"{value:.4g}") if isinstance(value, float) else value
    return out


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """Sizes of everything: ``full`` reproduces the paper's settings, ``quick`` is a smoke test."""

    name: str
    cfn_hidden: tuple[int, ...]
    cfn_epochs: int
    autorec_hidden: int
    autorec_iter: int
    als_ranks: tuple[int, ...]
    als_iter: int
    bpmf_ranks: tuple[int, ...]
    bpmf_samples: int
    bpmf_burn_in: int
    svdf_rank: int
    svdf_epochs: int
    llorma_rank: int
    llorma_anchors: int
    llorma_iter: int
    search_trials: int
    fig3_betas: tuple[float, ...]
    fig3_masks: tuple[float, ...]
    fig4_ratios: tuple[float, ...]
    table3_hidden: int
    table3_epochs: int
    deep_hidden: tuple[int, int] = (700, 500)      # the authors' 2-layer ML-1M I-CFN (StackedCFN)
    deep_pretrain_epochs: int = 10
    deep_finetune_epochs: int = 15


PRESETS = {
    "full": Preset("full", cfn_hidden=(600,), cfn_epochs=20, autorec_hidden=500, autorec_iter=120,
                   als_ranks=(20, 50, 80), als_iter=10, bpmf_ranks=(10, 15), bpmf_samples=40, bpmf_burn_in=10,
                   svdf_rank=64, svdf_epochs=20, llorma_rank=20, llorma_anchors=30, llorma_iter=5,
                   search_trials=8, fig3_betas=(0.0, 0.25, 0.5, 1.0), fig3_masks=(0.0, 0.15, 0.25, 0.4),
                   fig4_ratios=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), table3_hidden=700, table3_epochs=20),
    "quick": Preset("quick", cfn_hidden=(32,), cfn_epochs=4, autorec_hidden=32, autorec_iter=15,
                    als_ranks=(5, 10), als_iter=4, bpmf_ranks=(5,), bpmf_samples=8, bpmf_burn_in=3,
                    svdf_rank=8, svdf_epochs=4, llorma_rank=5, llorma_anchors=5, llorma_iter=3,
                    search_trials=2, fig3_betas=(0.25, 1.0), fig3_masks=(0.0, 0.25),
                    fig4_ratios=(0.3, 0.6, 0.9), table3_hidden=64, table3_epochs=2,
                    deep_hidden=(32, 16), deep_pretrain_epochs=2, deep_finetune_epochs=2),
}


# ----------------------------------------------------------------------------- methods
@dataclass
class Method:
    """One row of Table 1."""

    name: str
    kind: str                                   # "cfn" or "baseline"
    source: str
    make: Callable[[dict[str, Any], int], Any]  # (tuned params, seed) -> unfitted estimator
    fixed: dict[str, Any]                       # settings not searched (the budget)
    space: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)   # trial 0 of the search
    candidates: tuple[dict[str, Any], ...] = ()  # further fixed trials (published configurations)
    max_trials: int | None = None                # cap for expensive methods / small discrete spaces
    trials_factor: float = 1.0                   # cheap methods get more trials
    tuned_as: str | None = None                 # reuse another method's tuned parameters
    differences: str = ""
    cost: float = 1.0                            # rough relative cost (orders the search)

    def settings(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **params}


def _cfn_factory(kind: str, side: bool, preset: Preset, backend: str) -> Callable[[dict[str, Any], int], Any]:
    from cfn_fast.model import CFN

    def make(params: dict[str, Any], seed: int) -> Any:
        return CFN(kind=kind, hidden=preset.cfn_hidden, epochs=preset.cfn_epochs, backend=backend,
                   use_side_info=side, seed=seed, **params)
    return make


def _cfn_space() -> dict[str, Any]:
    """The ranges of the tuned settings, as declared with them (:func:`cfn_fast.settings.search_space`)."""
    atoms = {"log": LogUniform, "uniform": Uniform}
    return {name: atoms[kind](low, high) for name, (kind, low, high) in search_space().items()}


def _cfn_defaults(kind: str) -> dict[str, Any]:
    return {name: getattr(DEFAULTS[kind], name) for name in search_space()}


#: The authors' shipped Torch configurations (SPEC: ML-1M layer-1 config and the ML-1M I-CFN tutorial);
#: tried as fixed candidates of the search, scored on validation like any other trial.
_AUTHORS_CONFIGS = (
    {"lr": 0.0901, "lr_decay": 0.176, "weight_decay": 0.0251, "alpha": 1.108, "beta": 0.72, "mask_ratio": 0.138},
    {"lr": 0.07, "lr_decay": 0.3, "weight_decay": 0.05, "alpha": 1.0, "beta": 0.5, "mask_ratio": 0.25},
)


CFN_SOURCE = "this package (cfn_fast.CFN), Strub et al. 2016"
STACKED_SOURCE = ("this package (cfn_fast.StackedCFN): the authors' 2-layer recipe for ML-1M (Torch TrainNetwork.lua, "
                  "conf.movieLens.1M.V.lua)")
STACKED_DIFFERENCES = ("layer-1 pre-training with the authors' settings (fixed), then the h1-h2-h1 stack fine-tuned; "
                       "the authors' inner-layer pre-training (5 epochs at lr 1e-5) is skipped, the inner layers start "
                       "from Torch's initialisation; fine-tuning settings chosen on the validation split")


def _stacked_factory(kind: str, side: bool, preset: Preset, backend: str) -> Callable[[dict[str, Any], int], Any]:
    from cfn_fast.stacking import AUTHORS_ML1M_PRETRAIN, StackedCFN
    pretrain = {**AUTHORS_ML1M_PRETRAIN, "epochs": preset.deep_pretrain_epochs}

    def make(params: dict[str, Any], seed: int) -> Any:
        return StackedCFN(kind=kind, hidden=preset.deep_hidden, epochs=preset.deep_finetune_epochs,
                          pretrain=pretrain, backend=backend, use_side_info=side, seed=seed,
                          **{"batch_size": 25, **params})
    return make


def _stacked_defaults() -> dict[str, Any]:
    from cfn_fast.stacking import AUTHORS_ML1M_FINETUNE
    return {k: v for k, v in AUTHORS_ML1M_FINETUNE.items() if k not in ("epochs", "batch_size")}


def method_table(preset: Preset, backend: str = "auto") -> dict[str, Method]:
    """All methods, in Table 1's order."""
    p = preset
    methods: dict[str, Method] = {}
    for kind, letter in (("user", "U"), ("item", "I")):
        fixed = {"hidden": list(p.cfn_hidden), "epochs": p.cfn_epochs, "batch_size": 35, "backend": backend}
        methods[f"{letter}-CFN"] = Method(
            f"{letter}-CFN", "cfn", CFN_SOURCE, _cfn_factory(kind, False, p, backend), {**fixed, "side_info": False},
            _cfn_space(), _cfn_defaults(kind),
            candidates=tuple(c for c in _AUTHORS_CONFIGS if c != _cfn_defaults(kind)), trials_factor=3.0, cost=0.5)
        methods[f"{letter}-CFN++"] = Method(
            f"{letter}-CFN++", "cfn", CFN_SOURCE, _cfn_factory(kind, True, p, backend),
            {**fixed, "side_info": True}, tuned_as=f"{letter}-CFN", cost=0.5)

    from cfn_fast.stacking import AUTHORS_ML1M_PRETRAIN
    deep_fixed = {"hidden": list(p.deep_hidden), "epochs": p.deep_finetune_epochs, "batch_size": 25,
                  "pretrain": {**AUTHORS_ML1M_PRETRAIN, "hidden": p.deep_hidden[0], "epochs": p.deep_pretrain_epochs},
                  "backend": backend}
    deep_space = {"lr": LogUniform(0.008, 0.04), "lr_decay": Uniform(0.1, 0.5), "weight_decay": LogUniform(0.02, 0.1),
                  "alpha": Uniform(0.8, 1.2), "beta": Uniform(0.3, 0.9), "mask_ratio": Uniform(0.05, 0.3)}
    methods["I-CFN 2-layer"] = Method(
        "I-CFN 2-layer", "cfn", STACKED_SOURCE, _stacked_factory("item", False, p, backend),
        {**deep_fixed, "side_info": False}, deep_space, _stacked_defaults(), differences=STACKED_DIFFERENCES,
        cost=1.5, max_trials=max(2, p.search_trials // 2))
    methods["I-CFN++ 2-layer"] = Method(
        "I-CFN++ 2-layer", "cfn", STACKED_SOURCE, _stacked_factory("item", True, p, backend),
        {**deep_fixed, "side_info": True}, tuned_as="I-CFN 2-layer", differences=STACKED_DIFFERENCES, cost=1.5)

    def fixed_maker(cls: type, fixed: dict[str, Any]) -> Callable[[dict[str, Any], int], Any]:
        return lambda params, seed: cls(**{**fixed, **params, "seed": seed})

    autorec = {"hidden": p.autorec_hidden, "max_iter": p.autorec_iter, "optimizer": "lbfgs"}
    methods["I-AutoRec"] = Method("I-AutoRec", "baseline", bl.IAutoRec.source, fixed_maker(bl.IAutoRec, autorec),
                                  autorec, {"reg": LogUniform(100.0, 2000.0)}, {"reg": 400.0},
                                  differences=bl.IAutoRec.differences, cost=2.0,
                                  max_trials=max(3, p.search_trials // 2))
    als = {"n_iter": p.als_iter}
    methods["ALS-WR"] = Method("ALS-WR", "baseline", bl.ALSWR.source, fixed_maker(bl.ALSWR, als), als,
                               {"rank": Choice(p.als_ranks), "reg": LogUniform(0.03, 0.15)},
                               {"rank": p.als_ranks[len(p.als_ranks) // 2], "reg": 0.06},
                               differences=bl.ALSWR.differences, cost=1.0, trials_factor=2.0)
    bpmf = {"n_samples": p.bpmf_samples, "burn_in": p.bpmf_burn_in, "alpha": 2.0, "beta0": 2.0}
    methods["BPMF"] = Method("BPMF", "baseline", bl.BPMF.source, fixed_maker(bl.BPMF, bpmf), bpmf,
                             {"rank": Choice(p.bpmf_ranks)}, {"rank": p.bpmf_ranks[0]},
                             differences=bl.BPMF.differences, cost=1.5, max_trials=len(p.bpmf_ranks))
    svdf = {"rank": p.svdf_rank, "n_epochs": p.svdf_epochs, "batch_size": 2048, "use_side_info": True}
    methods["SVDFeature"] = Method("SVDFeature", "baseline", bl.SVDFeature.source, fixed_maker(bl.SVDFeature, svdf),
                                   svdf, {"lr": LogUniform(0.005, 0.05), "reg": LogUniform(0.01, 0.1),
                                          "reg_bias": LogUniform(0.001, 0.05), "lr_decay": Uniform(0.85, 0.97)},
                                   {"lr": 0.02, "reg": 0.05, "reg_bias": 0.005, "lr_decay": 0.92},
                                   differences=bl.SVDFeature.differences, cost=1.5)
    llorma = {"rank": p.llorma_rank, "n_anchors": p.llorma_anchors, "n_iter": p.llorma_iter, "embedding_rank": 10,
              "embedding_reg": 0.1}
    methods["LLORMA"] = Method("LLORMA", "baseline", bl.LLORMA.source, fixed_maker(bl.LLORMA, llorma), llorma,
                               {"reg": LogUniform(0.015, 0.15), "width": Choice((0.8, 1.0, 1.2))},
                               {"reg": 0.05, "width": 0.8}, differences=bl.LLORMA.differences, cost=2.0)
    return methods


def linear_method(preset: Preset, icfn_params: dict[str, Any]) -> Method:
    """The non-linearity ablation: I-CFN's α, β, masking ratio and width, lr / decays re-tuned."""
    keep = {k: icfn_params[k] for k in ("alpha", "beta", "mask_ratio") if k in icfn_params}
    fixed = {"hidden": list(preset.cfn_hidden), "epochs": preset.cfn_epochs, "batch_size": 35, **keep}

    def make(params: dict[str, Any], seed: int) -> Any:
        return bl.LinearICFN(**{**fixed, "hidden": tuple(preset.cfn_hidden), **params, "seed": seed})
    return Method("Linear I-CFN", "baseline", bl.LinearICFN.source, make, fixed,
                  {"lr": LogUniform(0.001, 0.03), "lr_decay": Uniform(0.1, 0.6),
                   "weight_decay": LogUniform(0.001, 0.05)},
                  {"lr": 0.005, "lr_decay": 0.3, "weight_decay": 0.01}, differences=bl.LinearICFN.differences, cost=3.0,
                  max_trials=max(3, preset.search_trials // 2))


#: Rows of Table 1 in the paper's order.
TABLE1_METHODS = ("BPMF", "ALS-WR", "SVDFeature", "LLORMA", "I-AutoRec", "U-CFN", "U-CFN++", "I-CFN", "I-CFN++",
                  "I-CFN 2-layer", "I-CFN++ 2-layer")
