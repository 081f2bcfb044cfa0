"""The two centrings and ``kind="auto"`` on full ML-1M (90/10 split seed 0, library defaults, cpu backend).

    python bench/centring_ml1m.py [--data /work/shared/data/ml-1m/ratings.npz] [--only auto]

Prints the test RMSE and the time of I-CFN and U-CFN with the paper's centring (``centring="sample"``,
what ``CFN("item")`` / ``CFN("user")`` train) and with the bias model's (``centring="bias"``), then
of ``CFN("auto")``, which picks one of the four on a validation part of the training set (its
validation RMSEs are printed too).
"""
from __future__ import annotations

import argparse
import time

from cfn_fast import CFN
from cfn_fast.data import load_ratings, train_test_split

RUNS = {"item/sample": ("item", None), "user/sample": ("user", None), "item/bias": ("item", "bias"),
        "user/bias": ("user", "bias"), "auto": ("auto", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/ml-1m/ratings.npz")
    parser.add_argument("--only", default=None, help="comma-separated run names: " + ", ".join(RUNS))
    args = parser.parse_args()
    train, test = train_test_split(load_ratings(args.data, scale=(1, 5)), 0.1, seed=0)
    for name, (kind, centring) in RUNS.items():
        if args.only and name not in args.only.split(","):
            continue
        start = time.perf_counter()
        model = CFN(kind, centring=centring, hidden=(600,), epochs=20, backend="cpu").fit(train)
        chosen = "" if model.selection_ is None else f"; {model.selection_.summary()}"
        print(f"{name}: ML-1M split seed 0 test RMSE {model.score(test):.4f} "
              f"({time.perf_counter() - start:.0f}s{chosen})", flush=True)


if __name__ == "__main__":
    main()
