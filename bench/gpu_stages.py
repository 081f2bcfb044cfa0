"""The stages of ``bench/gpu_check.sh``: each one a separate process under its own ``timeout``, each
appending one JSON line per result to the results file as soon as it has it (flushed and fsync'ed),
so a stage that is killed loses only itself and a check that is cut short keeps everything before.

    PYTHONPATH=. python bench/gpu_stages.py STAGE --data DIR --results FILE.jsonl [--smoke]
    PYTHONPATH=. python bench/gpu_stages.py table --results FILE.jsonl       # the markdown table

Stages, in the order the check runs them (by value): ``machine``, ``nvrtc`` (compile the module,
register/shared-memory use and the grids the engine launches), ``numeric`` (the CUDA engine against
the NumPy reference and the cpu engine), ``pytest`` (the CUDA and backend tests), ``shard`` (two shards of
sharded training on the one GPU against the NumPy shards, and a sharded step's time), ``ml1m`` (I-CFN
time and test RMSE, cuda against cpu), ``ml10m`` (I-CFN, U-CFN), ``ml20m`` (I-CFN), ``netflix``
(I-CFN, U-CFN, with the memory plan), ``peer`` (the dense PyTorch peer on the same shapes: a few
steps timed, extrapolated to 20 epochs, labelled ``extrapolated``).

The synthetic sets (ML-10M, ML-20M and Netflix shapes) are generated on the GPU with CuPy in a few
seconds (:func:`synthetic_matrix`): distinct (sample, input) pairs drawn from long-tailed laws,
ratings from a biased low-rank model quantised to 1..5 stars, scaled and centred per sample exactly as
:mod:`cfn_fast.preprocessing` does, 90% of the shape's ratings (the training part of a 90/10 split).
The engine is timed directly on that matrix (20 epochs of :func:`cfn_fast.training.trainer.run_epochs` after a
warm-up epoch, CUDA events on the engine's stream); ``--smoke`` runs every stage on tiny shapes with
NumPy in place of CuPy where there is no GPU (checks this script, not speed).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:   # cfn_fast itself: installed, or PYTHONPATH=. (gpu_check.sh)
    sys.path.insert(0, str(ROOT / "bench"))

from cfn_fast.data.synthetic import ML10M_SHAPE, ML20M_SHAPE, NETFLIX_SHAPE  # noqa: E402

EPOCHS = 20
HIDDEN = 600          # --smoke: 8 hidden units, 2 epochs
SHAPES = {"ML-10M": ML10M_SHAPE, "ML-20M": ML20M_SHAPE, "Netflix": NETFLIX_SHAPE}
SMOKE_SHAPES = {"ML-10M": (60, 40, 500), "ML-20M": (70, 45, 600), "Netflix": (90, 30, 700)}
#: the issue's targets for 20 epochs, 600 hidden units (seconds, GiB of peak GPU memory)
TARGETS = {"ML-10M I-CFN": (1.0, 1.0), "ML-10M U-CFN": (2.0, None), "ML-20M I-CFN": (2.0, None),
           "Netflix I-CFN": (10.0, 8.0), "Netflix U-CFN": (None, 8.0)}
SPEEDUP_TARGET = 15.0
RMSE_TOLERANCE = 0.002
GIB = 1 << 30
SMOKE = False


# ============================================================================ results file
class Results:
    """Appends JSON lines to the results file, each flushed to disk at once."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path, self.stage = Path(path), stage
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, **record) -> dict:
        record = {"stage": self.stage, "time": time.strftime("%H:%M:%S"), **record}
        line = json.dumps(record, default=_json_default)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(line, flush=True)
        return record


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def read_results(path: Path) -> list[dict]:
    out = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"stage": "?", "status": "unreadable line", "line": line[:200]})
    return out


# ============================================================================ GPU or stand-in
def _xp():
    """CuPy when a GPU is usable, else NumPy (only in --smoke)."""
    try:
        import cupy
        if cupy.__version__ == "emulated":                   # --emulate: the host stand-in has no RNG
            return np
        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        if not SMOKE:
            raise
        return np


def _to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _free_gpu() -> None:
    gc.collect()
    try:
        import cupy
        cupy.cuda.Device().synchronize()
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:
        pass


# ============================================================================ synthetic data on the GPU
def _long_tail_cdf(xp, rs, n: int, exponent: float):
    weights = 1.0 / (xp.arange(n, dtype=xp.float64) + 10.0) ** exponent
    weights = weights[rs.permutation(n)]
    cdf = xp.cumsum(weights)
    return cdf / cdf[-1]


def _draw(xp, rs, cdf, k: int, uniform_share: float):
    """k indices from the long-tailed law ``cdf``, a share of them uniform instead."""
    n = int(cdf.shape[0])
    idx = xp.minimum(xp.searchsorted(cdf, rs.random_sample(k)), n - 1)
    if uniform_share > 0:
        idx = xp.where(rs.random_sample(k) < uniform_share, rs.randint(0, n, k), idx)
    return idx.astype(xp.int64)


def synthetic_matrix(shape: tuple[int, int, int], kind: str, seed: int = 0, train_fraction: float = 0.9):
    """``(samples CSR, side, info)`` of a synthetic set of ``shape = (users, items, ratings)``.

    ``kind`` "item" gives items x users (I-CFN), "user" users x items (U-CFN).  Values are the
    library's preprocessing of 1..5 stars: ``(r - 3) / 2`` centred by each sample's mean.
    Generated with CuPy on the GPU (NumPy in --smoke without a GPU); deterministic for a seed
    and a library.
    """
    xp = _xp()
    start = time.perf_counter()
    n_users, n_items, n_ratings = shape
    target = int(round(n_ratings * train_fraction))
    rs = xp.random.RandomState(seed)
    cdf_u, cdf_i = _long_tail_cdf(xp, rs, n_users, 1.0), _long_tail_cdf(xp, rs, n_items, 1.1)
    keys = xp.zeros(0, dtype=xp.int64)
    share = 0.0
    while keys.size < target:
        # later rounds mix in uniform draws: the long tail keeps hitting pairs it already drew
        want = int((target - keys.size) * 1.3) + 16
        fresh = _draw(xp, rs, cdf_u, want, share) * n_items + _draw(xp, rs, cdf_i, want, share)
        keys = xp.unique(xp.concatenate([keys, fresh]))
        share = min(1.0, share + 0.25)
    if keys.size > target:
        keep = xp.argsort(rs.random_sample(int(keys.size)))[:target]
        keys = xp.sort(keys[keep])
    user, item = keys // n_items, keys % n_items
    del keys
    rank = 8
    pu = (rs.standard_normal((n_users, rank)) / math.sqrt(rank)).astype(xp.float32)
    qi = (rs.standard_normal((n_items, rank)) / math.sqrt(rank)).astype(xp.float32)
    bu = (0.35 * rs.standard_normal(n_users)).astype(xp.float32)
    bi = (0.4 * rs.standard_normal(n_items)).astype(xp.float32)
    signal = xp.zeros(target, dtype=xp.float32)
    for k in range(rank):                                    # no (nnz x rank) temporaries
        signal += pu[user, k] * qi[item, k]
    raw = 3.55 + bu[user] + bi[item] + 1.6 * signal + (0.45 * rs.standard_normal(target)).astype(xp.float32)
    del signal
    stars = xp.clip(xp.rint(raw), 1.0, 5.0)
    unit = ((stars - 3.0) / 2.0).astype(xp.float32)          # cfn_fast.preprocessing: (r - mid) / half_range
    del raw, stars
    if kind == "user":
        rows, cols, n_rows, n_cols = user, item, n_users, n_items
    else:
        order = xp.argsort(item * n_users + user)
        rows, cols, unit, n_rows, n_cols = item[order], user[order], unit[order], n_items, n_users
        del order
    counts = xp.bincount(rows, minlength=n_rows)
    sums = xp.bincount(rows, weights=unit.astype(xp.float64), minlength=n_rows)
    means = (sums / xp.maximum(counts, 1)).astype(xp.float32)
    data = unit - means[rows]                                # centred by each sample's training mean
    indptr = xp.zeros(n_rows + 1, dtype=xp.int64)
    indptr[1:] = xp.cumsum(counts)
    # side information from the latent factors: one-hot segment + multi-hot "genres" + activity bracket
    factors = pu if kind == "user" else qi
    groups = 8 if kind == "user" else 12
    scores = factors @ rs.standard_normal((rank, groups)).astype(xp.float32)
    side = xp.zeros((n_rows, groups + 4), dtype=xp.float32)
    side[xp.arange(n_rows), xp.argmax(scores, axis=1)] = 1.0
    if kind == "item":
        side[:, :groups] = xp.maximum(side[:, :groups], (scores > 0.55).astype(xp.float32))
    ranks = xp.argsort(xp.argsort(counts))
    side[xp.arange(n_rows), groups + (ranks * 4 // n_rows)] = 1.0
    matrix = sp.csr_matrix((_to_host(data), _to_host(cols.astype(xp.int32)), _to_host(indptr)),
                           shape=(n_rows, n_cols))
    matrix.has_canonical_format = True                       # unique keys, sorted within each row
    info = dict(generated_s=round(time.perf_counter() - start, 2), generator=xp.__name__, nnz=int(matrix.nnz),
                samples=n_rows, inputs=n_cols, empty_samples=int(np.sum(np.diff(matrix.indptr) == 0)))
    side_host = _to_host(side)
    del data, cols, indptr, rows, user, item, unit, side
    _free_gpu()
    return matrix, side_host, info


def _layers(n_inputs: int, hidden: int, side_dim: int, seed: int = 0):
    """The library's initialisation law (uniform ±1/√fan_in), drawn in float32 (fast at Netflix size)."""
    from cfn_fast.network import Layer, layer_sizes
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in layer_sizes(n_inputs, (hidden,)):
        bound = np.float32(1.0 / math.sqrt(fan_in + side_dim))

        def uniform(*shape):
            return (rng.random(shape, dtype=np.float32) * 2 - 1) * bound

        layers.append(Layer(weight=uniform(fan_out, fan_in), bias=uniform(fan_out),
                            side_weight=uniform(fan_out, side_dim) if side_dim else None))
    return layers


def _config(kind: str):
    from cfn_fast import CFN
    from cfn_fast.backends.base import TrainConfig
    p = CFN(kind, hidden=(HIDDEN,), epochs=0).resolved_params()
    return p, TrainConfig(alpha=p["alpha"], beta=p["beta"], mask_ratio=p["mask_ratio"],
                          weight_decay=p["weight_decay"], batch_size=p["batch_size"], seed=0)


# ============================================================================ timed runs
def time_engine(matrix: sp.csr_matrix, side: np.ndarray, kind: str, epochs: int | None = None) -> dict:
    """20 epochs of the CUDA engine on ``matrix`` after one warm-up epoch (undone)."""
    epochs = EPOCHS if epochs is None else epochs
    import cupy

    from cfn_fast.backends.cuda_backend import CudaEngine, max_batch_nnz, memory_plan
    from cfn_fast.training.trainer import learning_rate, run_epochs
    p, config = _config(kind)
    pool = cupy.get_default_memory_pool()
    _free_gpu()
    counts = np.diff(matrix.indptr)
    plan = memory_plan(matrix.shape[0], matrix.shape[1], matrix.nnz, (HIDDEN,), batch_size=config.batch_size,
                       batch_nnz=max_batch_nnz(counts, config.batch_size), side_dim=side.shape[1],
                       n_sm=int(cupy.cuda.Device().attributes["MultiProcessorCount"]))
    t0 = time.perf_counter()
    layers = _layers(matrix.shape[1], HIDDEN, side.shape[1])
    engine = CudaEngine(layers, config, matrix, side)
    del layers
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    snap = engine.snapshot()
    engine.train_epoch(1, learning_rate(p["lr"], p["lr_decay"], 1))        # compile, capture the graphs
    engine.restore(snap)
    del snap
    cupy.cuda.Device().synchronize()
    warmup = time.perf_counter() - t0
    begin, end = cupy.cuda.Event(), cupy.cuda.Event()
    begin.record(engine.stream)
    t0 = time.perf_counter()
    records = run_epochs(engine, first_epoch=1, epochs=epochs, lr=p["lr"], lr_decay=p["lr_decay"],
                         n_known=max(matrix.nnz, 1), divergence=None)
    end.record(engine.stream)
    end.synchronize()
    wall = time.perf_counter() - t0
    seconds = cupy.cuda.get_elapsed_time(begin, end) / 1e3
    out = dict(seconds=seconds, wall_s=wall, epochs=epochs, setup_s=setup, warmup_s=warmup,
               peak_pool_gib=pool.total_bytes() / GIB, plan_gib=plan["total"] / GIB,
               plan_mib={k: round(v / (1 << 20), 1) for k, v in plan.items()},
               engine_gib=engine.device_bytes() / GIB,
               final_loss=records[-1].train_loss if records else None, graphs=engine.uses_graphs,
               scatter=engine.scatter_mode, finite=bool(math.isfinite(engine.max_abs_param())))
    del engine
    _free_gpu()
    return out


def time_peer(matrix: sp.csr_matrix, side: np.ndarray, kind: str, budget_s: float, epochs: int | None = None) -> dict:
    """The dense PyTorch peer: SGD steps timed for about ``budget_s`` seconds after 2 warm-up steps,
    extrapolated to ``epochs`` epochs (it would take far too long to run them)."""
    epochs = EPOCHS if epochs is None else epochs
    torch = importlib.import_module("torch")
    peer = importlib.import_module("torch_peer")
    from cfn_fast.backends.base import epoch_order
    p, config = _config(kind)
    _free_gpu()
    engine = peer.TorchEngine(_layers(matrix.shape[1], HIDDEN, side.shape[1]), config, matrix, side, device="cuda")
    order = epoch_order(0, 1, engine.trainable)
    B = config.batch_size
    n_steps = -(-len(order) // B)
    for t in range(min(2, n_steps)):                                        # warm-up (cuBLAS, allocator)
        engine.sgd_step(order[t * B:(t + 1) * B], 1, p["lr"])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    done, t0 = 0, time.perf_counter()
    while done < n_steps and (time.perf_counter() - t0 < budget_s or done < 3):
        engine.sgd_step(order[done * B:(done + 1) * B], 1, p["lr"])
        done += 1
        if done % 8 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    out = dict(steps_run=done, steps_per_epoch=n_steps, seconds_run=elapsed,
               seconds=elapsed / done * n_steps * epochs, extrapolated=done < n_steps * epochs,
               peak_gib=torch.cuda.max_memory_allocated() / GIB)
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return out


# ============================================================================ the stages
def stage_machine(res: Results, args) -> None:
    info = dict(python=platform.python_version(), numpy=np.__version__)
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info.update(gpu=name, sms=props["multiProcessorCount"], gib=props["totalGlobalMem"] / GIB,
                    cc=f"{props['major']}.{props['minor']}", cupy=cupy.__version__,
                    runtime=cupy.cuda.runtime.runtimeGetVersion(), driver=cupy.cuda.runtime.driverGetVersion())
    except Exception as exc:
        info["cupy_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch
        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    except Exception as exc:
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    res.emit(status="ok", **info)


def stage_nvrtc(res: Results, args) -> None:
    """Compile the module (NVRTC through CuPy), then what ptxas gave each kernel and the grids."""
    import cupy

    from cfn_fast.backends import cuda_backend, cuda_module
    t0 = time.perf_counter()
    kernels = cuda_module.compiled_kernels(cupy)
    compile_s = time.perf_counter() - t0
    attrs = {name: {k: fn.attributes.get(k) for k in ("num_regs", "local_size_bytes", "shared_size_bytes",
                                                      "max_threads_per_block")}
             for name, fn in kernels.items()}
    spills = {n: a["local_size_bytes"] for n, a in attrs.items() if a["local_size_bytes"]}
    res.emit(status="ok" if not spills else "spills", compile_s=compile_s, kernels=attrs, spills=spills)
    plan = cuda_backend.launch_plan(kernels, cupy, hidden=(HIDDEN,), block_threads=256)
    res.emit(status="ok", what="launch plan (600 hidden)", plan=plan)


def stage_numeric(res: Results, args) -> None:
    from cuda_emulator import numeric_check  # tests/cuda_emulator (gpu_check.sh puts tests/ on PYTHONPATH)
    for reference in ("numpy", "cpu"):
        if reference == "cpu":
            _wait_for_build(args, 20.0)
        t0 = time.perf_counter()
        try:
            rows = numeric_check.run_checks(emulate=False, quick=False, verbose=False, reference=reference)
        except Exception as exc:
            res.emit(status="error", reference=reference, error=f"{type(exc).__name__}: {exc}")
            continue
        bad = [r for r in rows if not r[3]]
        worst = max(rows, key=lambda r: r[2])
        res.emit(status="ok" if not bad else "FAIL", reference=reference, checks=len(rows), failed=len(bad),
                 worst=worst[2], worst_at=f"{worst[0]}: {worst[1]}", seconds=time.perf_counter() - t0,
                 failures=[f"{c}: {w} = {e:.3e}" for c, w, e, _ in bad[:20]])


def _wait_for_build(args, limit: float) -> None:
    """Wait (at most ``limit`` s, well inside the stage's budget) for gpu_check.sh's background build."""
    rc_file = os.environ.get("CFN_BUILD_RC")
    deadline = time.perf_counter() + limit
    while rc_file and not Path(rc_file).exists() and time.perf_counter() < deadline:
        time.sleep(0.5)


def stage_pytest(res: Results, args) -> None:
    _wait_for_build(args, 10.0)
    # only modules without optional test dependencies (hypothesis), and not the host emulation
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-rs", "tests/test_cuda_compile.py",
           "tests/test_backends.py", "tests/test_cuda_emulation.py::test_every_cupy_api_the_engine_calls_exists",
           "tests/test_cuda_emulation.py::test_memory_plan_fits_netflix_and_ml10m", "-k",
           "not emulation and not real_launch"]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    tail = (result.stdout + result.stderr).strip().splitlines()
    res.emit(status="ok" if result.returncode == 0 else "FAIL", rc=result.returncode, summary=tail[-1] if tail else "",
             seconds=time.perf_counter() - t0, tail=tail[-25:] if result.returncode else tail[-3:])


def stage_shard(res: Results, args) -> None:
    """Two CudaShardEngines on the one GPU, their blocks summed through ThreadGroup: agreement with the NumPy
    shards (2 epochs, 600 hidden), then the wall time of a sharded step next to the unsharded engine's."""
    from cuda_emulator import shard_check  # tests/cuda_emulator (gpu_check.sh puts tests/ on PYTHONPATH)
    emulate = getattr(sys.modules.get("cupy"), "__version__", "") == "emulated"
    result = shard_check.agreement(emulate)
    res.emit(status="ok" if result.pop("ok") else "FAIL", what="2 shards (ThreadGroup) vs the NumPy shards",
             **result)
    res.emit(status="ok", what="sharded step time (ThreadGroup, one GPU)", **shard_check.step_time(emulate, 2.0))


def stage_ml1m(res: Results, args) -> None:
    """ML-1M I-CFN, 20 epochs, 600 hidden: CUDA time and test RMSE against the cpu backend."""
    import gpu_bench
    gpu_bench.SMOKE = SMOKE
    try:
        train, test = gpu_bench.dataset("ML-1M", Path(args.data))
    except FileNotFoundError as exc:
        res.emit(status="skipped", run="ML-1M I-CFN", reason=str(exc))
        return
    cuda = gpu_bench.cuda_run("item", train, test, EPOCHS, (HIDDEN,), True)
    res.emit(status="ok", run="ML-1M I-CFN", ratings=train.nnz, **cuda)
    _wait_for_build(args, 15.0)
    cpu = gpu_bench.cpu_rmse("item", train, test, EPOCHS, (HIDDEN,), True)
    if "rmse" not in cpu:
        res.emit(status="skipped", run="ML-1M I-CFN cpu", reason=cpu.get("error"))
        return
    diff = abs(cpu["rmse"] - cuda["rmse"])
    res.emit(status="ok" if diff < RMSE_TOLERANCE else "FAIL", run="ML-1M I-CFN cpu", cpu_rmse=cpu["rmse"],
             cuda_rmse=cuda["rmse"], diff=diff, tolerance=RMSE_TOLERANCE, cpu_seconds=cpu["seconds"])


def _shape_runs(res: Results, name: str, kinds: tuple[str, ...]) -> None:
    shape = (SMOKE_SHAPES if SMOKE else SHAPES)[name]
    for kind in kinds:
        run = f"{name} {'I' if kind == 'item' else 'U'}-CFN"
        matrix, side, info = synthetic_matrix(shape, kind)
        res.emit(status="ok", what="data", run=run, **info)
        out = time_engine(matrix, side, kind)
        target = TARGETS.get(run, (None, None))
        verdicts = []
        if target[0] is not None:
            verdicts.append(out["seconds"] <= target[0])
        if target[1] is not None:
            verdicts.append(out["peak_pool_gib"] <= target[1])
        res.emit(status="ok" if all(verdicts) else "MISS", run=run, target_s=target[0], target_gib=target[1],
                 shape=list(shape), **out)
        del matrix, side
        _free_gpu()


def stage_ml10m(res: Results, args) -> None:
    _shape_runs(res, "ML-10M", ("item", "user"))


def stage_ml20m(res: Results, args) -> None:
    _shape_runs(res, "ML-20M", ("item",))


def stage_netflix(res: Results, args) -> None:
    _shape_runs(res, "Netflix", ("item", "user"))


def stage_peer(res: Results, args) -> None:
    try:
        importlib.import_module("torch_peer")
    except Exception as exc:
        res.emit(status="skipped", reason=f"PyTorch peer unavailable ({type(exc).__name__}: {exc})")
        return
    runs = [("ML-10M", "item"), ("ML-10M", "user"), ("ML-20M", "item"), ("Netflix", "item")]
    for name, kind in runs:
        run = f"{name} {'I' if kind == 'item' else 'U'}-CFN"
        try:
            matrix, side, _ = synthetic_matrix((SMOKE_SHAPES if SMOKE else SHAPES)[name], kind)
            out = time_peer(matrix, side, kind, budget_s=args.peer_seconds)
            res.emit(status="ok", run=run, label="PyTorch dense peer, extrapolated from the steps run", **out)
        except Exception as exc:
            res.emit(status="error", run=run, error=f"{type(exc).__name__}: {exc}")
        _free_gpu()


STAGES = {"machine": stage_machine, "nvrtc": stage_nvrtc, "numeric": stage_numeric, "pytest": stage_pytest,
          "shard": stage_shard, "ml1m": stage_ml1m, "ml10m": stage_ml10m, "ml20m": stage_ml20m,
          "netflix": stage_netflix, "peer": stage_peer}


# ============================================================================ the table
RUN_STAGES = ("ml10m", "ml20m", "netflix")


def table(records: list[dict]) -> str:
    """Markdown summary of a results file (every stage, then the runs with the peer's speed-up)."""
    lines = ["## cfn_fast GPU check", ""]
    machine = next((r for r in records if r.get("stage") == "machine"), {})
    if machine:
        lines.append(f"- {machine.get('gpu', '?')} ({machine.get('sms', '?')} SMs), CuPy {machine.get('cupy', '?')}, "
                     f"CUDA runtime {machine.get('runtime', '?')}, PyTorch {machine.get('torch', 'absent')}, "
                     f"Python {machine.get('python', '?')}")
    lines += ["", "| stage | status | detail |", "|---|---|---|"]
    for r in records:
        if r.get("stage") == "machine" or (r.get("stage") in RUN_STAGES and "seconds" in r and "run" in r):
            continue                                         # the machine line above, the runs below
        detail = {k: v for k, v in r.items() if k not in ("stage", "time", "status", "kernels", "plan", "tail",
                                                          "plan_mib")}
        lines.append(f"| {r.get('stage')} | {r.get('status')} | {json.dumps(detail, default=str)[:300]} |")
    peers = {r["run"]: r for r in records if r.get("stage") == "peer" and "seconds" in r and "run" in r}
    lines += ["", f"| run ({EPOCHS} epochs, {HIDDEN} hidden) | CUDA s | target s | peak pool GiB | plan GiB | "
              "peer s (extrapolated) | speed-up (target >= 15x) | status |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("stage") not in RUN_STAGES or "seconds" not in r or "run" not in r:
            continue
        peer = peers.get(r["run"])
        speed = peer["seconds"] / r["seconds"] if peer and r["seconds"] else None
        peer_s = "—" if peer is None else "~{:.0f}".format(peer["seconds"])
        speed_s = "—" if speed is None else f"{speed:.0f}x"
        lines.append(f"| {r['run']} | {r['seconds']:.2f} | {r.get('target_s') or '—'} | {r['peak_pool_gib']:.2f} | "
                     f"{r['plan_gib']:.2f} | {peer_s} | {speed_s} | {r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=[*STAGES, "table"])
    parser.add_argument("--data", default=".device_data",
                        help="folder holding ml-1m/ (ratings.npz, users.csv, items.csv)")
    parser.add_argument("--results", required=True, help="JSON-lines file the stage appends to")
    parser.add_argument("--peer-seconds", type=float, default=4.0, help="seconds of peer steps timed per run")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (checks this script, not speed)")
    parser.add_argument("--emulate", action="store_true", help="with --smoke and no GPU: the kernels in host "
                        "emulation (tests/cuda_emulator, PYTHONPATH=.:tests) stand in for CuPy")
    args = parser.parse_args(argv)
    global SMOKE, EPOCHS, HIDDEN
    SMOKE = args.smoke
    if SMOKE:
        EPOCHS, HIDDEN = 2, 8
    if args.emulate:
        from cuda_emulator import install_fake_cupy  # tests/cuda_emulator: PYTHONPATH=.:tests
        install_fake_cupy(sms=2)
    if args.stage == "table":
        text = table(read_results(Path(args.results)))
        print(text)
        Path(args.results).with_name("gpu_table.md").write_text(text)
        return 0
    res = Results(Path(args.results), args.stage)
    t0 = time.perf_counter()
    try:
        STAGES[args.stage](res, args)
    except Exception as exc:
        import traceback
        traceback.print_exc()
        res.emit(status="error", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        return 1
    res.emit(status="done", seconds=round(time.perf_counter() - t0, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
