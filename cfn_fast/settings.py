"""The one declaration of a CFN's settings, and what is derived from it.

:data:`SETTINGS` lists every constructor parameter of :class:`~cfn_fast.CFN` once: its default (or its
per-kind defaults), the check a value must pass, the help text, whether the training step needs it
(:class:`~cfn_fast.engine.TrainConfig`) and the range a search draws it from.  From it come:

* the estimator's signature, ``get_params`` / ``set_params`` / ``repr`` (:class:`EstimatorParams`);
* :data:`DEFAULTS` (the per-kind defaults) and :func:`resolve` (validation, defaults filled in, the
  density-aware step);
* the engine's :class:`~cfn_fast.engine.TrainConfig` (:func:`train_config`);
* the command line's model options (``cfn_fast.cli``) and the search space of ``cfn tune`` and the
  paper bench (:func:`search_space`).

Adding a hyper-parameter touches this declaration, the kernels that use it, and a test.

Not in the paper: the per-kind defaults (chosen on a validation split of ML-1M's training set; the
search is described in bench/README.md), the density-aware default step (:func:`density_step_factor`)
and the shape rule for sets too small to validate (:func:`choose_kind`).
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

__all__ = ["Setting", "SETTINGS", "TrainConfig", "SETTING_NAMES", "DEFAULTS", "KindDefaults", "PER_KIND", "KINDS",
           "AUTO", "BLEND", "QUALITIES", "CENTRINGS",
           "EstimatorParams", "resolve", "train_config", "check_hidden", "check", "search_space",
           "signature", "init_from_signature", "parameter_names", "RESOLVED_NAMES", "REFERENCE_KNOWN_PER_SAMPLE",
           "known_per_sample", "density_step_factor", "choose_kind", "AUTO_MIN_SAMPLES",
           "is_int", "is_real", "is_finite", "DTYPES", "AUTHORS_ML1M_PRETRAIN", "AUTHORS_ML1M_FINETUNE",
           "MAX_KERNEL_DIM", "fitted_config"]

KINDS = ("item", "user")
AUTO = "auto"
#: The default kind: a blend of the bias model and CFN networks, weighted on validation (cfn_fast.training.blending).
BLEND = "blend"
#: ``quality=``: which candidates a blend is chosen from (``"best"``: more, and larger, networks).
QUALITIES = ("default", "best")
CENTRINGS = ("sample", "bias")
#: The weight storage types (``dtype=``); :mod:`cfn_fast.backends.bfloat16` holds bfloat16's rules:
#: the settings sit below the storage rules in the layers of docs/architecture.md and cannot import them.
DTYPES = ("float32", "bfloat16")
#: Largest ``kernel_dim``: the unit vectors are an embedding for a distance, a few dimensions suffice (Muller et
#: al. use 5); the kernels keep a unit's vector in registers.
MAX_KERNEL_DIM = 32
#: Marks a setting whose default depends on the kind (:data:`DEFAULTS`).
PER_KIND = "per kind"


# ----------------------------------------------------------------------------- value checks
def is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def is_finite(value: Any) -> bool:
    """``math.isfinite`` for a real number (also an int too large for ``np.isfinite``)."""
    try:
        return math.isfinite(value)
    except (OverflowError, TypeError):
        return False


def check(ok: bool, name: str, value: Any, expected: str) -> None:
    """``ValueError`` naming the setting, what it must be and the value given."""
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_hidden(hidden: Any) -> tuple[int, ...]:
    """Hidden widths as a tuple of positive ints (one int is one layer)."""
    expected = "a positive integer or a non-empty sequence of positive integers (layer widths)"
    values = [hidden] if is_int(hidden) else hidden
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"hidden must be {expected}, got {hidden!r}")
    values = list(values)
    check(len(values) >= 1 and all(is_int(h) and h >= 1 for h in values), "hidden", hidden, expected)
    return tuple(int(h) for h in values)


def _non_negative(v: Any) -> bool:
    return is_real(v) and is_finite(v) and v >= 0


def _positive(v: Any) -> bool:
    return is_real(v) and is_finite(v) and v > 0


def _positive_int(v: Any) -> bool:
    return is_real(v) and is_finite(v) and int(v) == v and v >= 1


def _flag(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


# ----------------------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class Setting:
    """One hyper-parameter of :class:`~cfn_fast.CFN`.

    ``default``: the constructor default (``None`` for a per-kind setting, which takes
    ``per_kind[kind]``).  ``ok`` / ``expected``: the check a resolved value passes and how the error
    names it.  ``convert``: the type a resolved value is stored as.  ``engine``: a field of
    :class:`TrainConfig`, whose default (the engine API's, versioned) is ``engine_default``.  ``search``:
    ``("log" | "uniform", low, high)``, the range a search draws it from.  ``cli``: the option's metadata
    (``flag``, ``choices``, ``type``) for the command line."""

    name: str
    default: Any
    help: str
    ok: Callable[[Any], bool] | None = None
    expected: str = ""
    convert: Callable[[Any], Any] | None = None
    per_kind: Mapping[str, Any] | None = None
    engine: bool = False
    engine_default: Any = None
    search: tuple[str, float, float] | None = None
    positional: bool = False
    cli: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return self.cli.get("flag", "--" + self.name.replace("_", "-"))


SETTINGS: tuple[Setting, ...] = (
    Setting("kind", BLEND, "blend (the default: the bias model mu + b_u + b_i and I-/U-CFN networks, weighted on a "
            "validation part of the training set, then refitted on all of it; never worse than the bias model on "
            "validation), I-CFN (item: one sample per item, over users, the paper's), U-CFN (user) or auto (one "
            "network, chosen at fit with the centring on a validation part)", positional=True,
            cli={"choices": (BLEND, "auto", "item", "user"), "default": BLEND,
                 "help": "blend (default): bias model and CFN networks weighted on a validation part of the training "
                         "set; item (I-CFN) or user (U-CFN): the paper's models; auto: one kind and centring chosen "
                         "on validation"}),
    Setting("quality", "default", "for kind=blend: 'default' blends the four I-/U-CFN x centring networks; 'best' "
            "also weighs larger and longer-trained networks, other seeds and a kernelised one (kernel_dim; over "
            "ten times slower)",
            ok=lambda v: isinstance(v, str) and v in QUALITIES, expected=" or ".join(repr(q) for q in QUALITIES),
            cli={"choices": QUALITIES, "help": "candidates of the blend: default, or best (more and larger networks, "
                 "several times slower)"}),
    Setting("centring", None, "what the network's values are centred by: sample (each sample's own mean, the "
            "paper's) or bias (the regularised bias model mu + b_u + b_i); None: sample for an explicit kind, "
            "chosen on validation for kind=auto", ok=lambda v: v is None or (isinstance(v, str) and v in CENTRINGS),
            expected="None, 'sample' or 'bias'",
            cli={"choices": CENTRINGS, "help": "centre by each sample's mean (the paper's) or by the bias model "
                 "mu + b_u + b_i (default: sample for --kind item|user, chosen for auto)"}),
    Setting("hidden", (600,), "hidden layer widths", convert=check_hidden, positional=True,
            cli={"nargs": "+", "type": "positive int", "default": [600]}),
    Setting("epochs", 20, "training epochs", ok=lambda v: is_int(v) and v >= 0, expected="an integer >= 0",
            positional=True, cli={"type": "non-negative int"}),
    Setting("alpha", None, "loss weight of masked known ratings", ok=_non_negative, expected="a finite number >= 0",
            convert=float, per_kind={"item": 1.0, "user": 1.1}, engine=True, engine_default=1.0,
            search=("uniform", 0.8, 1.2)),
    Setting("beta", None, "loss weight of visible known ratings", ok=_non_negative, expected="a finite number >= 0",
            convert=float, per_kind={"item": 0.5, "user": 0.5}, engine=True, engine_default=0.5,
            search=("uniform", 0.3, 0.9)),
    Setting("mask_ratio", None, "probability of masking a known input rating",
            ok=lambda v: is_real(v) and 0 <= v < 1, expected="a number in [0, 1)", convert=float,
            per_kind={"item": 0.25, "user": 0.15}, engine=True, engine_default=0.25, search=("uniform", 0.1, 0.35)),
    Setting("lr", None, "initial learning rate", ok=_positive, expected="a finite number > 0", convert=float,
            per_kind={"item": 0.07, "user": 0.09}, search=("log", 0.02, 0.15)),
    Setting("lr_decay", None, "lr_t = lr / (1 + t * lr_decay)", ok=_non_negative, expected="a finite number >= 0",
            convert=float, per_kind={"item": 0.3, "user": 0.18}, search=("uniform", 0.1, 0.6)),
    Setting("weight_decay", None, "L2 weight decay on every parameter", ok=_non_negative,
            expected="a finite number >= 0", convert=float, per_kind={"item": 0.04, "user": 0.025}, engine=True,
            engine_default=0.05, search=("log", 0.01, 0.1)),
    Setting("batch_size", None, "samples per mini-batch", ok=_positive_int, expected="a positive integer",
            convert=int, per_kind={"item": 35, "user": 35}, engine=True, engine_default=35,
            cli={"type": "positive int"}),
    Setting("backend", "auto", "engine: auto (cuda when a GPU is usable, else cpu), numpy (reference), cpu, cuda",
            ok=lambda v: isinstance(v, str), expected="'auto', 'numpy', 'cpu' or 'cuda'",
            cli={"choices": ("auto", "numpy", "cpu", "cuda"),
                 "help": "engine; auto = cuda when a GPU is usable, else cpu"}),
    Setting("use_side_info", True, "use the sample side's features (users for U-CFN, items for I-CFN) when given",
            ok=_flag, expected="True or False",
            cli={"flag": "--no-side-info", "action": "store_false",
                 "help": "train a plain CFN (no CFN++ side information)"}),
    Setting("seed", 0, "seeds initialisation, batch order and corruption", ok=lambda v: is_int(v) and v >= 0,
            expected="an integer >= 0", convert=int, engine=True, engine_default=0, cli={"type": "int",
                                                          "help": "seed of initialisation and masking noise"}),
    Setting("dtype", "float32", "weight storage: float32, or bfloat16 for the four per-input arrays (input and "
            "output weights, output bias and side weight; half the memory and traffic, updates rounded "
            "stochastically; cfn_fast.backends.bfloat16)", ok=lambda v: isinstance(v, str) and v in DTYPES,
            expected=" or ".join(repr(d) for d in DTYPES), convert=str, engine=True, engine_default="float32",
            cli={"choices": DTYPES, "help": "weight storage of the per-input arrays: float32, or bfloat16 (half the "
                 "memory; backends numpy and cpu)"}),
    Setting("dropout", 0.0, "not in the paper: probability of dropping each hidden unit in training (inverted "
            "dropout on every hidden layer's output, not the input nor the output layer; kept units scaled by "
            "1/(1-p); inference never drops; backends numpy and cpu)",
            ok=lambda v: is_real(v) and 0 <= v < 1, expected="a number in [0, 1)", convert=float, engine=True,
            engine_default=0.0, cli={"type": "float"}),
    Setting("kernel_dim", 0, "kernelised weights (Sparse FC, Muller et al. 2018): 0 off (the paper's CFN); d > 0 "
            "trains each Linear layer's weight as W * K with K_ij = max(0, 1 - |u_i - v_j|^2), u_i (v_j) a learned "
            "d-dimensional vector per output (input) unit; side weights stay plain; weight decay on W, u, v too. "
            "Training only: the fitted model holds W * K, an ordinary CFN network (backends numpy and cpu; auto "
            "picks cpu over cuda)",
            ok=lambda v: is_int(v) and 0 <= v <= MAX_KERNEL_DIM, expected=f"an integer in [0, {MAX_KERNEL_DIM}]",
            convert=int, engine=True, engine_default=0,
            cli={"type": "non-negative int", "help": "Sparse FC kernelised weights: dimension of the unit vectors "
                 "(0: off, the default; backends numpy and cpu)"}),
    Setting("shards", None, "train with the input dimension split over this many workers on Ray (kind 'item' or "
            "'user'; cfn_fast.sharding): for networks larger than one worker's memory; None trains in this process",
            ok=lambda v: v is None or (is_int(v) and v >= 1), expected="None or a positive integer",
            cli={"type": "positive int", "help": "train on N Ray workers, each holding 1/N of the input-dimension "
                 "weights (--kind item or user; needs the shard extra)"}),
    Setting("ray_address", None, "the Ray cluster sharded training joins: None starts Ray in this process, 'auto' "
            "finds a local cluster, 'ray://host:10001' a remote one", ok=lambda v: v is None or isinstance(v, str),
            expected="None or a Ray address (str)",
            cli={"flag": "--address", "help": "Ray cluster of --shards (default: Ray started in this process)"}),
    Setting("max_worker_bytes", None, "memory cap of one worker's parameters, in bytes: a network whose weights "
            "exceed it trains only sharded (shards=N, enough of them), else fit names the shard count needed",
            ok=lambda v: v is None or (is_int(v) and v >= 1), expected="None or a positive integer (bytes)",
            cli={"flag": "--max-worker-memory", "type": "bytes",
                 "help": "memory cap of one worker's parameters (bytes; suffixes K, M, G): a larger network must "
                         "be trained with --shards"}),
    Setting("verbose", 0, "0 silent, 1 progress bar, 2 also one line per epoch",
            ok=lambda v: (is_int(v) or isinstance(v, bool)) and v >= 0, expected="an integer >= 0",
            cli={"flag": None}),
    Setting("profile", False, "time every phase of every mini-batch into profile_", ok=_flag,
            expected="True or False", cli={"flag": None}),
)

SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)

#: The authors' ML-1M I-CFN configuration (``conf.movieLens.1M.V.lua``; :class:`~cfn_fast.StackedCFN` and the
#: pre-trained member of a ``quality="best"`` blend): layer 1 (700 hidden, 10 epochs) ...
AUTHORS_ML1M_PRETRAIN = {"epochs": 10, "batch_size": 35, "lr": 0.0901, "lr_decay": 0.176, "weight_decay": 0.0251,
                         "alpha": 1.108, "beta": 0.72, "mask_ratio": 0.138}
#: ... and the fine-tuning of the 700-500 stack (15 epochs).
AUTHORS_ML1M_FINETUNE = {"epochs": 15, "batch_size": 25, "lr": 0.0157, "lr_decay": 0.251, "weight_decay": 0.0454,
                         "alpha": 0.986, "beta": 0.581, "mask_ratio": 0.128}

#: What an engine needs for one SGD step (the lr comes per epoch): the ``engine`` settings, with the engine
#: API's keyword defaults (part of the versioned contract of docs/engine_api.md).
def _check_train_config(config: Any) -> None:
    """Each step setting checked (and converted) as :func:`resolve` checks the estimator's, when the config is
    built: a ``batch_size`` of 0 or -1 crashed the ``cpu`` kernels and trained nothing on ``numpy``."""
    for s in SETTINGS:
        if s.engine:
            value = getattr(config, s.name)
            check(s.ok(value), s.name, value, s.expected)
            object.__setattr__(config, s.name, s.convert(value))   # frozen: set once, here
    check(config.alpha + config.beta > 0, "alpha + beta", config.alpha + config.beta, "> 0")
    check(config.kernel_dim == 0 or config.dtype == "float32", "kernel_dim", config.kernel_dim,
          "0 with dtype='bfloat16' (kernelised weights are trained in float32)")
    check(config.dropout == 0 or config.kernel_dim == 0, "dropout", config.dropout,
          "0 with kernel_dim > 0 (kernelised weights train without dropout)")


TrainConfig = make_dataclass(
    "TrainConfig", [(s.name, s.convert, field(default=s.engine_default)) for s in SETTINGS if s.engine], frozen=True,
    namespace={"__post_init__": _check_train_config})
TrainConfig.__doc__ = ("The hyper-parameters an engine needs for one SGD step (the lr comes per epoch): "
                       + ", ".join(s.name for s in SETTINGS if s.engine) + ".")
TrainConfig.__module__ = __name__

#: The per-kind defaults, one frozen record per kind (``DEFAULTS["item"].lr``).
KindDefaults = make_dataclass("KindDefaults", [(s.name, type(s.per_kind["item"])) for s in SETTINGS if s.per_kind],
                              frozen=True)
KindDefaults.__doc__ = "The default of every per-kind setting for one kind (from :data:`SETTINGS`)."
KindDefaults.__module__ = __name__
DEFAULTS: dict[str, Any] = {kind: KindDefaults(**{s.name: s.per_kind[kind] for s in SETTINGS if s.per_kind})
                            for kind in KINDS}


def signature(defaults: Mapping[str, Any] | None = None, extra: Sequence[inspect.Parameter] = (),
              exclude: Sequence[str] = ()) -> inspect.Signature:
    """A constructor signature from the declaration: the positional settings, then the others keyword-only
    (``defaults`` overrides some defaults, ``extra`` adds keyword-only parameters, ``exclude`` drops some)."""
    defaults = dict(defaults or {})
    chosen = [s for s in SETTINGS if s.name not in exclude]
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=defaults.get(s.name, s.default))
               for s in chosen if s.positional]
    params += [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(s.name, s.default))
               for s in chosen if not s.positional]
    return inspect.Signature(params + list(extra))


def init_from_signature(obj: Any, sig: inspect.Signature, args: tuple, kwargs: dict[str, Any]) -> None:
    """Store every constructor argument of ``sig`` on ``obj`` as given (scikit-learn's convention)."""
    bound = sig.bind(obj, *args, **kwargs)
    bound.apply_defaults()
    for name, value in bound.arguments.items():
        if name != "self":
            setattr(obj, name, value)


def parameter_names(sig: inspect.Signature) -> tuple[str, ...]:
    return tuple(name for name in sig.parameters if name != "self")


class EstimatorParams:
    """``get_params`` / ``set_params`` / ``repr`` for estimators whose constructor arguments are listed in
    ``param_names`` (scikit-learn's convention: the constructor only stores its arguments)."""

    param_names: ClassVar[tuple[str, ...]] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters by name (``deep`` is accepted for ``sklearn.base.clone``: no
        parameter is itself an estimator here)."""
        return {name: getattr(self, name) for name in self.param_names}

    def set_params(self, **params: Any) -> Any:
        for name, value in params.items():
            if name not in self.param_names:
                raise ValueError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


# ----------------------------------------------------------------------------- resolution
def resolve(params: Mapping[str, Any], kind: str | None = None,
            known_per_sample: float | None = None) -> dict[str, Any]:
    """The settings with per-kind defaults filled in, validated (``ValueError`` naming the setting, the
    allowed range and the value given) and converted.

    ``kind``: the kind trained (default: ``params["kind"]``, the item defaults for ``"auto"`` before a
    fit resolves it).  ``known_per_sample``: the training data's mean known entries per sample; a
    default ``lr`` is then scaled by :func:`density_step_factor`, an explicit one is used as given."""
    given = params.get("kind", "item")
    if not isinstance(given, str) or given not in (*KINDS, AUTO, BLEND):
        raise ValueError(f"kind must be 'blend', 'item', 'user' or 'auto', got {given!r}")
    kind = kind or (given if given in KINDS else "item")
    out = {}
    for s in SETTINGS:
        value = params.get(s.name, s.default)
        if value is None and s.per_kind:
            value = s.per_kind[kind]
        out[s.name] = value
    if params.get("lr") is None and known_per_sample is not None:
        out["lr"] = out["lr"] * density_step_factor(kind, known_per_sample)
    out["hidden"] = check_hidden(out["hidden"])
    for s in SETTINGS:
        if s.ok is not None:
            check(s.ok(out[s.name]), s.name, out[s.name], s.expected)
    check(out["alpha"] + out["beta"] > 0, "alpha + beta", out["alpha"] + out["beta"], "> 0")
    check(out["quality"] == "default" or given == BLEND, "quality", out["quality"],
          "'default' unless kind='blend' (quality chooses the networks a blend weighs)")
    check(out["shards"] is None or given in KINDS, "shards", out["shards"],
          "None unless kind is 'item' or 'user' (sharding splits one network; a blend or kind='auto' trains several)")
    check(out["shards"] is None or out["dtype"] == "float32", "shards", out["shards"],
          "None with dtype='bfloat16' (sharded weights are float32)")
    check(out["shards"] is None or (out["dropout"] == 0 and out["kernel_dim"] == 0), "shards", out["shards"],
          "None with dropout > 0 or kernel_dim > 0 (the split step trains neither yet)")
    check(out["dropout"] == 0 or out["kernel_dim"] == 0, "dropout", out["dropout"],
          "0 with kernel_dim > 0 (kernelised weights train without dropout)")
    check(out["lr"] * out["weight_decay"] < 1, "lr * weight_decay", out["lr"] * out["weight_decay"],
          "< 1 (otherwise weight decay flips the sign of the weights)")
    for s in SETTINGS:
        if s.convert is not None and s.name != "hidden":
            out[s.name] = s.convert(out[s.name])
    out["kind"] = kind
    return out


def train_config(resolved: Mapping[str, Any]) -> TrainConfig:
    """The engine's step settings from :func:`resolve`'s result (the ``engine`` settings)."""
    return TrainConfig(**{f.name: resolved[f.name] for f in fields(TrainConfig)})


def fitted_config(resolved: Mapping[str, Any]) -> TrainConfig:
    """The engine settings a *fitted* network runs on: :func:`train_config` less ``kernel_dim``, which is
    training-only (a fitted network holds the effective weights ``W * K``, an ordinary CFN network)."""
    return TrainConfig(**{f.name: resolved[f.name] for f in fields(TrainConfig) if f.name != "kernel_dim"})


#: What :meth:`CFN.resolved_params` reports (and a model file records): the per-kind settings, hidden, kind.
RESOLVED_NAMES: tuple[str, ...] = (*(s.name for s in SETTINGS if s.per_kind), "hidden", "kind")


def search_space() -> dict[str, tuple[str, float, float]]:
    """``{name: ("log" | "uniform", low, high)}`` of the settings a search tunes."""
    return {s.name: s.search for s in SETTINGS if s.search is not None}


# ----------------------------------------------------------------------------- density-aware step
#: Mean known entries per training sample up to which the tuned ``lr`` is used unchanged
#: (a little above ML-1M's 90 % training split; see bench/README.md, "density-aware step").
REFERENCE_KNOWN_PER_SAMPLE: dict[str, float] = {"item": 300.0, "user": 200.0}


def known_per_sample(samples: Any) -> float:
    """Mean number of known entries of the samples (rows of a CSR) that have any: the density
    :func:`density_step_factor` adapts the default step to."""
    non_empty = int(np.count_nonzero(np.diff(samples.indptr)))
    return samples.nnz / non_empty if non_empty else 0.0


def density_step_factor(kind: str, known_per_sample: float) -> float:
    """Multiplier of the default ``lr`` for data with ``known_per_sample`` mean known entries per sample:
    ``min(1, √(k_ref / k̄))``.

    Why: a sample's loss is a *sum* over its ``k`` known entries, so the gradient reaching the first
    layer grows like ``√k`` (errors of no fixed sign) to ``k``; a step tuned at ML-1M's density is too
    large on denser data.  The square root is the incoherent-error rate; the factor is capped at 1, so
    sparser data never gets a larger step than ML-1M's.  The derivation and the sweep behind it are in
    bench/README.md."""
    if not known_per_sample > 0:
        return 1.0
    return min(1.0, math.sqrt(REFERENCE_KNOWN_PER_SAMPLE[kind] / float(known_per_sample)))


#: Fewest samples the better-observed side needs before the shape rule trains on it: below this an
#: epoch has under ~30 mini-batches of the default size and that autoencoder underfits.
AUTO_MIN_SAMPLES = 1000


def choose_kind(n_users: int, n_items: int, n_ratings: int) -> str:
    """The shape rule ``CFN(kind="auto")`` falls back on when a set is too small for its validation run
    (:mod:`cfn_fast.training.selection`): the side whose samples are better observed (the one with fewer
    rows; ties go to items), unless it has fewer than :data:`AUTO_MIN_SAMPLES` rows, then the other.

    Why: a sample is reconstructed from its own known entries, so the denser side learns more; but with
    few samples that autoencoder sees only a handful of mini-batches per epoch.  ``n_ratings`` is
    accepted for future rules and ignored."""
    del n_ratings
    denser, other, n_denser = ("item", "user", n_items) if n_items <= n_users else ("user", "item", n_users)
    if n_denser >= AUTO_MIN_SAMPLES or n_users == n_items:  # a square set has no side with more samples
        return denser
    return other
