"""Can ALS-WR and I-AutoRec reach the global mean on very sparse data by their regularisation alone?

The density sweep (bench/sweep_defaults.py) leaves these two baselines above the global-mean predictor on
its sparsest sets with their paper defaults.  This grid searches each one's capacity and penalty on a
*validation* split (the sweep's 90/10 split, seed 0, test part unused; 10 % of the rest, seed 1) and
prints the best it finds beside the global mean, the user mean and the bias model on the same split.

    python bench/baseline_density.py                    # the `sparse` set, both baselines (about 5 minutes)
    python bench/baseline_density.py --sets sparse,sparse-items --json out.json

Why neither can: both models have no shrunk bias terms (ALS-WR fits raw ratings with u·v; I-AutoRec's output
bias is per user and unregularised), so more penalty pulls their predictions towards 0 or towards a user's own
mean, and with under 3 ratings per user a user's mean is worse than the global mean.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_defaults import FULL_SETS  # noqa: E402

from cfn_fast.data import train_test_split  # noqa: E402
from cfn_fast.data.ratings import RatingSet  # noqa: E402
from cfn_fast.tools import baselines as B  # noqa: E402

GRID = {
    "ALS-WR": [(B.ALSWR, {"rank": rank, "reg": reg}) for rank in (1, 10, 50) for reg in (0.05, 0.15, 0.5)],
    "I-AutoRec": [(B.IAutoRec, {"hidden": hidden, "reg": reg}) for hidden in (50, 500) for reg in (1.0, 100.0)],
}


def user_mean_rmse(part: RatingSet, validation: RatingSet) -> float:
    counts = np.bincount(part.user, minlength=part.n_users)
    sums = np.bincount(part.user, weights=part.rating.astype(np.float64), minlength=part.n_users)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), part.rating.mean())
    return float(np.sqrt(np.mean((means[validation.user] - validation.rating) ** 2)))


def run_set(sweep_set) -> dict:
    train, _test = train_test_split(sweep_set.make(), 0.1, seed=0)
    part, validation = train_test_split(train, 0.1, seed=1)
    result = {"reference": {"Global mean": B.GlobalMean().fit(part).score(validation),
                            "User mean": user_mean_rmse(part, validation),
                            "Bias (μ+b_u+b_i)": B.UserItemBias().fit(part).score(validation)},
              "runs": []}
    print(f"[{sweep_set.name}] " + ", ".join(f"{k} {v:.4f}" for k, v in result["reference"].items()), flush=True)
    for name, grid in GRID.items():
        for cls, params in grid:
            start = time.perf_counter()
            score = cls(**params).fit(part).score(validation)
            run = {"baseline": name, "params": params, "rmse": score, "seconds": time.perf_counter() - start}
            result["runs"].append(run)
            print(f"  {name} {params}: {score:.4f} ({run['seconds']:.1f}s)", flush=True)
        best = min((r for r in result["runs"] if r["baseline"] == name), key=lambda r: r["rmse"])
        print(f"  best {name}: {best['rmse']:.4f} {best['params']} vs global mean "
              f"{result['reference']['Global mean']:.4f}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="sparse", help="comma-separated sweep set names (default: sparse)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    wanted = args.sets.split(",")
    results = {s.name: run_set(s) for s in FULL_SETS if s.name in wanted}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
