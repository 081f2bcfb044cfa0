"""Projected time per epoch of sharded I-CFN training on 8 GPUs (a model, not a measurement), and on CPU workers
from the per-shard throughput measured here (bench/shard_bench.json).

    python bench/scale_projection.py            # prints the tables of docs/scale_out.md

The GPU side is a roofline *model*: no GPU figure of the CUDA engine exists yet.  Its assumptions are the
constants below, each with its source; change them and re-run to see what moves.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cfn_fast.backends.shard_base import shard_parameter_bytes  # noqa: E402

HIDDEN, BATCH, GPUS = 600, 35, 8
#: I-CFN: samples are items, inputs are users (the dimension that grows with the user base)
SETS = {
    "ML-20M": {"samples": 26_744, "inputs": 138_493, "ratings": 20_000_263},
    "Netflix": {"samples": 17_770, "inputs": 480_189, "ratings": 100_480_507},
    "synthetic 100M users": {"samples": 1_000_000, "inputs": 100_000_000, "ratings": 5_000_000_000},
}
#: H100 SXM HBM3 peak (NVIDIA H100 datasheet: 3.35 TB/s), and the share a gather of 2.4 KB weight rows reaches:
#: an assumption (STREAM-like kernels reach ~90 %, scattered row gathers less)
HBM_BYTES_PER_S, HBM_SHARE = 3.35e12, 0.6
#: fixed cost of one step on the device: ~10 kernel launches of the CUDA engine at ~4 us each (no CUDA graph)
STEP_OVERHEAD_S = 40e-6
#: NCCL all-reduce on 8 GPUs over NVLink 4 / NVSwitch (DGX H100): bus bandwidth for large messages ~450 GB/s
#: (nccl-tests on DGX H100 report 450-480 GB/s), latency of a small all-reduce ~20 us (ring/tree, 8 ranks)
NCCL_BUS_BYTES_PER_S, NCCL_LATENCY_S = 450e9, 20e-6
GPU_MEMORY = 80e9


def step_bytes(entries: float, hidden: int = HIDDEN) -> float:
    """The suite's bytes model (cfn_fast.tools.benchsuite.workloads.epoch_bytes) for a batch whose entries are all in
    distinct inputs (true when inputs far outnumber a batch's entries): per entry, the input-weight row, the
    output-weight row and the output bias read and written once (float32), and the CSR entry read once."""
    return entries * (2 * 4 * (2 * hidden + 1) + 8)


def allreduce_seconds(nbytes: float, ranks: int) -> float:
    """Ring all-reduce: latency plus 2 (n − 1) / n of the message over the bus bandwidth."""
    return NCCL_LATENCY_S + 2 * (ranks - 1) / ranks * nbytes / NCCL_BUS_BYTES_PER_S


def gpu_epoch(spec: dict, gpus: int) -> dict:
    steps = math.ceil(spec["samples"] / BATCH)
    entries = spec["ratings"] / steps
    compute = step_bytes(entries) / gpus / (HBM_BYTES_PER_S * HBM_SHARE)
    block = BATCH * HIDDEN * 4
    comm = 2 * allreduce_seconds(block, gpus) if gpus > 1 else 0.0
    per_step = compute + STEP_OVERHEAD_S + comm
    memory = shard_parameter_bytes(spec["inputs"], (HIDDEN,), 0, gpus)
    return {"steps": steps, "compute_us": compute * 1e6, "comm_us": comm * 1e6, "epoch_s": steps * per_step,
            "weights_per_gpu_gb": memory / 1e9, "fits": memory < GPU_MEMORY * 0.9}


def cpu_epoch(spec: dict, workers: int, measured: dict) -> float | None:
    """Epoch seconds on ``workers`` CPU workers, from the measured per-shard rate (ratings per second) and per-step
    sum time.  Optimistic for a large input dimension: on ML-1M a batch's entries share weight rows (35 items over
    6,040 users), which stay in cache; over 100M users they do not."""
    if not measured:
        return None
    steps = math.ceil(spec["samples"] / BATCH)
    entries = spec["ratings"] / steps
    return steps * (entries / workers / measured["entries_per_s"] + measured["sum_s"])


def measured_cpu() -> dict:
    path = HERE / "shard_bench.json"
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    rows = [r for r in report["rows"] if r.get("shards") == 2 and "steps" in r]
    if not rows:
        return {}
    row = rows[0]
    entries_per_step = report["machine"]["train_ratings"] / (row["steps"] / report["machine"]["epochs"])
    compute = row["seconds"] / row["steps"] - row["sum_seconds_per_step"]      # steps: of the whole fit
    return {"entries_per_s": entries_per_step / 2 / max(compute, 1e-9),
            "sum_s": row["sum_seconds_per_step"], "machine": report["machine"]["cpu"]}


def main() -> None:
    measured = measured_cpu()
    print(f"| set | inputs (users) | steps/epoch | weights per GPU ({GPUS} GPUs) | device step (us) | 2 all-reduces "
          f"(us) | epoch, 8 GPUs (model) | epoch, 1 GPU (model) | epoch, 8 CPU workers (measured rate) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, spec in SETS.items():
        eight, one = gpu_epoch(spec, GPUS), gpu_epoch(spec, 1)
        cpu = cpu_epoch(spec, GPUS, measured)
        single = f"{one['epoch_s']:.1f} s" if one["fits"] else f"does not fit ({one['weights_per_gpu_gb']:.0f} GB)"
        print(f"| {name} | {spec['inputs']:,} | {eight['steps']:,} | {eight['weights_per_gpu_gb']:.2f} GB | "
              f"{eight['compute_us']:.0f} + {STEP_OVERHEAD_S * 1e6:.0f} | {eight['comm_us']:.0f} | "
              f"{eight['epoch_s']:.1f} s | {single} | {'' if cpu is None else f'{cpu:.0f} s'} |")
    if measured:
        print(f"\nCPU rate measured on {measured['machine']}: {measured['entries_per_s'] / 1e6:.2f} M ratings/s per "
              f"shard, {measured['sum_s'] * 1e3:.1f} ms of sums per step (ML-1M I-CFN, 2 shards on Ray)")


if __name__ == "__main__":
    main()
