"""The paper's experiments on one data set: Table 1, Table 2, Figures 3-5 and the non-linearity ablation.

Protocol (every number in the report): splits are ``train_test_split(ratings, test_ratio, seed)``
with seeds 1..N; hyper-parameters come from the validation search (:mod:`.search`), never from a
test set; a model trains for its fixed budget on the whole training part and the reported figure
is its **final** test RMSE.  For CFN, the test RMSE after every epoch may also be tracked: its
minimum is the paper's protocol ("best epoch on test"), shown in a separate, labelled column.
"""
from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfn_fast.data.ratings import RatingSet
from cfn_fast.data.split import train_test_split
from cfn_fast.metrics import mean_ci, rmse, rmse_by_popularity
from cfn_fast.tools.baselines import GlobalMean, ItemMean

from .methods import Method, Preset

__all__ = [
    "Context",
    "figure3",
    "figure4",
    "fit_and_score",
    "linear_ablation",
    "summarise",
    "table1",
    "table2_half",
]


@dataclass
class Context:
    preset: Preset
    backend: str
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]
    log: Callable[[str], None] = print
    track_all_epochs: bool = False
    on_progress: Callable[[], None] = lambda: None
    failures: list[str] = field(default_factory=list)


def summarise(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "ci": None, "n": 0}
    ci = mean_ci(vals)
    return {"mean": ci.mean, "ci": None if math.isnan(ci.half_width) else ci.half_width, "n": ci.n}


def fit_and_score(method: Method, params: dict[str, Any], train: RatingSet, test: RatingSet, seed: int, *,
                  track: bool = False) -> dict[str, Any]:
    """Train one method on ``train`` and score its final state on ``test`` (plus the per-epoch test curve)."""
    model = method.make(params, seed)
    curve: list[float] = []
    scoring = [0.0]
    start = time.perf_counter()
    if method.kind == "cfn" and track:
        def score_epoch(record: Any) -> None:
            t0 = time.perf_counter()
            curve.append(model.score(test))
            scoring[0] += time.perf_counter() - t0
        model.fit(train, callbacks=(score_epoch,))
    else:
        model.fit(train)
    seconds = time.perf_counter() - start - scoring[0]     # training time, per-epoch test scoring excluded
    predicted = model.predict_indices(test.user, test.item)
    out = {"rmse": rmse(predicted, test.rating), "seconds": seconds, "predicted": predicted, "tracked": bool(curve)}
    if curve:
        out["curve"] = curve
        out["best_epoch_rmse"] = min(curve)
        out["best_epoch"] = int(np.argmin(curve)) + 1
    return out


def _run(ctx: Context, what: str, method: Method, params: dict[str, Any], train: RatingSet, test: RatingSet,
         seed: int, track: bool = False) -> dict[str, Any] | None:
    """:func:`fit_and_score`, with a failure logged and recorded instead of raised."""
    try:
        return fit_and_score(method, params, train, test, seed, track=track)
    except Exception as exc:  # noqa: BLE001 - one failing method must not lose the rest of a long run
        message = f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        ctx.failures.append(message)
        ctx.log(f"  FAILED {message}")
        ctx.log("".join(traceback.format_exception(exc)[-3:]).rstrip())
        return None


def _train_item_counts(train: RatingSet) -> np.ndarray:
    return np.bincount(train.item, minlength=train.n_items)


# ----------------------------------------------------------------------------- Table 1 (+ Table 2 90/10, Fig. 5)
def table1(ctx: Context, ratings: RatingSet, methods: dict[str, Method], params: dict[str, dict[str, Any]],
           names: tuple[str, ...]) -> dict[str, Any]:
    """RMSE of every method over the 90/10 splits; also Table 2 (90/10) and the curves of Figure 5."""
    rows: dict[str, dict[str, Any]] = {n: {"rmse": [], "seconds": [], "best_epoch_rmse": [], "seeds": []}
                                       for n in names}
    refs = {"Global mean": GlobalMean, "Item mean": ItemMean}
    ref_rows = {n: {"rmse": [], "seeds": []} for n in refs}
    buckets: dict[str, list[dict[str, float]]] = {"I-CFN": [], "I-CFN++": []}
    curves: dict[str, list[float]] = {}
    for seed in ctx.seeds:
        train, test = train_test_split(ratings, 0.1, seed=seed)
        counts = _train_item_counts(train)
        ctx.log(f"split {seed}: {train.nnz:,} train / {test.nnz:,} test ratings")
        for name, cls in refs.items():
            ref_rows[name]["rmse"].append(cls().fit(train).score(test))
            ref_rows[name]["seeds"].append(seed)
        for name in names:
            method = methods[name]
            track = method.kind == "cfn" and (ctx.track_all_epochs or seed == ctx.seeds[0])
            res = _run(ctx, f"{name} split {seed}", method, params[name], train, test, seed, track=track)
            if res is None:
                continue
            row = rows[name]
            row["rmse"].append(res["rmse"])
            row["seconds"].append(res["seconds"])
            row["seeds"].append(seed)
            if "curve" in res:
                if ctx.track_all_epochs:
                    row["best_epoch_rmse"].append(res["best_epoch_rmse"])
                if seed == ctx.seeds[0]:
                    curves[name] = res["curve"]
            if name in buckets:
                buckets[name].append(rmse_by_popularity(res["predicted"], test.rating, test.item, counts))
            ctx.log(f"  {name:<12} RMSE {res['rmse']:.4f}  ({res['seconds']:.0f}s)")
        ctx.on_progress()
    for name, row in rows.items():
        row.update(summarise(row["rmse"]))
        row["best_epoch"] = summarise(row["best_epoch_rmse"]) if row["best_epoch_rmse"] else None
        row["mean_seconds"] = float(np.mean(row["seconds"])) if row["seconds"] else None
    for row in ref_rows.values():
        row.update(summarise(row["rmse"]))
    return {"rows": rows, "reference_rows": ref_rows, "table2_90_10": _bucket_table(buckets), "curves": curves,
            "seeds": list(ctx.seeds)}


def _bucket_table(buckets: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, per_seed in buckets.items():
        if not per_seed:
            continue
        out[name] = {key: summarise([b[key] for b in per_seed]) for key in per_seed[0]}
    return out


def table2_half(ctx: Context, ratings: RatingSet, methods: dict[str, Method],
                params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Table 2 on 50/50 splits: I-CFN vs I-CFN++ by item-popularity bucket."""
    buckets: dict[str, list[dict[str, float]]] = {"I-CFN": [], "I-CFN++": []}
    for seed in ctx.extra_seeds:
        train, test = train_test_split(ratings, 0.5, seed=seed)
        counts = _train_item_counts(train)
        for name, bucket in buckets.items():
            res = _run(ctx, f"Table 2 50/50 {name} split {seed}", methods[name], params[name], train, test, seed)
            if res is not None:
                bucket.append(rmse_by_popularity(res["predicted"], test.rating, test.item, counts))
                ctx.log(f"  50/50 split {seed} {name:<8} RMSE {res['rmse']:.4f} ({res['seconds']:.0f}s)")
        ctx.on_progress()
    return {"table": _bucket_table(buckets), "seeds": list(ctx.extra_seeds)}


# ----------------------------------------------------------------------------- Figures 3 and 4
def figure3(ctx: Context, ratings: RatingSet, method: Method, params: dict[str, Any]) -> dict[str, Any]:
    """I-CFN test RMSE over a grid of β × masking ratio with α = 1 (split ``seeds[0]``)."""
    seed = ctx.seeds[0]
    train, test = train_test_split(ratings, 0.1, seed=seed)
    grid: dict[str, dict[str, float | None]] = {}
    for beta in ctx.preset.fig3_betas:
        grid[str(beta)] = {}
        for mask in ctx.preset.fig3_masks:
            if beta == 0 and mask == 0:
                grid[str(beta)][str(mask)] = None     # no known entry carries any loss: nothing to learn
                continue
            p = {**params, "alpha": 1.0, "beta": float(beta), "mask_ratio": float(mask)}
            res = _run(ctx, f"Figure 3 beta={beta} mask={mask}", method, p, train, test, seed)
            grid[str(beta)][str(mask)] = None if res is None else res["rmse"]
            if res is not None:
                ctx.log(f"  fig3 beta={beta} mask={mask}: RMSE {res['rmse']:.4f} ({res['seconds']:.0f}s)")
        ctx.on_progress()
    return {"method": method.name, "alpha": 1.0, "betas": list(ctx.preset.fig3_betas),
            "masks": list(ctx.preset.fig3_masks), "rmse": grid, "seed": seed}


def figure4(ctx: Context, ratings: RatingSet, methods: dict[str, Method], params: dict[str, dict[str, Any]],
            names: tuple[str, ...]) -> dict[str, Any]:
    """Test RMSE against the training ratio, hyper-parameters held constant (as in the paper)."""
    seed = ctx.seeds[0]
    curves: dict[str, dict[str, float | None]] = {n: {} for n in names}
    for ratio in ctx.preset.fig4_ratios:
        train, test = train_test_split(ratings, round(1.0 - ratio, 6), seed=seed)
        for name in names:
            res = _run(ctx, f"Figure 4 {name} ratio {ratio}", methods[name], params[name], train, test, seed)
            curves[name][str(ratio)] = None if res is None else res["rmse"]
            if res is not None:
                ctx.log(f"  fig4 ratio {ratio} {name:<10} RMSE {res['rmse']:.4f} ({res['seconds']:.0f}s)")
        ctx.on_progress()
    return {"ratios": list(ctx.preset.fig4_ratios), "rmse": curves, "seed": seed}


# ----------------------------------------------------------------------------- non-linearity
def linear_ablation(ctx: Context, ratings: RatingSet, method: Method, params: dict[str, Any],
                    icfn: Method | None = None, icfn_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Linear I-CFN on the 90/10 splits ``extra_seeds`` (final-epoch test RMSE), and I-CFN on the same splits."""
    values, seconds, paired = [], [], []
    for seed in ctx.extra_seeds:
        train, test = train_test_split(ratings, 0.1, seed=seed)
        res = _run(ctx, f"Linear I-CFN split {seed}", method, params, train, test, seed)
        if res is not None:
            values.append(res["rmse"])
            seconds.append(res["seconds"])
            ctx.log(f"  Linear I-CFN split {seed}: RMSE {res['rmse']:.4f} ({res['seconds']:.0f}s)")
        if icfn is not None and icfn_params is not None:
            ref = _run(ctx, f"I-CFN split {seed} (beside Linear I-CFN)", icfn, icfn_params, train, test, seed)
            if ref is not None:
                paired.append(ref["rmse"])
        ctx.on_progress()
    return {"rmse": values, **summarise(values), "seeds": list(ctx.extra_seeds), "seconds": seconds,
            "settings": method.settings(params), "icfn_rmse": paired, "icfn": summarise(paired)}
