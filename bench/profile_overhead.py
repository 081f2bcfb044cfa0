"""What profiling costs, and how much of the epoch its phases account for, in one run.

    python bench/profile_overhead.py                       # ML-1M I-CFN on cpu, 8 epochs per mode
    python bench/profile_overhead.py --data synthetic --epochs 4

Three engines start from the same parameters and train the same epochs, interleaved epoch by
epoch (so a change of machine load hits every mode alike):

* ``off``        profiling off (the default path: one branch per phase boundary);
* ``timers``     phase timers on, no NVTX;
* ``timers+nvtx`` phase timers and NVTX ranges (the ``nvtx`` package; a no-op without a tool attached).

Reported: the median and minimum epoch wall time of each mode and the median process CPU time
(user + system, all threads: on a loaded shared machine the wall time mostly measures the
scheduler, the CPU time the work done), the overhead of each against ``off``, and the phase
coverage: the sum of the timed phases over the epoch wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cfn_fast import CFN  # noqa: E402
from cfn_fast.data import load_movielens, synthetic_ratings  # noqa: E402
from cfn_fast.profiling import Nvtx, Profile, ProfiledEngine  # noqa: E402
from cfn_fast.training.trainer import learning_rate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/work/shared/data/ml-1m", help="MovieLens folder or 'synthetic'")
    ap.add_argument("--kind", default="item", choices=("item", "user"))
    ap.add_argument("--epochs", type=int, default=8, help="epochs per mode")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    ratings = synthetic_ratings(seed=0) if args.data == "synthetic" else load_movielens(args.data)
    models = {mode: CFN(args.kind, epochs=0, backend="cpu", seed=0).fit(ratings)
              for mode in ("off", "timers", "timers+nvtx")}
    nvtx = Nvtx()
    engines = {"off": models["off"].engine_,
               "timers": ProfiledEngine(models["timers"].engine_, Profile("cpu"), Nvtx.off()),
               "timers+nvtx": ProfiledEngine(models["timers+nvtx"].engine_, Profile("cpu"), nvtx)}
    p = models["off"].resolved_params()
    seconds: dict[str, list[float]] = {mode: [] for mode in engines}
    cpu: dict[str, list[float]] = {mode: [] for mode in engines}
    for epoch in range(1, args.epochs + 1):
        lr = learning_rate(p["lr"], p["lr_decay"], epoch)
        order = list(engines) if epoch % 2 else list(engines)[::-1]
        for mode in order:
            start, start_cpu = time.monotonic(), time.process_time()
            engines[mode].train_epoch(epoch, lr)
            seconds[mode].append(time.monotonic() - start)
            cpu[mode].append(time.process_time() - start_cpu)
    same = all(np.array_equal(a.weight, b.weight) for a, b in
               zip(engines["off"].get_layers(), engines["timers+nvtx"].get_layers()))
    off = statistics.median(seconds["off"])
    result = {"data": args.data, "kind": args.kind, "epochs_per_mode": args.epochs, "nvtx_package": nvtx.enabled,
              "load_average": os.getloadavg(), "identical_weights": same, "modes": {}}
    for mode, times in seconds.items():
        entry = {"median_s": statistics.median(times), "min_s": min(times),
                 "overhead_vs_off": statistics.median(times) / off - 1,
                 "overhead_min_vs_off": min(times) / min(seconds["off"]) - 1,
                 "cpu_median_s": statistics.median(cpu[mode]),
                 "cpu_overhead_vs_off": statistics.median(cpu[mode]) / statistics.median(cpu["off"]) - 1}
        if mode != "off":
            summary = engines[mode].profile.as_dict()
            entry["phase_coverage"] = summary["phase_coverage"]
        result["modes"][mode] = entry
    print(f"{args.kind}-CFN on {args.data}, cpu, {args.epochs} epochs per mode, interleaved; "
          f"load average {result['load_average'][0]:.1f}; nvtx package: {nvtx.enabled}; "
          f"weights identical: {same}")
    print(f"{'mode':<14}{'median s':>10}{'min s':>10}{'overhead (median)':>19}{'(min)':>8}{'CPU s':>8}"
          f"{'CPU overhead':>14}{'phases/epoch':>14}")
    for mode, e in result["modes"].items():
        cov = f"{100 * e['phase_coverage']:.1f}%" if "phase_coverage" in e else ""
        print(f"{mode:<14}{e['median_s']:>10.4f}{e['min_s']:>10.4f}{100 * e['overhead_vs_off']:>+18.1f}%"
              f"{100 * e['overhead_min_vs_off']:>+7.1f}%{e['cpu_median_s']:>8.3f}"
              f"{100 * e['cpu_overhead_vs_off']:>+13.1f}%"
              f"{cov:>14}")
    print(engines["timers"].profile.format_table())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
