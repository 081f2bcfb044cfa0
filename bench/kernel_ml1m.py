"""Kernelised weights (``kernel_dim``, Sparse FC) on ML-1M: validation RMSE and fit time of I-CFN variants.

Never looks at a test set: ML-1M's split seed 0 (``train_test_split(ratings, 0.1, seed=0)``) gives the training
part; the networks train on 90 % of it and are scored on the other 10 %, the blend's own validation part
(``cfn_fast.training.selection``: seed + VALIDATION_SEED_OFFSET).  One line per configuration::

    python bench/kernel_ml1m.py --configs "kernel_dim=5,hidden=500x500" "kernel_dim=0,hidden=500x500"
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cfn_fast import CFN, train_test_split
from cfn_fast.backends import kernelised
from cfn_fast.data.movielens import load_movielens
from cfn_fast.training.selection import VALIDATION_FRACTION, VALIDATION_SEED_OFFSET

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", required=True, help="key=value,... CFN settings per run")
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
