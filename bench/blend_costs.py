"""What the default blend costs beside the paper's I-CFN and ``kind="auto"``, on ML-1M split seed 0.

    python bench/blend_costs.py [--data ../shared/data] [--kinds item,auto,blend]

Prints, for each model (trained in the same run, one after the other): the fit time, the test RMSE, the time to
predict every test pair (``predict_indices``), to recommend 10 items to 1,000 users (``recommend_batch``), and the
size of the saved model file.  The issue's bounds: the default's fit at most 1.5x ``kind="auto"``, its predict and
recommend throughput within 3x of I-CFN, its file within 5x.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cfn_fast import CFN, train_test_split
from cfn_fast.data.movielens import load_movielens

KINDS = {"item": {"kind": "item"}, "user": {"kind": "user"}, "auto": {"kind": "auto"}, "blend": {},
         "best": {"quality": "best"}}


def measure(name: str, train, test, backend: str) -> dict:
    started = time.perf_counter()
    model = CFN(**KINDS[name], backend=backend).fit(train)
    fit = time.perf_counter() - started
    rmse = model.score(test)
    started = time.perf_counter()
    model.predict_indices(test.user, test.item)
    predict = time.perf_counter() - started
    users = train.user_ids[:1000]
    model.recommend_batch(users[:10], n=10)                 # caches (item codes, seen matrix) built once
    started = time.perf_counter()
    model.recommend_batch(users, n=10)
    recommend = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        model.save(path)
        size = os.path.getsize(path)
    return {"fit_s": fit, "rmse": rmse, "predict_s": predict, "recommend_s": recommend, "file_mb": size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--kinds", default="item,auto,blend")
    parser.add_argument("--backend", default="cpu")
    args = parser.parse_args()
    train, test = train_test_split(load_movielens(Path(args.data) / "ml-1m", side_info=False), 0.1, seed=0)
    rows = {}
    for name in args.kinds.split(","):
        rows[name] = measure(name, train, test, args.backend)
        r = rows[name]
        print(f"{name:6s} fit {r['fit_s']:6.1f} s  RMSE {r['rmse']:.4f}  predict {r['predict_s']:.3f} s  "
              f"recommend {r['recommend_s']:.3f} s  file {r['file_mb']:.1f} MB", flush=True)
    if "item" in rows:
        for name, r in rows.items():
            base = rows["item"]
            print(f"{name:6s} vs item: fit {r['fit_s'] / base['fit_s']:.2f}x  predict "
                  f"{r['predict_s'] / base['predict_s']:.2f}x  recommend {r['recommend_s'] / base['recommend_s']:.2f}x"
                  f"  file {r['file_mb'] / base['file_mb']:.2f}x")
    if "auto" in rows and "blend" in rows:
        print(f"blend fit / auto fit: {rows['blend']['fit_s'] / rows['auto']['fit_s']:.2f}x")


if __name__ == "__main__":
    main()
