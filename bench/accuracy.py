"""The accuracy table: the library's defaults against the bias model and the published ML-1M figures.

One command writes ``bench/accuracy.md`` (and ``--json``):

    python bench/accuracy.py                                  # everything (about 60 minutes on 2 cores)
    python bench/accuracy.py --parts ml-1m --models blend     # one part, some models

Parts:

* ``ml-1m``: MovieLens-1M, 90/10 splits with seeds 0-4 (``train_test_split(ratings, 0.1, seed)``), mean ± sd
  of the test RMSE and the fit time; each model is chosen and trained on the training part alone (a blend
  carves its validation part from it), and scored once on the test part, after its last epoch.
* ``ml-100k``: the same on MovieLens-100K.
* ``sweep``: the density sweep of ``bench/sweep_defaults.py`` (synthetic sets of 2 to 4,500 ratings per row,
  scales 1..5, half stars, 1..100, -10..10; ML-100K and a 10 % ML-1M), split seed 0.

Models: ``bias`` (μ + b_u + b_i, λ = 5 on both sides, 10 sweeps, items first: the reference the default must
never lose to), ``item`` / ``user`` (the paper's I-CFN / U-CFN, ``CFN("item")``), ``auto`` (``kind="auto"``),
``blend`` (``CFN()``, the default) and ``best`` (``CFN(quality="best")``).  MovieLens files are read from
``--data`` (default ``../shared/data`` beside the checkout) and never copied.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_defaults import FULL_SETS  # noqa: E402

from cfn_fast import CFN, train_test_split  # noqa: E402
from cfn_fast.data.movielens import load_movielens  # noqa: E402
from cfn_fast.preprocessing import BiasModel  # noqa: E402

MODELS = {
    "bias": None,
    "item": {"kind": "item"},
    "user": {"kind": "user"},
    "auto": {"kind": "auto"},
    "blend": {},
    "best": {"quality": "best"},
}
SPLIT_SEEDS = (0, 1, 2, 3, 4)

#: Published ML-1M figures (90/10 random splits), with how each was selected.
PUBLISHED = [
    ("CFN, I-CFN (Strub et al. 2016)", "0.8321", "best epoch picked on the test set"),
    ("I-AutoRec (Sedhain et al. 2015)", "0.831 (0.839 re-run by a third party)", "published protocol"),
    ("Sparse FC (Muller et al. 2018)", "0.824", "last epoch"),
    ("GLocal-K (Han et al. 2021)", "0.8227", "minimum over test epochs"),
]


def score(name: str, train, test, backend: str) -> tuple[float, float]:
    started = time.perf_counter()
    if MODELS[name] is None:
        predicted = BiasModel.fit(train).predict(test.user, test.item)
    else:
        predicted = CFN(**MODELS[name], backend=backend).fit(train).predict_indices(test.user, test.item)
    seconds = time.perf_counter() - started
    return float(np.sqrt(np.mean((predicted - test.rating) ** 2))), seconds


def run_splits(ratings, models: list[str], seeds: tuple[int, ...], backend: str, label: str) -> dict:
    out: dict[str, dict] = {m: {"rmse": [], "seconds": []} for m in models}
    for seed in seeds:
        train, test = train_test_split(ratings, 0.1, seed=seed)
        for name in models:
            rmse, seconds = score(name, train, test, backend)
            out[name]["rmse"].append(rmse)
            out[name]["seconds"].append(seconds)
            print(f"[{label} seed {seed}] {name}: {rmse:.4f} ({seconds:.1f} s)", flush=True)
    return out


def mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def split_table(results: dict, title: str, seeds: tuple[int, ...]) -> list[str]:
    lines = [f"### {title}, 90/10 splits, seeds {', '.join(map(str, seeds))}", "",
             "| model | test RMSE (mean ± sd) | worst seed | fit seconds (mean) | vs bias model, every seed |",
             "|---|---|---|---|---|"]
    bias = results.get("bias", {}).get("rmse")
    for name, row in results.items():
        verdict = "—" if bias is None or name == "bias" else \
            ("at or below" if all(r <= b for r, b in zip(row["rmse"], bias)) else "**behind on some seed**")
        lines.append(f"| {name} | {mean_sd(row['rmse'])} | {max(row['rmse']):.4f} | "
                     f"{statistics.mean(row['seconds']):.1f} | {verdict} |")
    return lines + [""]


def sweep_table(results: dict, models: list[str]) -> list[str]:
    lines = ["### Density sweep (bench/sweep_defaults.py sets, split seed 0)", "",
             "| set | " + " | ".join(models) + " | default vs bias |", "|---|" + "---|" * (len(models) + 1)]
    for set_name, row in results.items():
        verdict = "—"
        if "bias" in row and "blend" in row:
            verdict = "at or below" if row["blend"]["rmse"][0] <= row["bias"]["rmse"][0] else "**behind**"
        lines.append(f"| {set_name} | " + " | ".join(f"{row[m]['rmse'][0]:.4f}" for m in models) + f" | {verdict} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="ml-1m,ml-100k,sweep")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default=",".join(map(str, SPLIT_SEEDS)))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "accuracy.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    lines = ["# Accuracy (generated by `python bench/accuracy.py " + " ".join(argv or sys.argv[1:]) + "`)", ""]
    results: dict[str, dict] = {}
    for part in args.parts.split(","):
        if part in ("ml-1m", "ml-100k"):
            folder = Path(args.data) / part
            if not folder.exists():
                print(f"skipping {part}: {folder} not found", flush=True)
                continue
            results[part] = run_splits(load_movielens(folder, side_info=False), models, seeds, args.backend, part)
            lines += split_table(results[part], "MovieLens-1M" if part == "ml-1m" else "MovieLens-100K", seeds)
        elif part == "sweep":
            results["sweep"] = {}
            for sweep_set in FULL_SETS:
                try:
                    ratings = sweep_set.make()
                except FileNotFoundError as exc:
                    print(f"skipping {sweep_set.name}: {exc}", flush=True)
                    continue
                results["sweep"][sweep_set.name] = run_splits(ratings, models, (0,), args.backend, sweep_set.name)
            lines += sweep_table(results["sweep"], models)
        else:
            parser.error(f"unknown part {part!r}")
    lines += ["### Published ML-1M figures (90/10)", "", "| method | RMSE | selection |", "|---|---|---|"]
    lines += [f"| {name} | {figure} | {how} |" for name, figure, how in PUBLISHED] + [""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
