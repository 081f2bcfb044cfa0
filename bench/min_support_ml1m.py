"""Effect of ``min_support`` and of the unclipped tie-break on CFN top-10 lists, MovieLens-1M.

Train the default I-CFN and U-CFN (hidden 600, 20 epochs) on a 90/10 split of ML-1M (seed 0),
pick ``--users`` users at random among those with a held-out rating >= 4, and rank every item
they did not rate in training.  For each ranking rule report

* ``rare share``: the share of the top-10 slots taken by items with at most 2 training ratings;
* ``ties@5``: the share of slots whose score is the clipped maximum of the scale;
* ``P@10``: precision@10 against the held-out ratings >= 4 (hits / 10, averaged over users);
* ``R@10``: recall@10 against the same held-out items.

Rules: ``before`` = the old rule (clipped score, ties by item index, no support filter);
``tie-break`` = ties broken by the unclipped score; ``min_support=k`` = tie-break plus items
with fewer than k training ratings left out.  Reads ``../shared/data/ml-1m`` (never copied).

    python bench/min_support_ml1m.py             # both kinds, cpu backend
    python bench/min_support_ml1m.py --kinds item --json
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

from cfn_fast import CFN, RatingSet, available_backends, train_test_split  # noqa: E402
from cfn_fast.fitted.ranking import top_n  # noqa: E402

DATA = Path("/work/shared/data/ml-1m") if Path("/work/shared/data/ml-1m").is_dir() else \
    ROOT.parent / "shared" / "data" / "ml-1m"
SUPPORTS = (0, 1, 3, 5, 10, 20, 50)
RARE = 2      # "rare" item: at most this many training ratings
RELEVANT = 4  # a held-out rating >= this is relevant


def evaluate(model: CFN, train: RatingSet, test: RatingSet, users: np.ndarray, n: int = 10) -> list[dict]:
    support = np.bincount(train.item, minlength=train.n_items)
    seen = model._seen_items()
    relevant = test.subset(test.rating >= RELEVANT)
    rel_items = {int(u): set(relevant.item[relevant.user == u].tolist()) for u in users}
    scores, unclipped = model._user_scores(users, unclipped=True)
    high = model.preprocessing_.high
    rules = [("before", dict()), ("tie-break", dict(unclipped=True))] + \
        [(f"min_support={k}", dict(unclipped=True, min_support=k)) for k in SUPPORTS if k]
    rows = []
    for name, rule in rules:
        rare = ties = hits = slots = recall = 0.0
        for row, u in enumerate(users):
            banned = seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
            best = top_n(scores[row], n, banned, unclipped=unclipped[row] if rule.get("unclipped") else None,
                         support=support, min_support=rule.get("min_support", 0))
            hit = len(rel_items[int(u)].intersection(best.tolist()))
            rare += int(np.sum(support[best] <= RARE))
            ties += int(np.sum(scores[row, best] >= high))
            slots += len(best)
            hits += hit
            recall += hit / len(rel_items[int(u)])
        rows.append({"rule": name, "rare_share": rare / slots, "tied_at_max_share": ties / slots,
                     "precision_at_10": hits / (n * len(users)), "recall_at_10": recall / len(users),
                     "slots": int(slots)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=["item", "user"], choices=("item", "user"))
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--backend", default=None, help="default: cpu if available, else numpy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not (DATA / "ratings.npz").exists():
        print(f"ML-1M not found at {DATA}", file=sys.stderr)
        return 2
    backend = args.backend or ("cpu" if "cpu" in available_backends() else "numpy")
    with np.load(DATA / "ratings.npz", allow_pickle=False) as d:
        ratings = RatingSet.from_arrays(d["user"], d["item"], d["rating"])
    train, test = train_test_split(ratings, 0.1, seed=args.seed)
    candidates = np.unique(test.user[test.rating >= RELEVANT])
    users = np.sort(np.random.default_rng(args.seed).choice(candidates, args.users, replace=False))
    support = np.bincount(train.item, minlength=train.n_items)
    out = {"data": "ML-1M", "train": train.nnz, "test": test.nnz, "users": len(users), "backend": backend,
           "rare_items": int(np.sum(support <= RARE)), "items": train.n_items, "kinds": {}}
    for kind in args.kinds:
        start = time.perf_counter()
        model = CFN(kind, (600,), args.epochs, backend=backend, seed=args.seed).fit(train)
        seconds = time.perf_counter() - start
        rows = evaluate(model, train, test, users)
        out["kinds"][kind] = {"train_seconds": round(seconds, 1), "test_rmse": model.score(test), "rules": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"ML-1M 90/10 split (seed {args.seed}): {train.nnz:,} train / {test.nnz:,} test ratings; "
          f"{out['rare_items']} of {train.n_items} items have <= {RARE} training ratings; {len(users)} users; "
          f"backend {backend}")
    for kind, res in out["kinds"].items():
        print(f"\n{'I' if kind == 'item' else 'U'}-CFN 600, {args.epochs} epochs: test RMSE {res['test_rmse']:.4f} "
              f"({res['train_seconds']} s)\n")
        print(f"| rule | share of top-10 slots with <= {RARE} training ratings | slots at the clipped max | "
              f"P@10 (held-out >= {RELEVANT}) | R@10 |")
        print("|---|---|---|---|---|")
        for r in res["rules"]:
            print(f"| {r['rule']} | {100 * r['rare_share']:.1f}% | {100 * r['tied_at_max_share']:.1f}% | "
                  f"{r['precision_at_10']:.4f} | {r['recall_at_10']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
