"""Do the defaults hold on any rating data?  A density and scale sweep of CFN's defaults and every baseline.

For each set (synthetic ones from 2 to about 5,000 known entries per sample, wide and narrow,
on 1..5, half stars, 1..100 and -10..10, plus ML-100K and a 10 % sample of ML-1M when
/work/shared/data holds them), one 90/10 train/test split (seed 0), then test RMSE and
training time of:

* CFN with its defaults as ``I-CFN`` and ``U-CFN`` (the paper's per-sample centring), the same with
  ``centring="bias"`` (CFN on the bias model's residuals), and ``auto`` (``kind="auto"``: it picks one
  of those four on a validation part of the training set, :mod:`cfn_fast.training.selection`; its cell names
  the pick of each seed and its time includes the selection), each over 3 model seeds: mean RMSE,
  and how many of the seeds diverged (``TrainingDiverged``);
* the reference predictors (global mean, item mean, the regularised bias model μ + b_u + b_i) and
  every baseline of :mod:`cfn_fast.tools.baselines` with its defaults (seed 0).

Usage::

    python bench/sweep_defaults.py                # the full sweep (about 15-20 min on 2 idle cores)
    python bench/sweep_defaults.py --quick        # tiny sets, few epochs: a smoke run (CI test)
    python bench/sweep_defaults.py --sets narrow-dense,ml-100k --json out.json

The closing summary checks the issue's bar on every set: no divergence, auto <= bias model,
every baseline finite and <= global mean.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cfn_fast import CFN
from cfn_fast.data import load_ratings, synthetic_ratings, train_test_split
from cfn_fast.data.ratings import RatingSet
from cfn_fast.tools import baselines as B
from cfn_fast.training.trainer import TrainingDiverged

DATA = Path("/work/shared/data")


@dataclass(frozen=True)
class SweepSet:
    name: str
    make: Callable[[], RatingSet]
    note: str


def _synthetic(n_users: int, n_items: int, n_ratings: int, scale: tuple[float, float] | None = None,
               half_stars: bool = False) -> Callable[[], RatingSet]:
    return lambda: synthetic_ratings(n_users, n_items, n_ratings, scale=scale, half_stars=half_stars,
                                     side_info=True, max_density=0.9, seed=0)


def _movielens(name: str, keep: float) -> Callable[[], RatingSet]:
    def make() -> RatingSet:
        ratings = load_ratings(DATA / name / "ratings.npz", scale=(1.0, 5.0))
        if keep < 1:
            chosen = np.random.default_rng(0).random(ratings.nnz) < keep
            ratings = ratings.subset(chosen)
        return ratings
    return make


FULL_SETS = [
    SweepSet("sparse", _synthetic(4000, 2000, 12_000), "1..5, ~2.7 ratings/user, ~5 /item"),
    SweepSet("sparse-items", _synthetic(1000, 4000, 24_000, half_stars=True), "half stars, ~5 /item"),
    SweepSet("ml-like", _synthetic(2000, 1000, 60_000), "1..5, 27 /user, 54 /item"),
    SweepSet("half-stars", _synthetic(1500, 800, 80_000, half_stars=True), "0.5..5, 48 /user, 90 /item"),
    SweepSet("scale-100", _synthetic(2000, 500, 100_000, scale=(1, 100)), "1..100, 45 /user, 180 /item"),
    SweepSet("scale-pm10", _synthetic(1500, 1000, 150_000, scale=(-10, 10)), "-10..10, 90 /user, 135 /item"),
    SweepSet("dense-square", _synthetic(500, 500, 120_000), "1..5, ~216 /sample"),
    SweepSet("narrow-dense", _synthetic(5600, 30, 150_000, scale=(-10, 10)), "-10..10, 5600 x 30, ~4,500 /item"),
    SweepSet("wide-dense", _synthetic(30, 5600, 150_000, scale=(1, 100)), "1..100, 30 x 5600, ~4,500 /user"),
    SweepSet("ml-100k", _movielens("ml-100k", 1.0), "MovieLens 100K"),
    SweepSet("ml-1m-10pct", _movielens("ml-1m", 0.1), "ML-1M, 10 % of ratings kept"),
]

QUICK_SETS = [
    SweepSet("q-sparse", _synthetic(300, 150, 900), "1..5, ~3 /user"),
    SweepSet("q-scale-100", _synthetic(200, 100, 4000, scale=(1, 100)), "1..100"),
    SweepSet("q-narrow", _synthetic(400, 20, 6000, scale=(-10, 10)), "-10..10, 400 x 20"),
]

#: Baselines whose defaults cost minutes per set on 2 busy cores (I-AutoRec's dense items x users
#: products, the NumPy linear CFN, LLORMA's anchors): run only on sets with at most
#: --slow-max-ratings training ratings (default 0: not in the full sweep; --quick runs them all).
#: Their scale handling is covered by tests/test_defaults.py (scale equivariance).
SLOW_BASELINES = ("I-AutoRec", "Linear I-CFN", "LLORMA")

BASELINES: dict[str, Callable[[bool], B.Baseline]] = {
    "Global mean": lambda quick: B.GlobalMean(),
    "Item mean": lambda quick: B.ItemMean(),
    "Bias (μ+b_u+b_i)": lambda quick: B.UserItemBias(),
    "ALS-WR": lambda quick: B.ALSWR(n_iter=3) if quick else B.ALSWR(),
    "BPMF": lambda quick: B.BPMF(n_samples=4, burn_in=1) if quick else B.BPMF(),
    "SVDFeature": lambda quick: B.SVDFeature(n_epochs=3) if quick else B.SVDFeature(),
    "LLORMA": lambda quick: B.LLORMA(n_anchors=3, n_iter=2) if quick else B.LLORMA(),
    "I-AutoRec": lambda quick: B.IAutoRec(hidden=20, max_iter=5) if quick else B.IAutoRec(),
    "Linear I-CFN": lambda quick: B.LinearICFN(hidden=(20,), epochs=2) if quick else B.LinearICFN(),
}


def _cfn(kind: str, seed: int, quick: bool, centring: str | None = None) -> CFN:
    return CFN(kind, hidden=(20,) if quick else (600,), epochs=3 if quick else 20, seed=seed, centring=centring)


CFN_ROWS = {"I-CFN": ("item", None), "U-CFN": ("user", None), "I-CFN, bias centring": ("item", "bias"),
            "U-CFN, bias centring": ("user", "bias"), "auto": ("auto", None)}


def run_set(sweep_set: SweepSet, seeds: tuple[int, ...], quick: bool, baselines: list[str],
            slow_max_ratings: int = 10**9) -> dict[str, Any]:
    ratings = sweep_set.make()
    train, test = train_test_split(ratings, 0.1, seed=0)
    known = {"user": train.nnz / max(np.count_nonzero(np.bincount(train.user)), 1),
             "item": train.nnz / max(np.count_nonzero(np.bincount(train.item)), 1)}
    rows: dict[str, dict[str, Any]] = {}
    for name, (kind, centring) in CFN_ROWS.items():
        rows[name] = _cfn_row(lambda seed, k=kind, c=centring: _cfn(k, seed, quick, c), train, test, seeds)
    for name in baselines:
        if name in SLOW_BASELINES and train.nnz > slow_max_ratings:
            rows[name] = {"rmse": math.nan, "seconds": 0.0, "error": "skipped (slow on this size)", "skipped": True}
            continue
        rows[name] = _timed(lambda: BASELINES[name](quick).fit(train).score(test))
    return {"set": sweep_set.name, "note": sweep_set.note, "scale": list(train.scale), "n_users": train.n_users,
            "n_items": train.n_items, "n_train": train.nnz, "known_per_user": known["user"],
            "known_per_item": known["item"], "rows": rows}


def _cfn_row(make: Callable[[int], Any], train: RatingSet, test: RatingSet, seeds: tuple[int, ...]) -> dict[str, Any]:
    scores, seconds, diverged, picks = [], 0.0, 0, []
    for seed in seeds:
        start = time.perf_counter()
        try:
            model = make(seed).fit(train)
            scores.append(model.score(test))
            picks.append(f"{model.kind_[0].upper()}{'b' if model.centring_ == 'bias' else 's'}")
        except TrainingDiverged:
            diverged += 1
        seconds += time.perf_counter() - start
    return {"rmse": float(np.mean(scores)) if scores else math.nan,
            "spread": float(np.ptp(scores)) if scores else math.nan,
            "worst": float(np.max(scores)) if scores else math.nan,
            "seconds": seconds / len(seeds), "diverged": diverged, "seeds": len(seeds), "picks": picks}


def _timed(fit_score: Callable[[], float]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        value, error = float(fit_score()), None
    except Exception as exc:  # the sweep reports a failing baseline, it does not stop
        value, error = math.nan, f"{type(exc).__name__}: {exc}"
    return {"rmse": value, "seconds": time.perf_counter() - start, "error": error}


def check(result: dict[str, Any]) -> list[str]:
    """The issue's bar on one set: what fails (empty when everything holds)."""
    rows, problems = result["rows"], []
    for name in CFN_ROWS:
        if rows[name]["diverged"]:
            problems.append(f"{name} diverged on {rows[name]['diverged']}/{rows[name]['seeds']} seeds")
    bias = rows["Bias (μ+b_u+b_i)"]["rmse"] if "Bias (μ+b_u+b_i)" in rows else math.nan
    if not rows["auto"]["rmse"] <= bias:
        problems.append(f"auto ({rows['auto']['rmse']:.4f}) above the bias model ({bias:.4f})")
    elif not rows["auto"].get("worst", rows["auto"]["rmse"]) <= bias:
        problems.append(f"auto's worst seed ({rows['auto']['worst']:.4f}) above the bias model ({bias:.4f})")
    floor = rows["Global mean"]["rmse"] if "Global mean" in rows else math.inf
    for name in BASELINES:
        if name in rows and not rows[name].get("skipped") and not (math.isfinite(rows[name]["rmse"])
                                                                   and rows[name]["rmse"] <= floor):
            problems.append(f"{name} {rows[name]['rmse']:.4f} not finite or above the global mean {floor:.4f}")
    return problems


def format_table(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["rows"])
    head = "| method | " + " | ".join(r["set"] for r in results) + " |"
    lines = [head, "|" + "---|" * (len(results) + 1)]
    lines.append("| shape (train) | " + " | ".join(
        f"{r['n_users']}x{r['n_items']}, {r['n_train']:,}, {r['scale'][0]:g}..{r['scale'][1]:g}, "
        f"{r['known_per_user']:.0f}/u {r['known_per_item']:.0f}/i" for r in results) + " |")
    for name in names:
        cells = []
        for r in results:
            row = r["rows"][name]
            if row.get("skipped"):
                cells.append("not run")
                continue
            text = "—" if not math.isfinite(row["rmse"]) else f"{row['rmse']:.4f}"
            if row.get("diverged"):
                text += f" ({row['diverged']}/{row['seeds']} div.)"
            if name == "auto":
                text += f" ({','.join(row['picks'])})"
            cells.append(f"{text} · {row['seconds']:.1f}s")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(results: list[dict[str, Any]], failures: dict[str, list[str]]) -> None:
    print()
    print(format_table(results))
    print()
    for name, problems in failures.items():
        print(f"{name}: " + ("all checks hold" if not problems else "; ".join(problems)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets, few epochs (a smoke run)")
    parser.add_argument("--sets", default=None, help="comma-separated set names (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="CFN model seeds per set (default 3)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated baseline names")
    parser.add_argument("--slow-max-ratings", type=int, default=0,
                        help=f"run {', '.join(SLOW_BASELINES)} only on sets with at most this many training ratings")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--table-from", nargs="+", default=None, metavar="JSON",
                        help="print the table and checks of earlier --json runs (e.g. the sweep run in parts)")
    args = parser.parse_args(argv)
    if args.table_from:
        stored = [json.loads(Path(f).read_text()) for f in args.table_from]
        _report([r for s in stored for r in s["results"]], {k: v for s in stored for k, v in s["failures"].items()})
        return 0
    sets = QUICK_SETS if args.quick else FULL_SETS
    if args.quick:
        args.slow_max_ratings = max(args.slow_max_ratings, 10**9)
    if args.sets:
        wanted = args.sets.split(",")
        unknown = sorted(set(wanted) - {s.name for s in sets})
        if unknown:
            parser.error(f"unknown set(s) {unknown}; known: {[s.name for s in sets]}")
        sets = [s for s in sets if s.name in wanted]
    sets = [s for s in sets if not s.name.startswith("ml-") or DATA.is_dir()]
    baselines = [b for b in args.baselines.split(",") if b]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {unknown}; known: {list(BASELINES)}")
    results, failures = [], {}
    for sweep_set in sets:
        start = time.perf_counter()
        result = run_set(sweep_set, tuple(range(args.seeds)), args.quick, baselines, args.slow_max_ratings)
        results.append(result)
        failures[sweep_set.name] = check(result)
        if args.json:  # after every set: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps({"results": results, "failures": failures}, indent=1))
        print(f"[{sweep_set.name}] {time.perf_counter() - start:.0f}s: " +
              ", ".join(f"{k} {v['rmse']:.4f}" for k, v in result["rows"].items()), flush=True)
    _report(results, failures)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "failures": failures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
