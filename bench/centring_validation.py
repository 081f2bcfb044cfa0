"""How the ``centring="bias"`` settings were chosen: on validation splits only, never on a test set.

For each set of the density sweep (bench/sweep_defaults.py), the sweep's own 90/10 train/test
split (seed 0) is made and the test part is thrown away; a validation part (10 % of the training
ratings, seed 1) is carved out of the rest.  On that validation part this prints the RMSE of the
regularised bias model and of I-CFN / U-CFN with library defaults (model seed 0) under:

* ``sample``: the paper's per-sample centring;
* ``bias`` with residuals clipped to ±1 unit step (half the scale's span);
* ``bias`` unclipped (residuals up to about ±2 unit steps, as the paper's centred values): what
  ``cfn_fast.preprocessing`` does, because it won on 18 of the 22 set x kind pairs.

Usage::

    python bench/centring_validation.py [--sets sparse,ml-100k] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_defaults import DATA, FULL_SETS  # noqa: E402

import cfn_fast.preprocessing as preprocessing  # noqa: E402
from cfn_fast import CFN  # noqa: E402
from cfn_fast.data import train_test_split  # noqa: E402
from cfn_fast.tools.baselines import UserItemBias  # noqa: E402

VARIANTS = {"sample": ("sample", None), "bias clip 1": ("bias", 1.0), "bias no clip": ("bias", None)}


class _ClippedCentring:
    """Patches :meth:`Preprocessing.centre` to clip the bias centring's residuals to ±``clip``."""

    def __init__(self, clip: float | None) -> None:
        self.clip, self.original = clip, preprocessing.Preprocessing.centre

    def __enter__(self) -> None:
        if self.clip is not None:
            original, clip = self.original, self.clip
            preprocessing.Preprocessing.centre = lambda pre, *a: np.clip(original(pre, *a), -clip, clip)

    def __exit__(self, *exc: object) -> None:
        preprocessing.Preprocessing.centre = self.original


def run_set(sweep_set) -> dict:
    train, _test = train_test_split(sweep_set.make(), 0.1, seed=0)
    part, validation = train_test_split(train, 0.1, seed=1)
    row = {"Bias (μ+b_u+b_i)": UserItemBias().fit(part).score(validation)}
    for kind in ("item", "user"):
        for name, (centring, clip) in VARIANTS.items():
            with _ClippedCentring(clip):
                row[f"{kind} {name}"] = CFN(kind, centring=centring, seed=0).fit(part).score(validation)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=None, help="comma-separated set names (default: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sets = [s for s in FULL_SETS if not s.name.startswith("ml-") or DATA.is_dir()]
    if args.sets:
        sets = [s for s in sets if s.name in args.sets.split(",")]
    results = {}
    for sweep_set in sets:
        start = time.perf_counter()
        results[sweep_set.name] = run_set(sweep_set)
        print(f"[{sweep_set.name}] {time.perf_counter() - start:.0f}s " +
              ", ".join(f"{k} {v:.4f}" for k, v in results[sweep_set.name].items()), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    names = list(next(iter(results.values())))
    print("\n| validation RMSE | " + " | ".join(results) + " |")
    print("|" + "---|" * (len(results) + 1))
    for name in names:
        best = {s: min(v for k, v in r.items() if k.split(" ")[0] == name.split(" ")[0]) for s, r in results.items()}
        print(f"| {name} | " + " | ".join(
            (f"**{r[name]:.4f}**" if r[name] == best[s] and name != "Bias (μ+b_u+b_i)" else f"{r[name]:.4f}")
            for s, r in results.items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
