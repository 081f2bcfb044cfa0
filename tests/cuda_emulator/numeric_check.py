"""CUDA engine vs the NumPy reference on fresh random data: gradients, SGD steps, epochs, inference.

    PYTHONPATH=.:tests python -m cuda_emulator.numeric_check              # on a GPU (CuPy)
    PYTHONPATH=.:tests python -m cuda_emulator.numeric_check --emulate    # no GPU: the kernels on the host

(``bench/gpu_numeric_check.py`` runs the same command line; ``bench/gpu_check.sh`` sets the path.)

Every output of every check must satisfy ||cuda - ref|| / ||ref|| < 1e-4 (the loss to 1e-5);
exit status 1 otherwise.

``--emulate`` runs the *real* kernel source (kernels/cuda/*.cu, exactly what CuPy compiles) on the
CPU: g++ builds it against a small CUDA shim that runs every GPU thread as an OS thread, with warp
collectives (__shfl_sync, __ballot_sync, ...) and __syncthreads as barriers, so divergent
collectives deadlock-detect as errors.  A fake ``cupy`` module stands in for CuPy: its arrays are
NumPy arrays with guard bytes (out-of-bounds writes are reported), its RawKernel checks that every
argument has exactly the C type of the kernel parameter (np.int32 for ``int``, float32 arrays for
``float*``, ...), and stream capture records kernel launches only (anything else inside a capture
is an error) and replays them from the graph, with their arguments frozen, as CUDA graphs do.
It is slow (threads, not a GPU): use tiny problems.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

from .runtime import check_guards, install_fake_cupy

TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-5


# ============================================================================ the comparison
def relative_error(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None and b is None:
        return 0.0
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    ref = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (ref if ref > 0 else 1.0))


def layer_errors(got, ref) -> list[tuple[str, float]]:
    out = []
    for index, (g, r) in enumerate(zip(got, ref, strict=True)):
        out.append((f"L{index}.weight", relative_error(g.weight, r.weight)))
        out.append((f"L{index}.bias", relative_error(g.bias, r.bias)))
        if g.side_weight is not None or r.side_weight is not None:
            out.append((f"L{index}.side", relative_error(g.side_weight, r.side_weight)))
    return out


def random_problem(rng: np.random.Generator, n_samples: int, n_inputs: int, density: float, side_dim: int):
    """A samples x inputs CSR of centred unit ratings (every row known at least once, some long rows)."""
    mask = rng.random((n_samples, n_inputs)) < density
    mask[np.arange(n_samples), rng.integers(0, n_inputs, n_samples)] = True
    mask[0, :] = True                                  # one full row (swap rule, long segments)
    mask[1, :] = False
    mask[1, 3] = True                                  # a one-entry row (swap rule)
    values = rng.choice(np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), size=(n_samples, n_inputs))
    dense = np.where(mask, values - 0.1 * rng.random((n_samples, n_inputs)), 0.0).astype(np.float32)
    dense[2, 5] = 0.0
    samples = sp.csr_matrix(dense)
    # keep explicit zeros as known values, like the real preprocessing
    rows, cols = np.nonzero(mask)
    samples = sp.csr_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape, dtype=np.float32)
    samples.sort_indices()
    side = rng.random((n_samples, side_dim)).astype(np.float32) if side_dim else None
    return samples, side


def run_checks(emulate: bool, quick: bool, verbose: bool = True, reference: str = "numpy",
               only: tuple[str, ...] | None = None, medium: bool = False) -> list[tuple[str, str, float, bool]]:
    """Run every configuration; returns rows (config, quantity, relative error, ok).

    ``reference`` is the engine the CUDA engine is compared with: "numpy" (the specification) or
    "cpu" (the Cython engine, itself tested against the specification).  ``only``: the names of
    the configurations to run (default: all, or the first three when ``quick``).  ``medium``: one
    case at the engine's real launch configuration (256-thread blocks, grids from the kernels'
    occupancy on the device's SMs, 600 hidden units, batches of 35 with rows covered by many warps).
    """
    from cfn_fast.backends.base import TrainConfig, epoch_order
    if reference == "cpu":
        from cfn_fast.backends.cpu_backend import CpuEngine as NumpyEngine
    else:
        from cfn_fast.backends.numpy_backend import NumpyEngine
    from cfn_fast.backends import cuda_backend, cuda_plan
    from cfn_fast.network import init_layers

    rng = np.random.default_rng(12345)
    defaults = (cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW)  # read by cuda_plan.plan_steps
    if emulate:
        sizes = dict(n_samples=23, n_inputs=37, density=0.3)
        engine_kw = dict(block_threads=64, blocks_per_sm=2, min_per_warp=8)
    else:
        sizes = dict(n_samples=300, n_inputs=420, density=0.08)
        engine_kw = {}
    configs = [
        # (name, hidden, side_dim, scatter, graphs, batch, mask)
        ("1 hidden, side, segment, graphs", (9,), 3, "segment", True, 5, 0.25),
        ("graphs of 2 steps, folds", (8,), 2, "segment", True, 3, 0.3),
        ("1 hidden, no side, atomic, eager", (6,), 0, "atomic", False, 4, 0.6),
        ("2 hidden, side, segment, eager", (7, 5), 2, "segment", False, 5, 0.25),
        ("2 hidden, no side, atomic", (5, 6), 0, "atomic", True, 6, 0.95),
        ("1 hidden, side, atomic, graphs", (9,), 3, "atomic", True, 5, 0.25),
        ("1 hidden, no side, segment, eager", (6,), 0, "segment", False, 7, 0.9),
        ("650 hidden (beyond the register tiles), side, atomic", (650,), 2, "atomic", True, 4, 0.25),
        ("batch 35 (rows beyond one warp), side, segment", (6,), 2, "segment", True, 35, 0.25),
        ("batch 70 (setup scan in chunks), atomic", (5,), 0, "atomic", True, 70, 0.4),
    ]
    if not emulate:
        configs += [("wide 1 hidden, side, segment, graphs", (600,), 16, "segment", True, 35, 0.25),
                    ("wide 1 hidden, side, atomic, graphs", (1100,), 4, "atomic", True, 35, 0.25),
                    ("wide 2 hidden, side, segment", (300, 200), 5, "segment", False, 35, 0.25)]
    if medium:
        sizes = dict(n_samples=80, n_inputs=400, density=0.06)
        engine_kw = {}
        configs = [("medium: 600 hidden, side, segment, graphs, real launch configuration", (600,), 4, "segment",
                    True, 35, 0.25)]
    if only is not None:
        configs = [c for c in configs if c[0] in only]
    elif quick:
        configs = configs[:3]
    rows_out: list[tuple[str, str, float, bool]] = []

    def record(config: str, what: str, err: float, tol: float = TOLERANCE) -> None:
        ok = bool(np.isfinite(err) and err < tol)
        rows_out.append((config, what, err, ok))
        if verbose:
            print(f"  {'ok ' if ok else 'BAD'} {what:<32} {err:.2e}", flush=True)

    for name, hidden, side_dim, scatter, graphs, batch, mask in configs:
        if verbose:
            print(f"[{name}]", flush=True)
        # "graphs of 2 steps, folds": several graphs and a remainder graph per epoch, and the lazy
        # scale folded at most chunk boundaries
        cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW = (2, 0.995) if "folds" in name else defaults
        problem = dict(sizes)
        if batch > problem["n_samples"] // 2:          # room for several batches
            problem.update(n_samples=int(2.3 * batch), density=min(problem["density"], 0.15))
        samples, side = random_problem(rng, side_dim=side_dim, **problem)
        layers = init_layers(samples.shape[1], hidden, side_dim, seed=int(rng.integers(1000)))
        cfg = TrainConfig(alpha=1.1, beta=0.6, mask_ratio=mask, weight_decay=0.05, batch_size=batch, seed=7)
        ref = NumpyEngine(layers, cfg, samples, side)
        cu = cuda_backend.CudaEngine(layers, cfg, samples, side, scatter=scatter, graphs=graphs, **engine_kw)
        if not engine_kw:                              # the real launch configuration: at most one wave
            plan = cuda_backend.launch_plan(cu._kernels, cu._cp, hidden)
            for kernel, grid in (("cfn_encode", cu._grid_enc), ("cfn_output", cu._grid_out),
                                 ("cfn_scatter_segment", cu._grid_seg)):
                record(name, f"{kernel} grid {grid} <= one wave {plan[kernel]['grid']}",
                       0.0 if 1 <= grid <= plan[kernel]["grid"] else 1.0)
        record(name, "get_layers round trip", max(e for _, e in layer_errors(cu.get_layers(), layers)), 1e-7)
        # gradients of a few batches (epoch 3's corruption)
        order = epoch_order(cfg.seed, 3, ref.trainable)
        for b, batch_rows in enumerate([order[:batch], np.array([0, 1, 2]), order[-3:]][: 2 if quick else 3]):
            loss_r, g_r = ref.gradients(batch_rows, 3)
            loss_c, g_c = cu.gradients(batch_rows, 3)
            record(name, f"gradients[{b}] loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
            for what, err in layer_errors(g_c, g_r):
                record(name, f"gradients[{b}] {what}", err)
        # one SGD step
        lr = 0.07
        loss_r = ref.sgd_step(order[:batch], 2, lr)
        loss_c = cu.sgd_step(order[:batch], 2, lr)
        record(name, "sgd_step loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
        for what, err in layer_errors(cu.get_layers(), ref.get_layers()):
            record(name, f"sgd_step {what}", err)
        # whole epochs (graphs replay from the second chunk on), snapshot / restore
        before = cu.get_layers()
        snap = cu.snapshot()
        for epoch in (1, 2):
            loss_r = ref.train_epoch(epoch, lr / (1 + 0.3 * epoch))
            loss_c = cu.train_epoch(epoch, lr / (1 + 0.3 * epoch))
            record(name, f"epoch {epoch} loss", relative_error(loss_c, loss_r), LOSS_TOLERANCE)
        for what, err in layer_errors(cu.get_layers(), ref.get_layers()):
            record(name, f"2 epochs {what}", err)
        ref_max = max(float(np.max(np.abs(a))) for layer in ref.get_layers() for a in layer.arrays())
        record(name, "max_abs_param", relative_error(cu.max_abs_param(), ref_max))
        # inference on the trained parameters
        rows_q = rng.integers(0, samples.shape[0], 40)
        cols_q = rng.integers(0, samples.shape[1], 40)
        record(name, "predict_entries", relative_error(cu.predict_entries(samples, side, rows_q, cols_q),
                                                       ref.predict_entries(samples, side, rows_q, cols_q)))
        other = samples[::2].copy()
        other_side = None if side is None else side[::2].copy()
        record(name, "encode (other inputs)", relative_error(cu.encode(other, other_side),
                                                             ref.encode(other, other_side)))
        codes = ref.encode(other, other_side)
        record(name, "decode", relative_error(cu.decode(codes, other_side, np.array([0, 5, 2])),
                                              ref.decode(codes, other_side, np.array([0, 5, 2]))))
        cu.restore(snap)
        record(name, "restore(snapshot)", max(e for _, e in layer_errors(cu.get_layers(), before)), 1e-7)
        if emulate:
            check_guards()
    cuda_plan.GRAPH_CHUNK, cuda_plan.FOLD_BELOW = defaults
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="run the kernels on the host (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    parser.add_argument("--medium", action="store_true",
                        help="one 600-hidden case at the real launch configuration (with --emulate: 132 SMs)")
    parser.add_argument("--arch", type=int, default=0, help="with --emulate: compile the code paths of this "
                        "__CUDA_ARCH__ (e.g. 900: sm_90's vector atomics)")
    parser.add_argument("--only", default="", help="configuration names separated by semicolons")
    parser.add_argument("--reference", default="numpy", choices=("numpy", "cpu"))
    args = parser.parse_args(argv)
    if args.emulate:
        if args.arch:
            os.environ["CFN_EMU_ARCH"] = str(args.arch)
        install_fake_cupy(sms=132 if args.medium else 1)
    else:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        print(f"device: {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}, "
              f"CuPy {cupy.__version__}")
    start = time.perf_counter()
    only = tuple(x.strip() for x in args.only.split(";") if x.strip()) or None
    rows = run_checks(args.emulate, args.quick, only=only, medium=args.medium, reference=args.reference)
    bad = [r for r in rows if not r[3]]
    worst = max(rows, key=lambda r: r[2])
    print(f"\n{len(rows)} checks, {len(bad)} failed, worst {worst[2]:.2e} ({worst[0]}: {worst[1]}), "
          f"{time.perf_counter() - start:.1f}s{' (emulated)' if args.emulate else ''}")
    for config, what, err, _ in bad:
        print(f"FAILED  {config}: {what} = {err:.3e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
