"""ResidualCFN against the paper's CFN on full ML-1M (split seed 0, library defaults, cpu backend).

    python bench/residual_ml1m.py [--data /work/shared/data/ml-1m/ratings.npz]

Plain CFN with the same split and defaults: ``cfn fit --ratings .../ratings.npz --kind item|user
--hidden 600 --epochs 20 --backend cpu --json``.
"""
from __future__ import annotations

import argparse
import time

from cfn_fast import CFN
from cfn_fast.data import load_ratings, train_test_split
from cfn_fast.residual import ResidualCFN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/ml-1m/ratings.npz")
    args = parser.parse_args()
    train, test = train_test_split(load_ratings(args.data, scale=(1, 5)), 0.1, seed=0)
    for kind in ("item", "user"):
        start = time.perf_counter()
        model = ResidualCFN(CFN(kind, hidden=(600,), epochs=20, backend="cpu")).fit(train)
        print(f"ResidualCFN(CFN({kind!r})) ML-1M split seed 0: test RMSE {model.score(test):.4f} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
