"""Interleaved A/B of whole CPU fits between two installed builds of cfn_fast.

    python bench/ab_cpu.py --base /path/venv-6a10619/bin/python --new .venv/bin/python
    python bench/ab_cpu.py ... --cases ml1m-item,ml1m-user,ml1m-item-bf16 --rounds 5

Each round runs every case once per interpreter, each run in its own subprocess, alternating
which build goes first; a case's figure is the best of its rounds (this 2-core machine varies by
up to 20 % between runs of the same code).  A run times
``CFN(kind, hidden=(600,), epochs=20, seed=0, backend="cpu").fit`` on the ML-1M split of seed 0
(``--data-dir``, never copied) and reports the test RMSE.  ``-bf16`` cases pass
``dtype="bfloat16"`` to the new build only; the base build runs them in fp32.  ``ml10m-item``
runs the synthetic ML-10M shape of ``bench/bench_cpu.py`` (with its 16 item features; generated once into
``--cache-dir``, so both builds train on the same ratings).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent

WORKER = r"""
import json, sys, time
import numpy as np
from cfn_fast import CFN, RatingSet, train_test_split
case, data_dir, bf16, cache = json.loads(sys.argv[1])
if case.startswith("ml1m"):
    with np.load(data_dir + "/ratings.npz") as f:
        ratings = RatingSet.from_arrays(f["user"], f["item"], f["rating"], scale=(1.0, 5.0))
else:   # the synthetic ML-10M shape of bench/bench_cpu.py (with its 16 item features), generated once
    import os
    from cfn_fast import synthetic_ratings
    path = os.path.join(cache, "ab-synthetic-ml10m.npz")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        rs = synthetic_ratings(69_878, 10_677, 10_000_054, seed=0)
        np.savez(path + ".tmp.npz", user=rs.user, item=rs.item, rating=rs.rating, scale=np.array(rs.scale),
                 user_features=rs.user_features, item_features=rs.item_features)
        os.replace(path + ".tmp.npz", path)
    with np.load(path) as f:
        ratings = RatingSet.from_arrays(f["user"], f["item"], f["rating"], scale=tuple(f["scale"]),
                                        user_ids=np.arange(69_878), item_ids=np.arange(10_677),
                                        user_features=f["user_features"], item_features=f["item_features"])
kind = "user" if "-user" in case else "item"
train, test = train_test_split(ratings, 0.1, seed=0)
extra = {"dtype": "bfloat16"} if bf16 else {}
model = CFN(kind, hidden=(600,), epochs=20, seed=0, backend="cpu", **extra)
t0 = time.perf_counter()
model.fit(train)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rmse": float(model.score(test))}))
"""


def run_worker(python: str, worker: str, payload: list, label: str) -> dict:
    """Run ``worker`` (a script reading ``json.loads(sys.argv[1])``) with the build's ``python``, outside the source
    tree, and return the JSON of its last line (``label`` names the run in an error)."""
    out = subprocess.run([os.path.abspath(python), "-c", worker, json.dumps(payload)],
                         capture_output=True, text=True, check=False, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"{python} {label}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(rounds: int, cases: list[str], base: str, new: str) -> Iterator[tuple[int, str, str, str]]:
    """``(round, case, "base" or "new", python)`` in the order the runs go: each round runs every case once per
    build, the build that goes first alternating from round to round."""
    for r in range(rounds):
        for case in cases:
            builds = [("base", base), ("new", new)]
            if r % 2:
                builds.reverse()
            for label, python in builds:
                yield r, case, label, python


def run_one(python: str, case: str, data_dir: str, bf16: bool, cache: str) -> dict:
    return run_worker(python, WORKER, [case, data_dir, bf16, cache], case)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="python of the base build (e.g. 6a10619)")
    parser.add_argument("--new", required=True, help="python of the new build")
    parser.add_argument("--cases", default="ml1m-item,ml1m-user,ml1m-item-bf16,ml1m-user-bf16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "ml-1m"))
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "cfn_fast_bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    runs: dict[tuple[str, str], list[dict]] = {}
    for r, case, label, python in interleaved(args.rounds, cases, args.base, args.new):
        bf16 = case.endswith("-bf16") and label == "new"
        res = run_one(python, case, args.data_dir, bf16, args.cache_dir)
        runs.setdefault((case, label), []).append(res)
        print(f"round {r} {case:16s} {label:4s} {res['seconds']:7.2f} s  RMSE {res['rmse']:.4f}",
              file=sys.stderr, flush=True)
    rows = []
    for case in cases:
        base = min(runs[(case, "base")], key=lambda x: x["seconds"])
        new = min(runs[(case, "new")], key=lambda x: x["seconds"])
        rows.append({"case": case, "base_s": base["seconds"], "new_s": new["seconds"],
                     "speedup": base["seconds"] / new["seconds"], "base_rmse": base["rmse"], "new_rmse": new["rmse"]})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'case':16s} {'base s':>8s} {'new s':>8s} {'speed-up':>9s} {'base RMSE':>10s} {'new RMSE':>9s}")
        for x in rows:
            print(f"{x['case']:16s} {x['base_s']:8.2f} {x['new_s']:8.2f} {x['speedup']:8.2f}x "
                  f"{x['base_rmse']:10.4f} {x['new_rmse']:9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
