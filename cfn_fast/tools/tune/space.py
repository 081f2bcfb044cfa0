"""The search space: the paper bench's (:func:`cfn_fast.tools.paper.methods.method_table`), so a tuned entry
is comparable with a stored random search — same ranges, same fixed settings, same first trials
(each kind's defaults, then the authors' published configurations)."""
from __future__ import annotations

from typing import Any

from cfn_fast.settings import search_space
from cfn_fast.tools.paper.methods import PRESETS, Choice, LogUniform, Method, Uniform, method_table

__all__ = ["KINDS", "TUNED", "cfn_method", "clip_to_space", "first_points", "method_name", "tune_space"]

KINDS = ("item", "user")
#: The settings every algorithm tunes (PBT mutates exactly these during training).
TUNED = tuple(search_space())


def method_name(kind: str) -> str:
    """The entry of ``hyperparams_<dataset>.json`` a kind's search fills (the plain CFN rows;
    the ``++`` rows reuse them)."""
    return {"item": "I-CFN", "user": "U-CFN"}[kind]


def cfn_method(kind: str, backend: str = "auto") -> Method:
    return method_table(PRESETS["full"], backend)[method_name(kind)]


def tune_space(kinds: tuple[str, ...]) -> dict[str, Any]:
    """Ray Tune distributions of the tuned settings (plus ``kind`` when more than one is searched)."""
    from .extra import require
    tune = require("ray.tune")
    space: dict[str, Any] = {}
    for name, atom in cfn_method(kinds[0]).space.items():
        if isinstance(atom, LogUniform):
            space[name] = tune.loguniform(atom.low, atom.high)
        elif isinstance(atom, Uniform):
            space[name] = tune.uniform(atom.low, atom.high)
        elif isinstance(atom, Choice):
            space[name] = tune.choice(list(atom.values))
        else:  # pragma: no cover - the table only uses the three atoms above
            raise TypeError(f"no Ray Tune equivalent for {atom!r}")
    if len(kinds) > 1:
        space["kind"] = tune.choice(list(kinds))
    return space


def first_points(kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Trials run before any sampled one, as in the paper bench: each kind's defaults, then the
    authors' configurations (each once; kinds interleaved)."""
    per_kind = [[{**params, **({"kind": kind} if len(kinds) > 1 else {})}
                 for params in (cfn_method(kind).defaults, *cfn_method(kind).candidates)] for kind in kinds]
    points: list[dict[str, Any]] = []
    for rank in range(max(map(len, per_kind))):          # interleaved: every kind's defaults come first
        for candidates in per_kind:
            if rank < len(candidates) and candidates[rank] not in points:
                points.append(candidates[rank])
    return points


def clip_to_space(config: dict[str, Any], kind: str = "item") -> dict[str, Any]:
    """PBT multiplies settings by 0.8 / 1.2: keep them inside the searched ranges."""
    out = dict(config)
    for name, atom in cfn_method(kind).space.items():
        if name in out and isinstance(atom, (LogUniform, Uniform)):
            out[name] = min(max(float(out[name]), atom.low), atom.high)
    return out
