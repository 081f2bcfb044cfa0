"""Kernelised weights (``kernel_dim``, Sparse FC) on ML-1M: validation RMSE and fit time of I-CFN variants.

Never looks at a test set: ML-1M's split seed 0 (``train_test_split(ratings, 0.1, seed=0)``) gives the training
part; the networks train on 90 % of it and are scored on the other 10 %, the blend's own validation part
(``cfn_fast.training.selection``: seed + VALIDATION_SEED_OFFSET).  One line per configuration::

    python bench/kernel_ml1m.py --configs "kernel_dim=5,hidden=500x500" "kernel_dim=0,hidden=500x500"

``--blend``: the candidates of ``CFN(quality="best")`` (``candidate_params``, the kernelised member included) and
its factor members, each trained on the same 90 % and scored on the 10 %, then the blend's weights chosen there as
``fit_blend`` chooses them (shrinkage by cross-validation, at most ``MAX_MEMBERS`` networks), with and without the
kernelised member: does it earn a weight, does it improve the blend's validation RMSE?
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cfn_fast import CFN, train_test_split
from cfn_fast.backends import kernelised
from cfn_fast.data.movielens import load_movielens
from cfn_fast.metrics import rmse as rmse_of
from cfn_fast.preprocessing import BiasModel
from cfn_fast.training.blending import (
    FACTOR_CANDIDATES,
    MAX_MEMBERS,
    blend_weights,
    candidate_name,
    candidate_params,
    choose_shrinkage,
)
from cfn_fast.training.factors import Factors
from cfn_fast.training.selection import VALIDATION_FRACTION, VALIDATION_SEED_OFFSET

#: The Sparse-FC-style member studied (Muller et al.'s shape: two layers of 500, 5-dimensional unit vectors);
#: ``--kernel-member`` changes it.
KERNEL_MEMBER = {"kind": "item", "centring": "sample", "hidden": (500, 500), "kernel_dim": 5}

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m"


def parse(config: str) -> dict:
    params: dict = {"kind": "item"}
    for item in filter(None, config.split(",")):
        key, value = item.split("=")
        if key == "hidden":
            params[key] = tuple(int(h) for h in value.split("x"))
        elif key in ("kind", "centring"):
            params[key] = value
        else:
            params[key] = float(value) if "." in value or "e" in value else int(value)
    return params


def weighed(deltas: np.ndarray, residual: np.ndarray, n_networks: int, base: np.ndarray, rating: np.ndarray,
            bias: BiasModel) -> tuple[np.ndarray, list[int], float, float]:
    """``fit_blend``'s choice on the validation part: (weights, kept columns, validation RMSE, its CV RMSE)."""
    shrinkage, cv = choose_shrinkage(deltas, residual, seed=0)
    weights = blend_weights(deltas, residual, shrinkage)
    networks = [int(k) for k in np.argsort(-weights[:n_networks], kind="stable") if weights[k] > 0]
    keep = sorted(networks[:MAX_MEMBERS["best"]]) + [k for k in range(n_networks, deltas.shape[1]) if weights[k] > 0]
    weights = blend_weights(deltas[:, keep], residual, shrinkage)
    blended = np.clip(base + deltas[:, keep] @ weights, bias.low, bias.high)
    return weights, keep, rmse_of(blended, rating), cv[str(shrinkage)]


def blend_study(part, validation, backend: str, kernel_member: dict, cache: Path | None) -> None:
    params = CFN(quality="best", backend=backend).get_params()
    candidates = candidate_params(params, "best")
    if not any(member.get("kernel_dim") for member in candidates):    # the library's list has none: add it
        candidates.append({**candidates[0], **KERNEL_MEMBER, "seed": int(params["seed"]) + 3})
    names, predictions = [], []
    for member in candidates:
        if member.get("kernel_dim"):
            member = {**member, **kernel_member}
        names.append(candidate_name(member) + (f"/std{kernelised.KERNEL_INIT_STD:g}" if member.get("kernel_dim")
                                                else ""))
        stored = None if cache is None else cache / (names[-1].replace("/", "_") + ".npy")
        started = time.perf_counter()
        if stored is not None and stored.exists():     # the same member on the same split: its predictions
            predicted, how = np.load(stored), "cached"
        else:
            predicted = CFN(**member).fit(part).predict_indices(validation.user, validation.item)
            how = f"{time.perf_counter() - started:.1f} s"
            if stored is not None:
                np.save(stored, predicted)
        predictions.append(predicted)
        print(f"  {names[-1]}: validation RMSE {rmse_of(predicted, validation.rating):.4f} ({how})", flush=True)
    n_networks = len(names)
    bias = BiasModel.fit(part)
    base = bias.predict(validation.user, validation.item)
    for rank, reg in FACTOR_CANDIDATES["best"]:
        predictions.append(Factors.fit(part, rank, reg, seed=0).predict(bias, validation.user, validation.item))
        names.append(f"factors/r{rank}/reg{reg:g}")
    deltas = np.stack(predictions, axis=1) - base[:, None]
    residual = validation.rating.astype(np.float64) - base
    kernel_columns = [k for k, name in enumerate(names) if "/k" in name]
    for label, columns in (("with the kernelised member", list(range(len(names)))),
                           ("without it", [k for k in range(len(names)) if k not in kernel_columns])):
        n = sum(1 for k in columns if k < n_networks)
        weights, keep, rmse, cv = weighed(deltas[:, columns], residual, n, base, validation.rating, bias)
        chosen = ", ".join(f"{names[columns[k]]} x{w:.3f}" for k, w in zip(keep, weights))
        print(f"blend {label}: validation RMSE {rmse:.4f} (cross-validated {cv:.4f}); {chosen}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=[], help="key=value,... CFN settings per run")
    parser.add_argument("--blend", action="store_true", help="the quality='best' blend with and without the "
                        "kernelised member, weighed on the validation part")
    parser.add_argument("--kernel-member", default="", help="key=value,... settings replacing the kernelised "
                        "member's (blending.KERNEL_MEMBER) in --blend")
    parser.add_argument("--cache", default=None, help="folder keeping each --blend candidate's validation "
                        "predictions (a rerun trains only the members not there)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--init-std", type=float, default=None,
                        help="override kernelised.KERNEL_INIT_STD (the unit vectors' initial spread) for a study")
    args = parser.parse_args()
    if args.init_std is not None:
        kernelised.KERNEL_INIT_STD = args.init_std
    ratings = load_movielens(args.data, side_info=False)
    train, _ = train_test_split(ratings, 0.1, seed=0)             # the test part is never read
    part, validation = train_test_split(train, VALIDATION_FRACTION, seed=0 + VALIDATION_SEED_OFFSET)
    if args.blend:
        cache = None if args.cache is None else Path(args.cache)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        override = {k: v for k, v in parse(args.kernel_member).items() if k != "kind" or "kind=" in args.kernel_member}
        blend_study(part, validation, args.backend, override, cache)
    for config in args.configs:
        params = parse(config)
        started = time.perf_counter()
        model = CFN(**params, backend=args.backend, seed=0).fit(part)
        seconds = time.perf_counter() - started
        predicted = model.predict_indices(validation.user, validation.item)
        rmse = float(np.sqrt(np.mean((predicted - validation.rating) ** 2)))
        zeros = [float(np.mean(layer.weight == 0)) for layer in model.layers_]
        print(f"{config} (init std {kernelised.KERNEL_INIT_STD}): validation RMSE {rmse:.4f}, fit {seconds:.1f} s, "
              f"zero weights per layer {', '.join(f'{z:.3f}' for z in zeros)}", flush=True)


if __name__ == "__main__":
    main()
