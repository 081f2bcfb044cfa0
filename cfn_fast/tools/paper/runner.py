"""``run_paper``: everything the available data allows, into one folder (report.md, figures, results.json)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cfn_fast.data.ratings import RatingSet

from . import datasets as dsets
from . import figures, published
from .experiments import Context, figure3, figure4, linear_ablation, table1, table2_half
from .methods import PRESETS, TABLE1_METHODS, Method, linear_method, method_table
from .options import PARTS, PaperOptions
from .preflight import check_options
from .report import write_report
from .search import FORMAT, load_store, save_store, search_method, search_split, store_path

__all__ = ["PARTS", "PaperOptions", "run_paper"]


def default_hyperparams_dir() -> Path:
    """``bench/paper`` of the source checkout this package runs from, else ``./bench/paper``."""
    repo = Path(__file__).resolve().parents[3] / "bench" / "paper"
    return repo if repo.is_dir() else Path("bench/paper")


def _machine() -> str:
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"


def run_paper(opts: PaperOptions) -> dict[str, Any]:
    """Run the selected parts on every data set found; write the report as it goes; return a summary."""
    from cfn_fast.backends import available_backends, resolve_backend
    started = time.perf_counter()
    unknown = [p for p in opts.parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose among {', '.join(PARTS)}")
    if opts.search_only and opts.from_json:
        raise ValueError("--search-only and --from-json exclude each other")
    if opts.n_seeds < 1 or opts.extra_seeds < 1:
        raise ValueError("--seeds and --extra-seeds must be at least 1")
    check_options(opts)  # named folders exist, no input overwritten, optional packages present
    preset = PRESETS["quick" if opts.quick else "full"]
    backend = resolve_backend(opts.backend)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    hp_dir = Path(opts.hyperparams_dir) if opts.hyperparams_dir else (out if opts.quick else default_hyperparams_dir())
    seeds = tuple(range(1, 1 + (1 if opts.quick else opts.n_seeds)))
    extra = seeds[:min(len(seeds), 1 if opts.quick else opts.extra_seeds)]
    results: dict[str, Any] = {
        "meta": {"quick": opts.quick, "command": opts.command, "backend": backend, "preset": preset.name,
                 "started": _dt.datetime.now().isoformat(timespec="seconds"), "machine": _machine(),
                 "seeds": list(seeds), "extra_seeds": list(extra), "parts": list(opts.parts),
                 "hyperparams": f"{'read from' if opts.from_json else 'searched, written to'} {hp_dir}"},
        "datasets": {}, "notes": [], "failures": []}
    ctx = Context(preset, backend, seeds, extra, log=opts.log, track_all_epochs=opts.track_epochs)
    ctx.failures = results["failures"]

    def checkpoint() -> None:
        results["meta"]["seconds"] = time.perf_counter() - started
        write_report(out, results)
    ctx.on_progress = checkpoint

    for key, ratings, source in _datasets(opts, results["notes"]):
        opts.log(f"== {dsets.label(key)}: {ratings}")
        ds: dict[str, Any] = {"info": {"n_ratings": ratings.nnz, "n_users": ratings.n_users,
                                       "n_items": ratings.n_items, "source": source,
                                       "user_features": None if ratings.user_features is None
                                       else ratings.user_features.shape[1],
                                       "item_features": None if ratings.item_features is None
                                       else ratings.item_features.shape[1]},
                              "figures": {}}
        results["datasets"][key] = ds
        if opts.search_only:
            ds["hyperparams"] = _hyperparameters(opts, ctx, key, ratings, method_table(preset, backend), hp_dir,
                                                 "linear" in opts.parts, results["notes"])[1]
        else:
            _one_dataset(opts, ctx, key, ratings, ds, hp_dir, out, results["notes"])
        checkpoint()

    if "table3" in opts.parts and not opts.search_only:
        results["table3"] = _table3(opts, preset, backend, available_backends(), out, results["notes"])
    if "linear" not in opts.parts:
        results["notes"].append("Non-linearity ablation not selected (`--parts linear`).")
    results["meta"]["seconds"] = time.perf_counter() - started
    report = write_report(out, results)
    return {"command": "bench paper", "report": str(report), "out": str(out),
            "figures": sorted(str(p) for p in out.glob("*.png")),
            "seconds": round(results["meta"]["seconds"], 1), "backend": backend, "quick": opts.quick,
            "datasets": list(results["datasets"]),
            "table1": {k: {m: {"mean": r.get("mean"), "ci": r.get("ci"), "n": r.get("n")}
                           for m, r in ds.get("table1", {}).get("rows", {}).items()}
                       for k, ds in results["datasets"].items()},
            "failures": results["failures"]}


# ----------------------------------------------------------------------------- data sets
def _datasets(opts: PaperOptions, notes: list[str]):
    found = dsets.discover(opts.data_dir)
    wanted = opts.datasets
    if wanted:
        bad = [w for w in wanted if w not in {s.key for s in dsets.KNOWN} and w != "synthetic"]
        if bad:
            raise ValueError(f"unknown data set(s) {bad}; known: {[s.key for s in dsets.KNOWN]} and 'synthetic'")
    elif opts.quick:
        wanted = ("ml-100k",) if "ml-100k" in found else ("synthetic",)
    else:
        wanted = tuple(found) or ("synthetic",)
    for spec in dsets.KNOWN:
        if spec.key not in found:
            notes.append(f"{spec.label}: not found under {opts.data_dir} (looked for {', '.join(spec.folders)} "
                         f"with {' or '.join(spec.files)}): its Table 1 column is not run.")
    for key in wanted:
        if key == "synthetic":
            name, ratings = dsets.synthetic(tuple(opts.synthetic_shape))
            notes.append(f"{name}: synthetic MovieLens-like data (`synthetic_ratings`), not a paper data set.")
            yield name, ratings, "synthetic_ratings(seed=0)"
            continue
        if key not in found:
            notes.append(f"{key} was requested but is not present under {opts.data_dir}.")
            continue
        yield key, dsets.load(key, found[key]), str(found[key])


# ----------------------------------------------------------------------------- per data set
def _one_dataset(opts: PaperOptions, ctx: Context, key: str, ratings: RatingSet, ds: dict[str, Any],
                 hp_dir: Path, out: Path, notes: list[str]) -> None:
    preset, parts = ctx.preset, opts.parts
    methods = method_table(preset, ctx.backend)
    need_linear = "linear" in parts
    params, hp = _hyperparameters(opts, ctx, key, ratings, methods, hp_dir, need_linear, notes)
    ds["hyperparams"] = hp
    ds["methods"] = {name: {"source": m.source, "settings": m.settings(params[name]),
                            "differences": m.differences} for name, m in methods.items()}
    paper = {m: published.TABLE1.get(m, {}).get(key) for m in TABLE1_METHODS}
    if "table1" in parts or "table2" in parts or "fig5" in parts:
        names = TABLE1_METHODS if "table1" in parts else \
            tuple(n for n in ("U-CFN", "I-CFN", "I-CFN++") if "fig5" in parts or n.startswith("I-"))
        opts.log(f"-- Table 1 ({dsets.label(key)}): {', '.join(names)} on splits {list(ctx.seeds)}")
        t1 = table1(ctx, ratings, methods, params, names)
        if "table1" in parts:
            ds["table1"] = t1
            ds["figures"]["table1_plot"] = figures.table1_plot(
                t1["rows"], dsets.label(key), paper, out / f"table1_{key}.png").name
        else:
            ds["table1"] = {"rows": {}, "reference_rows": {}, "table2_90_10": t1["table2_90_10"],
                            "curves": t1["curves"], "seeds": t1["seeds"]}
        if "fig5" in parts:
            curves = {n: c for n, c in t1["curves"].items() if n in ("U-CFN", "I-CFN", "U-CFN++", "I-CFN++")}
            if curves:
                ds["figures"]["figure5"] = figures.figure5(curves, dsets.label(key), paper,
                                                           out / f"figure5_{key}.png").name
    if "table2" in parts:
        opts.log(f"-- Table 2 50/50 ({dsets.label(key)}) on splits {list(ctx.extra_seeds)}")
        ds["table2_50_50"] = table2_half(ctx, ratings, methods, params)
    if "fig3" in parts:
        opts.log(f"-- Figure 3 ({dsets.label(key)})")
        ds["figure3"] = figure3(ctx, ratings, methods["I-CFN"], params["I-CFN"])
        ds["figures"]["figure3"] = figures.figure3(ds["figure3"], dsets.label(key), out / f"figure3_{key}.png").name
    if "fig4" in parts:
        names = tuple(n for n in opts.fig4_methods if n in methods)
        opts.log(f"-- Figure 4 ({dsets.label(key)}): {', '.join(names)}")
        ds["figure4"] = figure4(ctx, ratings, methods, params, names)
        ds["figures"]["figure4"] = figures.figure4(ds["figure4"], dsets.label(key), paper,
                                                   out / f"figure4_{key}.png").name
    if need_linear:
        opts.log(f"-- Linear I-CFN ({dsets.label(key)})")
        lin = linear_method(preset, params["I-CFN"])
        ds["linear"] = linear_ablation(ctx, ratings, lin, params["Linear I-CFN"], methods["I-CFN"], params["I-CFN"])


def _hyperparameters(opts: PaperOptions, ctx: Context, key: str, ratings: RatingSet, methods: dict[str, Method],
                     hp_dir: Path, need_linear: bool, notes: list[str]
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Stored (``--from-json``) or freshly searched parameters of every method; ``++`` rows reuse theirs."""
    path = store_path(hp_dir, key)
    searched = [n for n, m in methods.items() if m.tuned_as is None]
    store = load_store(path) if opts.from_json or opts.search_methods else None
    if opts.search_methods:
        unknown = [n for n in opts.search_methods if n not in searched + ["Linear I-CFN"]]
        if unknown:
            raise ValueError(f"--search-methods: cannot search {unknown}; searchable: {searched + ['Linear I-CFN']}")
        if store is None:
            raise ValueError(f"--search-methods needs an existing {path} to update")
        searched = [n for n in searched if n in opts.search_methods]
    search_linear = need_linear and (not opts.search_methods or "Linear I-CFN" in opts.search_methods)
    if opts.from_json and store is None:
        notes.append(f"{path} does not exist: {key} uses each method's default settings (not searched).")
    if store is not None and store.get("preset") not in (None, ctx.preset.name):
        notes.append(f"{path} was searched with preset '{store.get('preset')}', this run uses "
                     f"'{ctx.preset.name}': the stored values are used as they are.")
    entries: dict[str, Any] = dict(store["methods"]) if store else {}
    if not opts.from_json:
        trials = opts.search_trials or ctx.preset.search_trials
        train, validation = search_split(ratings, ctx.seeds[0])
        opts.log(f"-- search ({dsets.label(key)}): {trials} trial(s) per method on {train.nnz:,} training / "
                 f"{validation.nnz:,} validation ratings of split {ctx.seeds[0]}")
        for name in sorted(searched, key=lambda n: methods[n].cost):
            entries[name] = search_method(methods[name], train, validation, trials=trials,
                                          search_seed=opts.search_seed, log=opts.log)
        if search_linear:
            lin = linear_method(ctx.preset, entries["I-CFN"]["params"])
            entries[lin.name] = search_method(lin, train, validation, trials=trials, search_seed=opts.search_seed,
                                              log=opts.log)
        store = {"dataset": key, "format": FORMAT, "preset": ctx.preset.name,
                 "created": _dt.datetime.now().isoformat(timespec="seconds"),
                 "protocol": {"split_seed": ctx.seeds[0], "test_ratio": 0.1, "validation_ratio": 0.1,
                              "score": "validation RMSE after the last epoch / iteration",
                              "note": "validation carved from the training part of the split; test never read"},
                 "n_ratings": ratings.nnz, "methods": entries}
        save_store(path, store)
        opts.log(f"   stored {path}")
    params: dict[str, dict[str, Any]] = {}
    for name, m in methods.items():
        source = m.tuned_as or name
        if source in entries:
            params[name] = dict(entries[source]["params"])
            stored_fixed = entries[source].get("fixed")
            if opts.from_json and name == source and stored_fixed is not None and \
                    json.loads(json.dumps(stored_fixed)) != json.loads(json.dumps(m.fixed)):
                notes.append(f"{key} {name}: searched with fixed settings {stored_fixed}, run with "
                             f"{m.fixed}.")
        else:
            params[name] = dict(methods[source].defaults)
            note = f"{path} has no entry for {source}: defaults used."
            if store is not None and note not in notes:      # a ++ row shares its plain row's entry
                notes.append(note)
    if need_linear:
        if "Linear I-CFN" in entries:
            params["Linear I-CFN"] = dict(entries["Linear I-CFN"]["params"])
        else:
            params["Linear I-CFN"] = dict(linear_method(ctx.preset, params["I-CFN"]).defaults)
            notes.append(f"{key}: no stored search for Linear I-CFN: its default lr/decays are used.")
    return params, entries


# ----------------------------------------------------------------------------- Table 3
def _table3(opts: PaperOptions, preset: Any, backend: str, backends: list[str], out: Path,
            notes: list[str]) -> dict[str, Any]:
    from cfn_fast.data.synthetic import ML10M_SHAPE, ML20M_SHAPE

    from .timing import save_synthetic, time_cell
    found = dsets.discover(opts.data_dir)
    budget = opts.table3_budget or (60.0 if opts.quick else 300.0)
    if opts.quick:
        if "ml-100k" in found:
            targets = [("ml-100k", None, {"source": "folder", "key": "ml-100k", "path": str(found["ml-100k"])},
                        dsets.label("ml-100k"))]
        else:
            targets = [(None, (943, 1682, 100_000), None, "synthetic 943×1682, 100,000 ratings (ML-100K shape)")]
        which = [backend]
    else:
        shapes = {"ml-1m": (6040, 3706, 1_000_209), "ml-10m": ML10M_SHAPE, "ml-20m": ML20M_SHAPE}
        targets = []
        bad = [k for k in opts.table3_datasets if k not in shapes]
        if bad:
            raise ValueError(f"--table3-datasets: unknown {bad}; choose among {list(shapes)}")
        for key in opts.table3_datasets:
            if key in found:
                targets.append((key, None, {"source": "folder", "key": key, "path": str(found[key])},
                                dsets.label(key)))
            else:
                u, i, n = shapes[key]
                targets.append((key, shapes[key], None,
                                f"synthetic {u:,}×{i:,}, {n:,} ratings ({dsets.label(key)} shape)"))
        which = list(backends)
    cache = Path(tempfile.mkdtemp(prefix="cfn_table3_"))
    cells = []
    try:
        for paper_key, shape, spec, data_label in targets:
            if spec is None:
                path = cache / f"synthetic_{shape[0]}x{shape[1]}_{shape[2]}.npz"
                opts.log(f"-- Table 3: generating {data_label}")
                save_synthetic(path, shape)
                spec = {"source": "npz", "path": str(path)}
            for kind in ("user", "item"):
                for b in which:
                    cell_spec = {**spec, "kind": kind, "backend": b, "hidden": preset.table3_hidden,
                                 "epochs": preset.table3_epochs, "budget_s": budget}
                    opts.log(f"-- Table 3: {kind} / {data_label} / {b}")
                    result = time_cell(cell_spec, timeout=budget * 1.5 + 600)
                    opts.log(f"   {result}")
                    cells.append({"kind": kind, "backend": b, "paper_key": paper_key, "data_label": data_label,
                                  "result": result})
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if not opts.quick and "cuda" not in backends:
        notes.append("Table 3: no CUDA backend on this machine (no GPU row); the paper's column is GPU time.")
    return {"cells": cells, "hidden": preset.table3_hidden, "epochs": preset.table3_epochs, "budget_s": budget,
            "machine": _machine()}
