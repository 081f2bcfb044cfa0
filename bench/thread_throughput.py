"""Do the CPU kernels release the GIL?  Throughput of one vs several Python threads predicting large
batches on one shared fitted model, with the engine held to one OpenMP thread.

Each call is ``model.predict_indices(users, items)`` on ``--batch`` random (user, item) pairs of an
I-CFN on MovieLens-1M (``/work/shared/data/ml-1m``, read in place) or, when that is absent or with
``--synthetic``, a synthetic set of the same shape.  The network is the default 600-unit I-CFN at
its initialisation (``epochs=0``): the cost of a prediction does not depend on the trained values,
and training it first would only make the benchmark slower.

With the engine held to one thread (``CpuEngine.threads = 1``; BLAS held to one thread by
threadpoolctl), one Python thread can use one core.  If the kernels release the GIL, ``--threads``
Python threads use ``--threads`` cores and the throughput scales with them; if they did not, it would
stay at one core's.  Target on the 2-core CI machine: two threads >= 1.5x one thread.

    python bench/thread_throughput.py                  # ML-1M, 2 threads, 3 repeats
    python bench/thread_throughput.py --synthetic --batch 50000 --calls 4
    python bench/thread_throughput.py --json

The figures are wall-clock on a machine that may be shared: every run is printed (with its process CPU
seconds), then the best run of each kind and the median of the paired speedups.  The speedup needs
idle cores.  The GIL probe does not: it runs one predict call while a pure-Python thread ticks and
reports how much CPU that thread got meanwhile, against a control call that holds the GIL.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfn_fast import CFN, RatingSet, synthetic_ratings  # noqa: E402

DATA = Path("/work/shared/data/ml-1m")
if not DATA.is_dir():
    DATA = ROOT.parent / "shared" / "data" / "ml-1m"


def load(synthetic: bool) -> tuple[RatingSet, str]:
    if not synthetic and (DATA / "ratings.npz").is_file():
        d = np.load(DATA / "ratings.npz", allow_pickle=False)
        return RatingSet.from_arrays(d["user"], d["item"], d["rating"], scale=(1, 5)), "ml-1m"
    return synthetic_ratings(6040, 3706, 1_000_209, side_info=False, seed=0), "synthetic 6040x3706, 1.0M ratings"


def run(model: CFN, batches: list[tuple[np.ndarray, np.ndarray]], threads: int) -> tuple[float, float]:
    """Wall and process CPU seconds for ``threads`` Python threads to predict every batch (each thread
    takes its share).  CPU seconds above the wall seconds prove that threads ran at the same time."""
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for users, items in batches[k::threads]:
            model.predict_indices(users, items)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for t in pool:
        t.join()
    return time.perf_counter() - start, time.process_time() - cpu


def gil_probe(call) -> dict[str, float]:
    """Run ``call()`` while a pure-Python thread ticks; how much did that thread get done meanwhile?

    ``stall_s``: its longest stall during the call; ``cpu_share``: the CPU seconds it used during the
    call over the CPU seconds the calling thread used.  A call that held the GIL throughout would stall
    the ticker for the whole call and leave it ~0 CPU; a released GIL lets both run whenever the OS
    gives them a core, so ``cpu_share`` nears 1 on idle cores and stays well above 0 on a loaded
    machine, where the wall-clock throughput cannot show it.  Control: ``sum(range(n))``, one C call
    that holds the GIL throughout."""
    done, started = threading.Event(), threading.Event()
    ticks: list[float] = []
    cpu: dict[str, float] = {}

    def ticker() -> None:
        cpu["ticker0"] = time.thread_time()
        started.set()
        while not done.is_set():
            ticks.append(time.perf_counter())
        cpu["ticker"] = time.thread_time() - cpu["ticker0"]

    thread = threading.Thread(target=ticker)
    thread.start()
    started.wait()
    start, own = time.perf_counter(), time.thread_time()
    call()
    seconds, own = time.perf_counter() - start, time.thread_time() - own
    done.set()
    thread.join()
    during = np.array([t for t in ticks if start <= t <= start + seconds])
    edges = np.concatenate([[start], during, [start + seconds]])
    return {"call_s": seconds, "stall_s": float(np.diff(edges).max()), "cpu_share": cpu["ticker"] / max(own, 1e-9)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="Python threads of the parallel run (default 2)")
    ap.add_argument("--batch", type=int, default=200_000, help="pairs per predict call (default 200000)")
    ap.add_argument("--calls", type=int, default=6, help="predict calls per run, shared by the threads (default 6)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=600)
    ap.add_argument("--synthetic", action="store_true", help="synthetic data even when ML-1M is present")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.calls % args.threads:
        ap.error("--calls must be a multiple of --threads (every thread gets the same share)")

    from threadpoolctl import threadpool_limits

    train, data_name = load(args.synthetic)
    model = CFN("item", (args.hidden,), 0, backend="cpu", use_side_info=False).fit(train)
    model.engine_.threads = 1                        # one OpenMP thread per call: threads scale only via the GIL
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, train.n_users, args.batch), rng.integers(0, train.n_items, args.batch))
               for _ in range(args.calls)]
    report = {"data": data_name, "batch": args.batch, "calls": args.calls, "threads": args.threads,
              "hidden": args.hidden, "engine_threads": model.engine_.threads, "single": [], "parallel": [],
              "single_cpu": [], "parallel_cpu": []}
    with threadpool_limits(1):
        model.predict_indices(*batches[0])         # warm up (first-touch, caches)
        for _ in range(args.repeats):
            for name, threads in (("single", 1), ("parallel", args.threads)):
                wall, cpu = run(model, batches, threads)
                report[name].append(wall)
                report[f"{name}_cpu"].append(cpu)
        report["gil_probe_predict"] = gil_probe(lambda: model.predict_indices(*batches[0]))
        report["gil_probe_control"] = gil_probe(lambda: sum(range(20_000_000)))
    pairs = args.batch * args.calls
    best_single, best_parallel = min(report["single"]), min(report["parallel"])
    report["pairs_per_s_single"] = pairs / best_single
    report["pairs_per_s_parallel"] = pairs / best_parallel
    report["speedup"] = best_single / best_parallel
    report["speedup_per_repeat"] = [s / p for s, p in zip(report["single"], report["parallel"])]
    # paired: robust to load drifts
    report["speedup_median_of_repeats"] = float(np.median(report["speedup_per_repeat"]))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"data {data_name}; I-CFN hidden {args.hidden}; engine threads {report['engine_threads']}; "
              f"{args.calls} calls x {args.batch:,} pairs per run")
        for k, (s, p) in enumerate(zip(report["single"], report["parallel"])):
            print(f"  repeat {k}: 1 thread {s:.2f} s wall ({report['single_cpu'][k]:.2f} s CPU), "
                  f"{args.threads} threads {p:.2f} s wall ({report['parallel_cpu'][k]:.2f} s CPU), "
                  f"speedup {s / p:.2f}x")
        for name, probe in (("predict call", report["gil_probe_predict"]),
                            ("control (GIL held)", report["gil_probe_control"])):
            print(f"GIL probe, {name}: {probe['call_s'] * 1e3:.0f} ms; a pure-Python thread meanwhile stalled at "
                  f"most {probe['stall_s'] * 1e3:.0f} ms and got {probe['cpu_share']:.2f}x the caller's CPU time")
        print(f"best: 1 thread {report['pairs_per_s_single']:,.0f} pairs/s, {args.threads} threads "
              f"{report['pairs_per_s_parallel']:,.0f} pairs/s, speedup {report['speedup']:.2f}x "
              f"(target >= 1.5x with 2 threads on 2 cores); median of the paired repeats "
              f"{report['speedup_median_of_repeats']:.2f}x")
    return report


if __name__ == "__main__":
    main()
