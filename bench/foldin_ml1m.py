"""Fold-in vs retraining on MovieLens-1M (U-CFN).

Hold out ``--holdout`` users entirely; split each one's ratings 90/10 (random, seeded).

* *fold-in*: train U-CFN on the other users only, then fold every held-out user in with
  their 90% (``CFN.fold_in``, no retraining) and predict their 10%;
* *retrained*: train the same U-CFN (same hyper-parameters and seed) on the other users
  **plus** the held-out users' 90%, and predict the same 10%.

The fold-in is acceptable when its RMSE on the held-out 10% is within ``--tolerance``
(0.01) of the retrained model's.  Reads ``../shared/data/ml-1m`` (never copied into the repo).

    python bench/foldin_ml1m.py                        # 600 hidden, 20 epochs, best backend
    python bench/foldin_ml1m.py --epochs 10 --json     # faster
    python bench/foldin_ml1m.py --side-info            # U-CFN++ (user features)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfn_fast import CFN, RatingSet, available_backends, rmse  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ml-1m"


def load(side_info: bool) -> RatingSet:
    if side_info:
        from cfn_fast import load_movielens
        return load_movielens(DATA)
    d = np.load(DATA / "ratings.npz", allow_pickle=False)
    return RatingSet.from_arrays(d["user"], d["item"], d["rating"], scale=(1, 5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--holdout", type=int, default=200, help="users held out entirely")
    ap.add_argument("--fold-ratio", type=float, default=0.9, help="share of a held-out user's ratings folded in")
    ap.add_argument("--hidden", type=int, nargs="+", default=[600])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--backend", default=None, help="default: cpu if available, else numpy")
    ap.add_argument("--side-info", action="store_true", help="U-CFN++ with the ML-1M user features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not (DATA / "ratings.npz").exists():
        print(f"ML-1M not found at {DATA}", file=sys.stderr)
        return 2
    backend = args.backend or ("cpu" if "cpu" in available_backends() else "numpy")

    full = load(args.side_info)
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(full.n_users, args.holdout, replace=False))       # user indices
    is_held = np.isin(full.user, held)
    fold_part = np.zeros(full.nnz, dtype=bool)                                   # held-out ratings folded in
    for u in held:
        rows = np.flatnonzero(full.user == u)
        n_fold = int(round(args.fold_ratio * len(rows)))
        fold_part[rng.permutation(rows)[:n_fold]] = True
    test_part = is_held & ~fold_part

    keep_users = np.setdiff1d(np.arange(full.n_users), held)
    uf = None if full.user_features is None else full.user_features[keep_users]
    base = RatingSet.from_arrays(full.user_ids[full.user[~is_held]], full.item_ids[full.item[~is_held]],
                                 full.rating[~is_held], scale=full.scale, user_ids=full.user_ids[keep_users],
                                 item_ids=full.item_ids, user_features=uf, item_features=full.item_features)
    retrain = full.subset(~test_part)          # same universe as full: every user and item
    test = full.subset(test_part)

    def model() -> CFN:
        return CFN("user", tuple(args.hidden), args.epochs, backend=backend, use_side_info=args.side_info,
                   seed=args.seed, verbose=1)

    t0 = time.perf_counter()
    folded_model = model().fit(base)
    t_base = time.perf_counter() - t0

    t0 = time.perf_counter()
    fold_pred = np.empty(test.nnz)
    for u in held:
        given = fold_part & (full.user == u)
        wanted = np.flatnonzero(full.user[test_part] == u)
        feats = None if not args.side_info else full.user_features[u]
        fold = folded_model.fold_in(full.item_ids[full.item[given]], full.rating[given], features=feats)
        fold_pred[wanted] = fold.predict(test.item_ids[test.item[wanted]])
    t_fold = time.perf_counter() - t0

    t0 = time.perf_counter()
    retrained = model().fit(retrain)
    t_retrain = time.perf_counter() - t0
    retrain_pred = retrained.predict_indices(test.user, test.item)

    item_mean = np.bincount(base.item, weights=base.rating, minlength=base.n_items) / \
        np.maximum(np.bincount(base.item, minlength=base.n_items), 1)
    item_mean = np.where(np.bincount(base.item, minlength=base.n_items) > 0, item_mean, base.rating.mean())
    result = {
        "data": "ml-1m", "backend": backend, "hidden": args.hidden, "epochs": args.epochs,
        "side_info": args.side_info, "seed": args.seed, "held_out_users": args.holdout,
        "folded_in_ratings": int(fold_part.sum()), "test_ratings": int(test.nnz),
        "rmse_fold_in": rmse(fold_pred, test.rating), "rmse_retrained": rmse(retrain_pred, test.rating),
        "rmse_item_mean": rmse(item_mean[test.item], test.rating),
        "seconds_train_base": round(t_base, 1), "seconds_fold_in_all": round(t_fold, 3),
        "seconds_retrain": round(t_retrain, 1),
    }
    result["difference"] = result["rmse_fold_in"] - result["rmse_retrained"]
    result["within_tolerance"] = abs(result["difference"]) <= args.tolerance
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:22s} {value}")
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
