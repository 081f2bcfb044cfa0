"""The time of a whole CPU fit spent outside its epochs, for two builds side by side, interleaved.

    python bench/fit_overhead.py --base .venv/bin/python --new /path/other/bin/python --rounds 3

A run is one ``CFN(kind, hidden=(600,), epochs=20, seed=0, backend="cpu"[, dtype]).fit`` on the ML-1M split of
seed 0 (``--data-dir``, never copied), in a subprocess of its own (what ``bench/ab_cpu.py`` times), under
cProfile: "outside" is the fit's time less the engine's ``train_epoch`` calls, i.e. the data preparation, the
initial network, building the engine, the reference loss of the divergence rule, the trainer's per-epoch
snapshot and check, and the final reload of the layers.  Each round runs every case once per build,
alternating which goes first; a case's figure is the best of its rounds (the machine is shared and noisy).
Both builds run every case in the same dtype.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ab_cpu import interleaved, run_worker  # noqa: E402  (bench/ab_cpu.py: one subprocess per fit, outside the tree)

WORKER = r"""
import cProfile, json, pstats, sys, time
import numpy as np
from cfn_fast import CFN, RatingSet, train_test_split
kind, dtype, epochs, data_dir = json.loads(sys.argv[1])
with np.load(data_dir + "/ratings.npz") as f:
    ratings = RatingSet.from_arrays(f["user"], f["item"], f["rating"], scale=(1.0, 5.0))
train, test = train_test_split(ratings, 0.1, seed=0)
model = CFN(kind, hidden=(600,), epochs=epochs, seed=0, backend="cpu", dtype=dtype)
profile = cProfile.Profile()
profile.enable()
t0 = time.perf_counter()
model.fit(train)
total = time.perf_counter() - t0
profile.disable()
stats = pstats.Stats(profile).stats
in_epochs = sum(v[3] for k, v in stats.items() if k[2] == "train_epoch" and k[0].endswith("cpu_backend.py"))
print(json.dumps({"total": total, "epochs": in_epochs, "outside": total - in_epochs}))
"""

CASES = {"item": ("item", "float32"), "user": ("user", "float32"),
         "item-bf16": ("item", "bfloat16"), "user-bf16": ("user", "bfloat16")}


def run_one(python: str, case: str, epochs: int, data_dir: str) -> dict:
    kind, dtype = CASES[case]
    return run_worker(python, WORKER, [kind, dtype, epochs, data_dir], case)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="python of the base build")
    parser.add_argument("--new", required=True, help="python of the new build")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "ml-1m"))
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose among {', '.join(CASES)}")
    runs: dict[tuple[str, str], list[dict]] = {}
    for r, case, label, python in interleaved(args.rounds, cases, args.base, args.new):
        res = run_one(python, case, args.epochs, args.data_dir)
        runs.setdefault((case, label), []).append(res)
        print(f"round {r} {case:10s} {label:4s} fit {res['total']:6.2f} s, outside the epochs "
              f"{res['outside']:.3f} s", file=sys.stderr, flush=True)
    print(f"{'case':10s} {'base outside':>13s} {'new outside':>12s} {'base share':>11s} {'new share':>10s}")
    for case in cases:
        base = min(runs[(case, "base")], key=lambda x: x["outside"])
        new = min(runs[(case, "new")], key=lambda x: x["outside"])
        print(f"{case:10s} {base['outside']:11.3f} s {new['outside']:10.3f} s "
              f"{100 * base['outside'] / base['total']:10.1f} % {100 * new['outside'] / new['total']:9.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
