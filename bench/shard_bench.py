"""Sharded training on this machine: ML-1M I-CFN, 20 epochs, unsharded and with 1, 2 (and 4) shards on Ray.

    python bench/shard_bench.py                       # writes bench/shard_bench.json, prints the table
    python bench/shard_bench.py --shards 1,2 --epochs 20 --backend cpu
    python bench/shard_bench.py --shards 2 --keep --out bench/shard_keep.json   # the network kept sharded

Each row: the fit's wall time (Ray start-up excluded: Ray is started once before the runs), the test RMSE on the
90/10 split (seed 0), the largest weight difference from the unsharded model, and per shard and step the bytes
the shard puts into the exchange (its two blocks: batch x hidden float32, twice) and receives from the others,
with the seconds it spent in the two sums.  With ``--keep`` the sharded runs cap ``max_worker_bytes`` one byte below
the whole network, so it stays sharded (never gathered in this process): the rows add the time to score the test
part (predicting shard by shard), to save the folder of parts and its size, and to load it and score again.
docs/scale_out.md uses these figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from cfn_fast import CFN, train_test_split  # noqa: E402
from cfn_fast.data.movielens import load_movielens  # noqa: E402


def fit(train, test, shards: int | None, args) -> tuple[CFN, dict]:
    cap = whole_network_bytes(train) - 1 if args.keep and shards else None
    model = CFN("item", hidden=(600,), epochs=args.epochs, seed=0, backend=args.backend, shards=shards,
                max_worker_bytes=cap)
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    row = {"shards": shards, "seconds": round(seconds, 2), "test_rmse": round(float(model.score(test)), 4),
           "score_seconds": round(time.perf_counter() - start, 3)}
    if cap is not None:
        row.update(kept_on_disk(model, test))
    engine = model.engine_
    stats = getattr(engine, "last_stats", [])
    if stats:
        steps = stats[0]["steps"]
        sent = stats[0]["bytes_sent"] / steps
        row.update(steps=steps, bytes_sent_per_step=int(sent), bytes_received_per_step=int(sent * (len(stats) - 1)),
                   sum_seconds_per_step=round(max(s["seconds"] for s in stats) / steps, 5))
    return model, row


def whole_network_bytes(train) -> int:
    from cfn_fast.sharding.parts import PartLayout
    return PartLayout.even(train.n_users, (600,), 0, 1).nbytes()     # I-CFN: one input per user


def kept_on_disk(model: CFN, test) -> dict:
    """Save the kept-sharded model's folder, load it and score again (one part in memory at a time)."""
    import shutil
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="cfn-shard-bench-")) / "model"
    try:
        start = time.perf_counter()
        model.save(folder)
        saved = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        start = time.perf_counter()
        rmse = float(CFN.load(folder).score(test))
        return {"kept": True, "save_seconds": round(saved, 3), "folder_bytes": size,
                "load_and_score_seconds": round(time.perf_counter() - start, 3), "loaded_test_rmse": round(rmse, 4)}
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "ml-1m"))
    parser.add_argument("--shards", default="1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--out", default=str(HERE / "shard_bench.json"))
    parser.add_argument("--keep", action="store_true", help="cap max_worker_bytes below the whole network")
    args = parser.parse_args()
    import ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             _system_config={"worker_niceness": 0})
    train, test = train_test_split(load_movielens(args.data_dir, side_info=False), 0.1, seed=0)
    reference, base = fit(train, test, None, args)
    rows = [base]
    for shards in (int(s) for s in args.shards.split(",")):
        model, row = fit(train, test, shards, args)
        layers = model.layers_.gather() if row.get("kept") else model.layers_      # gathered here to compare only
        row["max_weight_difference"] = float(max(np.max(np.abs(a - b)) for p, q in zip(layers, reference.layers_)
                                                 for a, b in zip(p.arrays(), q.arrays())))
        rows.append(row)
        print(row, flush=True)
    ray.shutdown()
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(), "backend": args.backend, "epochs": args.epochs,
               "train_ratings": int(len(train.rating))}
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    print("| shards | fit (s) | test RMSE | max weight diff | bytes put / step / shard | bytes received "
          "| sums (s/step) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['shards'] or 'unsharded'} | {row['seconds']} | {row['test_rmse']} | "
              f"{row.get('max_weight_difference', '')} | {row.get('bytes_sent_per_step', '')} | "
              f"{row.get('bytes_received_per_step', '')} | {row.get('sum_seconds_per_step', '')} |")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
