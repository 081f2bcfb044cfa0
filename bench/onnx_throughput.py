"""ONNX Runtime beside ``CFN`` on MovieLens-1M: predictions per second of the exported graphs.

Trains a U-CFN and an I-CFN (600 hidden units by default; throughput does not depend on how long they
trained, so ``--epochs 2``) on a 90/10 split of ``../shared/data/ml-1m`` (never copied into the repo),
exports each with :meth:`CFN.to_onnx` and times, on the same machine and the same requests:

* **pairs**: the test set's (user, item) pairs — ``model.predict_indices`` against the ``predict`` graph
  fed each sample's training row and its requested columns (batches of ``--batch`` samples, columns padded
  per batch; only the real pairs are counted);
* **rows**: every output of ``--rows`` samples — ``model.decode(*model.encode(rows, return_means=True))``
  against the ``reconstruct`` graph (ratings per second);
* **recommend**: top-10 for ``--users`` users — ``model.recommend_batch`` against the ``recommend`` graph
  (users per second).

Each figure is the best of ``--repeat`` runs; the largest |difference| to the model is printed beside it.

    python bench/onnx_throughput.py                 # both kinds, cpu backend, JSON summary on the last line
    python bench/onnx_throughput.py --kinds item --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfn_fast import CFN, RatingSet, available_backends, train_test_split  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ml-1m"


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def training_rows(model: CFN, samples: np.ndarray) -> np.ndarray:
    """Dense rating rows (NaN = unknown) of the given samples' training ratings."""
    from cfn_fast.data.ratings import build_csr
    train = model.train_
    index, other = (train.user, train.item) if model.kind == "user" else (train.item, train.user)
    csr = build_csr(index, other, train.rating, model.inputs_.shape)[samples]
    dense = np.full(csr.shape, np.nan, dtype=np.float32)
    dense[np.repeat(np.arange(len(samples)), np.diff(csr.indptr)), csr.indices] = csr.data
    return dense


def row_feeds(dense: np.ndarray, input_format: str) -> dict:
    """The graph's row inputs: the dense NaN-padded rows, or padded column indices and values."""
    if input_format == "dense":
        return {"ratings": dense}
    known = ~np.isnan(dense)
    counts = known.sum(1)
    indices = np.full((len(dense), max(int(counts.max()), 1)), -1, dtype=np.int64)
    values = np.zeros(indices.shape, dtype=np.float32)
    rows, cols = np.nonzero(known)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    indices[rows, slot] = cols
    values[rows, slot] = dense[rows, cols]
    return {"indices": indices, "values": values}


def session(model: CFN, graph: str, threads: int, input_format: str = "dense"):
    import onnxruntime as ort

    from cfn_fast.export.onnx import build_onnx
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(build_onnx(model.runtime_, graph, input_format=input_format).SerializeToString(),
                                options, providers=["CPUExecutionProvider"])


def bench_pairs(model: CFN, test: RatingSet, args) -> dict:
    samples, inputs = (test.user, test.item) if model.kind == "user" else (test.item, test.user)
    order = np.argsort(samples, kind="stable")
    samples, inputs = samples[order], inputs[order]
    unique, starts, counts = np.unique(samples, return_index=True, return_counts=True)
    rows = training_rows(model, unique)
    side = None if model.side_ is None else model.side_[unique]
    sess = session(model, "predict", args.threads, args.input_format)

    def run_onnx() -> np.ndarray:
        out = np.empty(len(samples), dtype=np.float32)
        for lo in range(0, len(unique), args.batch):
            hi = min(lo + args.batch, len(unique))
            width = int(counts[lo:hi].max())
            columns = np.empty((hi - lo, width), dtype=np.int64)
            for r in range(lo, hi):  # each sample's requested columns, padded with its first one
                cols = inputs[starts[r]:starts[r] + counts[r]]
                columns[r - lo, :counts[r]] = cols
                columns[r - lo, counts[r]:] = cols[0]
            feeds = {**row_feeds(rows[lo:hi], args.input_format), "columns": columns}
            if side is not None:
                feeds["features"] = side[lo:hi]
            pred, = sess.run(None, feeds)
            for r in range(lo, hi):
                out[starts[r]:starts[r] + counts[r]] = pred[r - lo, :counts[r]]
        return out

    users, items = (samples, inputs) if model.kind == "user" else (inputs, samples)
    t_model, ref = best_of(args.repeat, lambda: model.predict_indices(users, items))
    t_onnx, got = best_of(args.repeat, run_onnx)
    return {"pairs": len(samples), "model_per_s": len(samples) / t_model, "onnx_per_s": len(samples) / t_onnx,
            "max_abs_diff": float(np.max(np.abs(got - ref)))}


def bench_rows(model: CFN, args) -> dict:
    samples = np.arange(min(args.rows, model.inputs_.shape[0]))
    rows = training_rows(model, samples)
    side = None if model.side_ is None else model.side_[samples]
    sess = session(model, "reconstruct", args.threads, args.input_format)
    feeds = row_feeds(rows, args.input_format)
    if side is not None:
        feeds["features"] = side

    def run_model():
        codes, means = model.encode(rows, side, return_means=True)
        return model.decode(codes, side, means=means)

    t_model, ref = best_of(args.repeat, run_model)
    t_onnx, got = best_of(args.repeat, lambda: sess.run(None, feeds)[0])
    n = rows.size
    return {"rows": len(samples), "ratings": n, "model_per_s": n / t_model, "onnx_per_s": n / t_onnx,
            "max_abs_diff": float(np.max(np.abs(got - ref)))}


def bench_recommend(model: CFN, args) -> dict:
    train = model.train_
    users = np.arange(min(args.users, train.n_users))
    sess = session(model, "recommend", args.threads, args.input_format)
    k = np.array([10], dtype=np.int64)
    if model.kind == "user":
        feeds = {**row_feeds(training_rows(model, users), args.input_format), "k": k}
        if model.side_ is not None:
            feeds["features"] = model.side_[users]
    else:
        seen = model._seen_items()[users]
        width = int(np.diff(seen.indptr).max())
        exclude = np.full((len(users), width), -1, dtype=np.int64)
        for r in range(len(users)):
            cols = seen.indices[seen.indptr[r]:seen.indptr[r + 1]]
            exclude[r, :len(cols)] = cols
        feeds = {"users": users.astype(np.int64), "exclude": exclude, "k": k}
    t_model, ref = best_of(args.repeat, lambda: model.recommend_batch(train.user_ids[users], 10))
    t_onnx, (top, _) = best_of(args.repeat, lambda: sess.run(None, feeds))
    same = float(np.mean([np.array_equal(train.item_ids[top[r]], ids) for r, (ids, _) in enumerate(ref)]))
    return {"users": len(users), "model_users_per_s": len(users) / t_model, "onnx_users_per_s": len(users) / t_onnx,
            "top10_identical_share": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=["user", "item"], choices=("user", "item"))
    ap.add_argument("--hidden", type=int, nargs="+", default=[600])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--backend", default=None, help="default: cpu if available, else numpy")
    ap.add_argument("--side-info", action="store_true", help="CFN++ with the ML-1M user/item features")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--input-format", choices=("dense", "sparse"), default="sparse",
                    help="row inputs of the graphs (default sparse: padded indices + values)")
    ap.add_argument("--batch", type=int, default=256, help="samples per ONNX Runtime call (pairs)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not (DATA / "ratings.npz").exists():
        print(f"ML-1M not found at {DATA}", file=sys.stderr)
        return 2
    if args.side_info:
        from cfn_fast import load_movielens
        ratings = load_movielens(DATA)
    else:
        d = np.load(DATA / "ratings.npz", allow_pickle=False)
        ratings = RatingSet.from_arrays(d["user"], d["item"], d["rating"], scale=(1, 5))
    train, test = train_test_split(ratings, 0.1, seed=0)
    backend = args.backend or ("cpu" if "cpu" in available_backends() else "numpy")
    summary = {"backend": backend, "hidden": args.hidden, "input_format": args.input_format,
               "onnx_threads": args.threads, "cpus": os.cpu_count(), "side_info": args.side_info}
    for kind in args.kinds:
        model = CFN(kind, tuple(args.hidden), args.epochs, backend=backend, use_side_info=args.side_info)
        model.fit(train)
        result = {"pairs": bench_pairs(model, test, args), "rows": bench_rows(model, args),
                  "recommend": bench_recommend(model, args)}
        summary[kind] = result
        label = "U-CFN" if kind == "user" else "I-CFN"
        p, r, c = result["pairs"], result["rows"], result["recommend"]
        print(f"{label} pairs     : model {p['model_per_s']:12,.0f}/s  onnxruntime {p['onnx_per_s']:12,.0f}/s  "
              f"({p['pairs']:,} test pairs, max |diff| {p['max_abs_diff']:.1e})")
        print(f"{label} full rows : model {r['model_per_s']:12,.0f}/s  onnxruntime {r['onnx_per_s']:12,.0f}/s  "
              f"({r['rows']} rows x {r['ratings'] // r['rows']} outputs, max |diff| {r['max_abs_diff']:.1e})")
        print(f"{label} recommend : model {c['model_users_per_s']:12,.0f} users/s  onnxruntime "
              f"{c['onnx_users_per_s']:12,.0f} users/s  (top-10 identical for {100 * c['top10_identical_share']:.0f}%)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
