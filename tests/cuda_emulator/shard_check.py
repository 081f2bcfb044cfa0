"""Two CUDA shards on one GPU, summed through ThreadGroup, against the NumPy shards: agreement and step time.

    PYTHONPATH=.:tests python -m cuda_emulator.shard_check              # on a GPU (CuPy)
    PYTHONPATH=.:tests python -m cuda_emulator.shard_check --emulate    # no GPU: the kernels on the host

``agreement``: two epochs of a 2-shard network (600 hidden units and side information on a GPU, tiny in the
emulator), each :class:`~cfn_fast.backends.cuda_shard.CudaShardEngine` on its own thread, the blocks summed
by :class:`~cfn_fast.sharding.communicator.ThreadGroup`, against :class:`NumpyShardEngine` summed in shard
order: every parameter to ||cuda - ref|| / ||ref|| < 1e-4, the loss to 1e-5 (the CUDA engine's tolerances).
``step_time``: the wall time of a sharded step (both shards, both sums, the host round trips included) on a
larger random problem, next to the unsharded CUDA engine's step on the same data.  Exit status 1 when the
agreement fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp

from .numeric_check import LOSS_TOLERANCE, TOLERANCE, layer_errors, random_problem
from .runtime import install_fake_cupy


def _shards(layers, config, samples, side, shards: int, **kw):
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    from cfn_fast.backends.numpy_shard import NumpyShardEngine
    from cfn_fast.backends.shard_base import shard_bounds, shard_data, split_layers
    bounds = shard_bounds(samples.shape[1], shards)
    data = shard_data(samples, bounds)
    parts = split_layers(layers, bounds)
    return ([NumpyShardEngine(p, config, d, side) for p, d in zip(parts, data)],
            [CudaShardEngine(p, config, d, side, **kw) for p, d in zip(parts, data)])


def run_group(engines, work) -> list:
    """``work(engine, communicator)`` on one thread per engine, summed through a ThreadGroup."""
    from cfn_fast.sharding.communicator import ThreadGroup
    group = ThreadGroup(len(engines))
    results: list = [None] * len(engines)
    errors: list = []

    def shard(rank: int) -> None:
        try:
            results[rank] = work(engines[rank], group.member(rank))
        except BaseException as exc:   # noqa: BLE001 - reported below, after the other shards are released
            errors.append(exc)
            group.abort()

    threads = [threading.Thread(target=shard, args=(rank,)) for rank in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def group_steps(engine, comm, batches, epoch: int, lr: float) -> float:
    """One shard's worker loop over ``batches``: the two sums through ``comm``; its loss."""
    loss = 0.0
    for rows in batches:
        hidden_sum = comm.allreduce(engine.input_partial(rows, epoch))
        part, code_grad = engine.output_partial(rows, epoch, hidden_sum, lr)
        engine.finish_step(rows, comm.allreduce(code_grad), lr)
        loss += part
    return loss


def _batches(config, trainable, epoch: int) -> list[np.ndarray]:
    from cfn_fast.backends.base import epoch_order
    order = epoch_order(config.seed, epoch, trainable)
    return [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]


def agreement(emulate: bool, shards: int = 2) -> dict:
    from cfn_fast.backends.shard_base import join_layers
    from cfn_fast.network import init_layers
    from cfn_fast.settings import TrainConfig
    rng = np.random.default_rng(2024)
    if emulate:
        shape, hidden, side_dim, batch, kw = (19, 29, 0.3), (7,), 2, 5, dict(block_threads=64, blocks_per_sm=2,
                                                                            min_per_warp=2)
    else:
        shape, hidden, side_dim, batch, kw = (300, 420, 0.08), (600,), 4, 35, {}
    samples, side = random_problem(rng, *shape, side_dim)
    layers = init_layers(samples.shape[1], hidden, side_dim, seed=5)
    config = TrainConfig(alpha=1.1, beta=0.6, mask_ratio=0.25, weight_decay=0.05, batch_size=batch, seed=7)
    ref, cuda = _shards(layers, config, samples, side, shards, **kw)
    trainable = ref[0].trainable
    loss_errors = []
    for epoch in (1, 2):
        lr = 0.07 / (1 + 0.3 * epoch)
        ref_loss = 0.0
        for rows in _batches(config, trainable, epoch):
            hidden_sum = sum(e.input_partial(rows, epoch) for e in ref)
            outs = [e.output_partial(rows, epoch, hidden_sum, lr) for e in ref]
            code_grad = sum(out[1] for out in outs)
            for e in ref:
                e.finish_step(rows, code_grad, lr)
            ref_loss += sum(out[0] for out in outs)
        batches = _batches(config, trainable, epoch)
        losses = run_group(cuda, lambda e, comm: group_steps(e, comm, batches, epoch, lr))
        loss_errors.append(abs(sum(losses) - ref_loss) / ref_loss)
    errors = layer_errors(join_layers([e.get_layers() for e in cuda]), join_layers([e.get_layers() for e in ref]))
    worst = max(errors, key=lambda item: item[1])
    ok = worst[1] < TOLERANCE and max(loss_errors) < LOSS_TOLERANCE
    return dict(ok=ok, shards=shards, hidden=list(hidden), shape=list(shape), worst=worst[1], worst_at=worst[0],
                loss_error=max(loss_errors), tolerance=TOLERANCE)


def step_time(emulate: bool, seconds: float = 3.0, shards: int = 2) -> dict:
    """Wall time per sharded step (and the unsharded CUDA engine's, same data) on a random problem."""
    from cfn_fast.backends.cuda_backend import CudaEngine
    from cfn_fast.network import init_layers
    from cfn_fast.settings import TrainConfig
    rng = np.random.default_rng(7)
    if emulate:
        n_samples, n_inputs, density, hidden, kw = 40, 60, 0.1, (8,), dict(block_threads=64, blocks_per_sm=2)
    else:
        n_samples, n_inputs, density, hidden, kw = 6000, 4000, 0.04, (600,), {}
    samples = sp.random(n_samples, n_inputs, density=density, format="csr", dtype=np.float32, random_state=rng)
    samples.data = rng.uniform(-1, 1, samples.nnz).astype(np.float32)
    samples.sort_indices()
    side = rng.random((n_samples, 4)).astype(np.float32)
    layers = init_layers(n_inputs, hidden, 4, seed=1)
    config = TrainConfig(alpha=1.0, beta=0.5, mask_ratio=0.25, weight_decay=0.02, batch_size=35, seed=3)
    _, cuda = _shards(layers, config, samples, side, shards, **kw)
    batches = _batches(config, cuda[0].trainable, 1)
    run_group(cuda, lambda e, comm: group_steps(e, comm, batches[:1], 1, 0.01))          # warm-up
    done, start = 0, time.perf_counter()
    while done < len(batches) - 1 and (time.perf_counter() - start < seconds or done < 5):
        chunk = batches[1 + done:1 + done + 10]
        run_group(cuda, lambda e, comm: group_steps(e, comm, chunk, 1, 0.01))
        done += len(chunk)
    sharded = (time.perf_counter() - start) / done
    whole = CudaEngine(layers, config, samples, side)
    whole.train_epoch(1, 0.01)                                                           # warm-up, graphs
    start = time.perf_counter()
    whole.train_epoch(2, 0.01)
    unsharded = (time.perf_counter() - start) / len(batches)
    return dict(shards=shards, shape=[n_samples, n_inputs, int(samples.nnz)], hidden=list(hidden),
                steps_timed=done, sharded_step_ms=1e3 * sharded, unsharded_step_ms=1e3 * unsharded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="run the kernels on the host (no GPU needed)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of sharded steps timed")
    args = parser.parse_args(argv)
    if args.emulate:
        install_fake_cupy(sms=2)
    result = agreement(args.emulate)
    print(json.dumps(result))
    print(json.dumps(step_time(args.emulate, args.seconds)))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
