"""Timing of the Cython CPU engine against the NumPy reference and a dense PyTorch peer.

    python bench/bench_cpu.py                       # ML-1M I-CFN + U-CFN, synthetic ML-10M shape
    python bench/bench_cpu.py --configs ml1m-item --ref-epochs 20   # full reference run (RMSE check)
    python bench/bench_cpu.py --scaling             # time/epoch against nnz x hidden

Every (config, backend) runs in its own subprocess, so the peak RSS column is that run's
own maximum resident set (data loading included).  Configs train ``cfn_fast.CFN`` with the
library defaults (600 hidden units, 20 epochs, seed 0) on a 90/10 split (seed 0) and report
the final-epoch test RMSE.  The NumPy reference and the PyTorch peer may run fewer epochs
(``--ref-epochs``, ``--peer-epochs``): their time is then extrapolated to the full count
and labelled, and their RMSE is left out (it belongs to a shorter training).

MovieLens-1M is read from ``--data-dir`` (``ratings.npz`` with int32 ``user``, ``item`` and
float32 ``rating``); it is never copied.  The synthetic ML-10M-shaped set
(``synthetic_ratings(69878, 10677, 10000054, seed=0)``) is generated once and cached under
``--cache-dir`` (synthetic data, not MovieLens); the time it took is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FULL_EPOCHS = 20
HIDDEN = 600

# name -> (data set, kind, model label)
CONFIGS = {
    "ml1m-item": ("ml-1m", "item", "I-CFN"),
    "ml1m-user": ("ml-1m", "user", "U-CFN"),
    "ml10m-item": ("synthetic-ml10m", "item", "I-CFN"),
}


# ============================================================================= worker (one run)
def _load(data: str, args: dict):
    import numpy as np

    from cfn_fast import RatingSet, train_test_split
    if data == "ml-1m":
        path = Path(args["data_dir"]) / "ratings.npz"
        with np.load(path) as f:
            ratings = RatingSet.from_arrays(f["user"], f["item"], f["rating"], scale=(1.0, 5.0))
    else:
        ratings = _synthetic(data, args)
    return train_test_split(ratings, 0.1, seed=0)


def _synthetic_shape(data: str) -> tuple[int, int, int]:
    from cfn_fast.data.synthetic import ML10M_SHAPE
    if data == "synthetic-ml10m":
        return ML10M_SHAPE
    _, users, items, n = data.split("-")          # synthetic-<users>-<items>-<ratings>
    return int(users), int(items), int(n)


def _cache_path(cache_dir, shape: tuple[int, int, int]) -> Path:
    """Cache file of a synthetic set; named after the generator's source, so a new generator regenerates."""
    import hashlib

    from cfn_fast.data import synthetic
    digest = hashlib.sha1(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    return Path(cache_dir) / f"synthetic_{shape[0]}_{shape[1]}_{shape[2]}_seed0_{digest}.npz"


def _synthetic(data: str, args: dict):
    """The synthetic set from the cache (generated there first if needed)."""
    import numpy as np

    from cfn_fast import RatingSet, synthetic_ratings
    shape = _synthetic_shape(data)
    cache = _cache_path(args["cache_dir"], shape)
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        rs = synthetic_ratings(*shape, seed=0)
        seconds = time.perf_counter() - start
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, user=rs.user, item=rs.item, rating=rs.rating, scale=np.array(rs.scale),
                 user_features=rs.user_features, item_features=rs.item_features,
                 generation_seconds=np.array(seconds))
        os.replace(tmp, cache)
    with np.load(cache) as f:
        return RatingSet.from_arrays(f["user"], f["item"], f["rating"], scale=tuple(f["scale"]),
                                     user_ids=np.arange(shape[0]), item_ids=np.arange(shape[1]),
                                     user_features=f["user_features"], item_features=f["item_features"])


def worker(spec: dict) -> dict:
    """Train one (data set, kind, backend) and measure it."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    import numpy as np

    from cfn_fast import CFN
    if spec.get("threads"):
        os.environ["OMP_NUM_THREADS"] = str(spec["threads"])
    load_start = time.perf_counter()
    train, test = _load(spec["data"], spec)
    load_seconds = time.perf_counter() - load_start
    backend, epochs = spec["backend"], spec["epochs"]
    hidden = (spec.get("hidden", HIDDEN),)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    if backend == "torch":
        import torch
        from torch_peer import TorchEngine
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        model = CFN(spec["kind"], hidden, epochs=0, backend="numpy", seed=0).fit(train)
        model.engine_ = TorchEngine(model.engine_.get_layers(), model.engine_.config, model.inputs_, model.side_,
                                    device=spec.get("device", "cpu"))
        model.partial_fit(epochs)
    else:
        if backend == "cpu" and spec.get("threads"):
            from cfn_fast.backends import cpu_backend
            cpu_backend.set_num_threads(spec["threads"])
        model = CFN(spec["kind"], hidden, epochs=epochs, backend=backend, seed=0).fit(train)
    epoch_seconds = [r.seconds for r in model.history_]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_start
    score_start = time.perf_counter()
    test_rmse = model.score(test)
    return {"train_nnz": int(train.nnz), "epoch_seconds": epoch_seconds, "seconds": float(np.sum(epoch_seconds)),
            "cpu_seconds": cpu_seconds,
            "test_rmse": float(test_rmse), "score_seconds": time.perf_counter() - score_start,
            "load_seconds": load_seconds, "side_dim": 0 if model.side_ is None else int(model.side_.shape[1]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_subprocess(spec: dict, timeout: float | None) -> dict:
    env = dict(os.environ)
    # the same OpenMP wait policy for every OpenMP user (cfn_fast's default: spin briefly, then sleep)
    if "OMP_WAIT_POLICY" not in env:
        env.setdefault("GOMP_SPINCOUNT", "1000")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


# ============================================================================= the table
def fmt_row(cells: list[str], widths: list[int]) -> str:
    return " | ".join(c.ljust(w) for c, w in zip(cells, widths))


def print_table(rows: list[list[str]]) -> None:
    head = ["data set", "model", "epochs", "backend", "seconds", "s/epoch", "CPU s/epoch", "ratings·epochs/s",
            "peak RSS", "test RMSE", "note"]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    print(fmt_row(head, widths))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(fmt_row([str(c) for c in r], widths))


def table_row(data: str, model: str, backend: str, full: int, ran: int, res: dict) -> list[str]:
    if "error" in res:
        return [data, model, str(full), backend, "-", "-", "-", "-", "-", "-", "FAILED: " + res["error"][:80]]
    per_epoch = res["seconds"] / max(ran, 1)
    seconds = per_epoch * full
    extrapolated = ran < full
    note = f"{ran} of {full} epochs run, time extrapolated" if extrapolated else ""
    rmse = "-" if extrapolated else f"{res['test_rmse']:.4f}"
    return [data, model, str(full), backend, f"{seconds:.1f}" + ("*" if extrapolated else ""), f"{per_epoch:.3f}",
            f"{res['cpu_seconds'] / max(ran, 1):.3f}", f"{res['train_nnz'] * ran / max(res['seconds'], 1e-9):,.0f}",
            f"{res['peak_rss_mb']:.0f} MB", rmse, note]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main_table(args: argparse.Namespace) -> None:
    base = {"data_dir": str(args.data_dir), "cache_dir": str(args.cache_dir), "threads": args.threads}
    peers = ["cpu"] + ([] if args.no_ref else ["numpy"]) + ([] if args.no_peer or not torch_available() else ["torch"])
    if not args.no_peer and not torch_available():
        print("PyTorch is not importable: the dense PyTorch peer is skipped (pip install torch)")
    rows, results = [], {}
    for name in args.configs:
        data, kind, label = CONFIGS[name]
        if data == "ml-1m" and not (Path(args.data_dir) / "ratings.npz").exists():
            print(f"{name}: {Path(args.data_dir) / 'ratings.npz'} not found, skipped")
            continue
        for backend in peers:
            ran = {"cpu": args.epochs, "numpy": args.ref_epochs, "torch": args.peer_epochs}[backend]
            if data != "ml-1m" and backend != "cpu":
                ran = min(ran, args.big_peer_epochs)
                if ran == 0:
                    continue
            spec = dict(base, data=data, kind=kind, backend=backend, epochs=ran)
            print(f"running {name} {backend} ({ran} epochs) ...", flush=True)
            res = run_subprocess(spec, args.timeout)
            results[f"{name}/{backend}"] = dict(res, epochs=ran)
            side = res.get("side_dim", 0)
            model = f"{label} {HIDDEN}" + (f" +{side} side" if side else "")
            rows.append(table_row(data, model, "torch (dense)" if backend == "torch" else backend,
                                  args.epochs, ran, res))
    print()
    print(f"# CPU: {os.cpu_count()} cores; threads={args.threads or 'default'}; load average at end "
          f"{os.getloadavg()[0]:.1f}")
    print_table(rows)
    print("(* time extrapolated from the epochs run; seconds = wall-clock training time, epochs only; "
          "CPU s/epoch = process CPU time of fit / epochs, all threads)")
    for name in args.configs:
        cpu, ref, peer = (results.get(f"{name}/{b}") for b in ("cpu", "numpy", "torch"))
        if cpu and "error" not in cpu:
            per = cpu["seconds"] / cpu["epochs"]
            for other, label in ((ref, "NumPy reference"), (peer, "PyTorch dense peer")):
                if other and "error" not in other:
                    print(f"{name}: cpu is {other['seconds'] / other['epochs'] / per:.1f}x faster per epoch "
                          f"than the {label}")
            if ref and "error" not in ref and ref["epochs"] == cpu["epochs"]:
                print(f"{name}: test RMSE cpu {cpu['test_rmse']:.4f} vs reference {ref['test_rmse']:.4f} "
                      f"(difference {abs(cpu['test_rmse'] - ref['test_rmse']):.4f})")
    if "ml10m-item" in args.configs:
        sys.path[:0] = [str(ROOT)]
        cache = _cache_path(args.cache_dir, _synthetic_shape("synthetic-ml10m"))
        if cache.exists():
            import numpy as np
            with np.load(cache) as f:
                print(f"synthetic ML-10M shape: generation took {float(f['generation_seconds']):.1f} s "
                      f"(cached in {cache})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def main_scaling(args: argparse.Namespace) -> None:
    """Time per epoch over nnz x hidden on synthetic sets (I-CFN, cpu backend)."""
    base = {"data_dir": str(args.data_dir), "cache_dir": str(args.cache_dir), "threads": args.threads}
    sizes = [(250_000, 600), (500_000, 600), (1_000_000, 600), (500_000, 300), (500_000, 1200)]
    rows = []
    for nnz, hidden in sizes:
        data = f"synthetic-6040-3706-{nnz}"
        spec = dict(base, data=data, kind="item", backend="cpu", epochs=args.scaling_epochs, hidden=hidden)
        print(f"running {data} hidden {hidden} ...", flush=True)
        res = run_subprocess(spec, args.timeout)
        if "error" in res:
            rows.append([data, str(hidden), "-", "-", "-", "FAILED: " + res["error"][:80]])
            continue
        per_epoch = res["seconds"] / args.scaling_epochs
        work = res["train_nnz"] * hidden
        rows.append([f"{res['train_nnz']:,}", str(hidden), f"{work / 1e6:,.0f}", f"{per_epoch:.3f}",
                     f"{per_epoch / work * 1e9:.2f}", f"{res['peak_rss_mb']:.0f} MB"])
    head = ["train nnz", "hidden", "nnz x hidden (M)", "s/epoch", "ns per rating x unit", "peak RSS"]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    print(f"\n# I-CFN, cpu backend, synthetic 6040 x 3706, {args.scaling_epochs} epochs each; "
          f"threads={args.threads or 'default'}; load average {os.getloadavg()[0]:.1f}")
    print(fmt_row(head, widths))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(fmt_row(r, widths))
    print("(constant ns per rating x unit = time per epoch proportional to nnz x hidden)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench_out" / "cache")
    parser.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS),
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS)
    parser.add_argument("--ref-epochs", type=int, default=2, help="epochs of the NumPy reference (extrapolated)")
    parser.add_argument("--peer-epochs", type=int, default=2, help="epochs of the PyTorch peer (extrapolated)")
    parser.add_argument("--big-peer-epochs", type=int, default=1,
                        help="at most this many reference / peer epochs on the ML-10M shape (0: skip them)")
    parser.add_argument("--no-ref", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--threads", type=int, default=None, help="threads for cpu and torch (default: all)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    parser.add_argument("--scaling", action="store_true", help="time/epoch against nnz x hidden instead")
    parser.add_argument("--scaling-epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    (main_scaling if args.scaling else main_table)(args)


if __name__ == "__main__":
    main()
