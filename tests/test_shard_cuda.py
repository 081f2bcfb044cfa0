"""The CUDA engine's split step of sharded training (cfn_fast/backends/cuda_shard.py, kernels/cuda/cfn_shard.cu)
against the NumPy specification (NumpyShardEngine), in host emulation (tests/cuda_emulator): one step's blocks,
loss and parameters, and two epochs of two shards summed through ThreadGroup; the argument checks; and the NCCL
communicator (cfn_fast/sharding/nccl.py) without NCCL: its checks and the unique-id hand-shake with a stand-in
binding.  The new kernels' nvcc compile (sm_80/sm_90, no spills) is tests/test_cuda_compile.py's (every .cu)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
from children import TESTS, child_env  # tests/children.py
from cuda_emulator.shard_check import group_steps, run_group  # the worker loop over a ThreadGroup

from cfn_fast.backends.base import epoch_order
from cfn_fast.backends.numpy_shard import NumpyShardEngine
from cfn_fast.backends.shard_base import join_layers, shard_bounds, shard_data, split_layers
from cfn_fast.network import init_layers
from cfn_fast.settings import TrainConfig

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: no host emulation")

#: the CUDA engine's tolerances against the reference (tests/cuda_emulator/numeric_check.py)
TOLERANCE, LOSS_TOLERANCE = 1e-4, 1e-5
#: small launches, so that rows spread over several warps and blocks in the emulator
LAUNCH = dict(block_threads=64, blocks_per_sm=2, min_per_warp=2)


@pytest.fixture()
def emu(monkeypatch):
    """The emulator with its fake CuPy installed for this test only."""
    import cuda_emulator
    monkeypatch.setitem(sys.modules, "cupy", cuda_emulator.fake_cupy(sms=2))
    return cuda_emulator


def _problem(emu, hidden, side_dim, mask_ratio=0.4, seed=0):
    samples, side = emu.random_problem(np.random.default_rng(seed), 17, 23, 0.3, side_dim)
    layers = init_layers(samples.shape[1], hidden, side_dim, seed=seed)
    config = TrainConfig(alpha=1.1, beta=0.6, mask_ratio=mask_ratio, weight_decay=0.05, batch_size=5, seed=3)
    bounds = shard_bounds(samples.shape[1], 2)
    return samples, side, layers, config, bounds, shard_data(samples, bounds)


def _engines(cls, layers, config, bounds, data, side, **kw):
    return [cls(part, config, d, side, **kw) for part, d in zip(split_layers(layers, bounds), data)]


def _worst(got, ref) -> float:
    from cuda_emulator import layer_errors
    return max(err for _, err in layer_errors(join_layers(got), join_layers(ref)))


def _host(block) -> np.ndarray:
    return np.array(block.get() if hasattr(block, "get") else block, dtype=np.float32)


def _reference_step(engines, rows, epoch, lr) -> tuple[np.ndarray, np.ndarray, float]:
    """One step of the NumPy shards, the blocks summed in shard order."""
    hidden_sum = sum(e.input_partial(rows, epoch) for e in engines)
    outs = [e.output_partial(rows, epoch, hidden_sum, lr) for e in engines]
    code_grad = sum(out[1] for out in outs)
    for e in engines:
        e.finish_step(rows, code_grad, lr)
    return hidden_sum, code_grad, sum(out[0] for out in outs)


# ----------------------------------------------------------------------------- against the specification
@needs_gxx
@pytest.mark.parametrize("hidden, side_dim", [((6,), 0), ((7,), 3), ((6, 5), 2)])
def test_one_step_matches_the_numpy_shards(emu, hidden, side_dim):
    samples, side, layers, config, bounds, data = _problem(emu, hidden, side_dim)
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    ref = _engines(NumpyShardEngine, layers, config, bounds, data, side)
    cuda = _engines(CudaShardEngine, layers, config, bounds, data, side, **LAUNCH)
    assert _worst([e.get_layers() for e in cuda], [e.get_layers() for e in ref]) == 0.0     # the round trip
    rows = epoch_order(config.seed, 2, data[0].trainable)[:config.batch_size]
    ref_parts = [e.input_partial(rows, 2) for e in ref]
    cuda_parts = [e.input_partial(rows, 2) for e in cuda]
    assert all(isinstance(p, sys.modules["cupy"].ndarray) for p in cuda_parts)        # device blocks
    for got, want in zip(cuda_parts, ref_parts):
        assert got.shape == want.shape and np.abs(_host(got) - want).max() <= TOLERANCE * np.abs(want).max()
    ref_sum = sum(ref_parts)
    cuda_sum = cuda_parts[0] + cuda_parts[1]                       # a CuPy block back in
    ref_outs = [e.output_partial(rows, 2, ref_sum, 0.07) for e in ref]
    cuda_outs = [e.output_partial(rows, 2, cuda_sum, 0.07) for e in cuda]
    for (loss_c, grad_c), (loss_r, grad_r) in zip(cuda_outs, ref_outs):
        assert abs(loss_c - loss_r) <= LOSS_TOLERANCE * abs(loss_r)
        assert np.abs(_host(grad_c) - grad_r).max() <= TOLERANCE * np.abs(grad_r).max()
    ref_grad = sum(out[1] for out in ref_outs)
    for e in ref:
        e.finish_step(rows, ref_grad, 0.07)
    for e in cuda:
        e.finish_step(rows, _host(cuda_outs[0][1]) + _host(cuda_outs[1][1]), 0.07)     # a NumPy block
    assert _worst([e.get_layers() for e in cuda], [e.get_layers() for e in ref]) < TOLERANCE


@needs_gxx
@pytest.mark.parametrize("hidden, side_dim, mask_ratio", [((6,), 0, 0.4), ((6, 5), 2, 0.9)])
def test_two_epochs_of_two_shards_through_a_thread_group(emu, hidden, side_dim, mask_ratio):
    """Each CUDA shard on its own thread, the blocks summed by ThreadGroup, against the NumPy shards summed
    in a loop (mask 0.9: the swap rule, decided over rows whose entries lie in both shards)."""
    samples, side, layers, config, bounds, data = _problem(emu, hidden, side_dim, mask_ratio, seed=1)
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    ref = _engines(NumpyShardEngine, layers, config, bounds, data, side)
    cuda = _engines(CudaShardEngine, layers, config, bounds, data, side, **LAUNCH)
    for epoch in (1, 2):
        lr = 0.07 / (1 + 0.3 * epoch)
        order = epoch_order(config.seed, epoch, data[0].trainable)
        ref_loss = sum(_reference_step(ref, order[s:s + config.batch_size], epoch, lr)[2]
                       for s in range(0, len(order), config.batch_size))
        batches = [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]
        losses = run_group(cuda, lambda e, comm: group_steps(e, comm, batches, epoch, lr))
        assert abs(sum(losses) - ref_loss) <= LOSS_TOLERANCE * ref_loss, (losses, ref_loss)
    assert _worst([e.get_layers() for e in cuda], [e.get_layers() for e in ref]) < TOLERANCE
    # and the sharded CUDA run is the unsharded CUDA engine's to rounding
    from cfn_fast.backends.cuda_backend import CudaEngine
    whole = CudaEngine(layers, config, samples, side, scatter="segment", graphs=False, **LAUNCH)
    for epoch in (1, 2):
        whole.train_epoch(epoch, 0.07 / (1 + 0.3 * epoch))
    from cuda_emulator import layer_errors
    assert max(err for _, err in layer_errors(join_layers([e.get_layers() for e in cuda]),
                                              whole.get_layers())) < TOLERANCE
    emu.check_guards()


@needs_gxx
@pytest.mark.parametrize("mask_ratio", [0.0, 0.9])
def test_batch_tables_have_the_specifications_hidden_bits(emu, mask_ratio):
    """cfn_shard_tables: each shard's entries of a batch, their values and their hidden flags exactly those
    of numpy_shard.shard_batch (the global positions key the draw; the swap rule sees the whole row), with
    rows whose local entries are all drawn hidden but which keep them hidden (a visible entry elsewhere)."""
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    from cfn_fast.backends.numpy_shard import shard_batch
    from cfn_fast.corruption import epoch_key, mask_threshold
    samples, side, layers, config, bounds, data = _problem(emu, (6,), 0, mask_ratio, seed=2)
    engines = _engines(CudaShardEngine, layers, config, bounds, data, side, **LAUNCH)
    cross_shard = swapped = 0
    for epoch in (1, 2, 3):
        rows = epoch_order(config.seed, epoch, data[0].trainable)[:9]
        for engine, d in zip(engines, data):
            engine.input_partial(rows, epoch)
            X, known, hidden = shard_batch(d, rows, epoch_key(config.seed, epoch), mask_threshold(mask_ratio))
            nnz = int(known.sum())
            erh, col = engine.d_erh.get()[:nnz], engine.d_ecol.get()[:nnz]
            np.testing.assert_array_equal(engine.d_ex.get()[:nnz], X[erh >> 1, col])
            assert known[erh >> 1, col].all() and len(set(zip(erh >> 1, col))) == nnz
            np.testing.assert_array_equal(erh & 1, hidden[erh >> 1, col].astype(erh.dtype))
            # every local entry hidden: only when the row has a visible entry in the other shard (swap rule)
            cross_shard += sum((known[r] == hidden[r]).all() and known[r].any() for r in range(len(rows)))
            swapped += int(engine.d_pswap.get()[:len(rows)].sum())
    assert (cross_shard > 0 and swapped > 0) if mask_ratio else cross_shard == swapped == 0


@needs_gxx
def test_set_layers_and_the_lazy_scale(emu):
    """set_layers replaces the part (and resets the lazy weight-decay scale); get_layers reads it back."""
    samples, side, layers, config, bounds, data = _problem(emu, (6,), 2)
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    engine = _engines(CudaShardEngine, layers, config, bounds, data, side, **LAUNCH)[1]
    rows = np.arange(config.batch_size)
    _, grad = engine.output_partial(rows, 1, engine.input_partial(rows, 1), 0.1)
    engine.finish_step(rows, grad, 0.1)
    moved = engine.get_layers()
    fresh = split_layers(layers, bounds)[1]
    assert not np.array_equal(moved[0].weight, fresh[0].weight)
    engine.set_layers(fresh)
    assert _worst([engine.get_layers()], [fresh]) == 0.0
    with pytest.raises(ValueError, match="parts"):
        engine.set_layers(split_layers(layers, bounds)[0])


# ----------------------------------------------------------------------------- refusals
@needs_gxx
def test_refusals_name_the_problem(emu):
    samples, side, layers, config, bounds, data = _problem(emu, (6,), 0)
    from cfn_fast.backends.cuda_shard import CudaShardEngine
    engine = _engines(CudaShardEngine, layers, config, bounds, data, side, **LAUNCH)[0]
    rows = np.arange(4)
    with pytest.raises(ValueError, match="call input_partial on the same rows first"):
        engine.output_partial(rows, 1, np.zeros((4, 6), np.float32), 0.1)
    block = engine.input_partial(rows, 1)
    with pytest.raises(ValueError, match="call input_partial and output_partial"):
        engine.finish_step(rows, np.zeros((4, 6), np.float32), 0.1)
    with pytest.raises(ValueError, match=r"hidden_sum must have shape \(4, 6\)"):
        engine.output_partial(rows, 1, np.zeros((4, 5), np.float32), 0.1)
    bad = _host(block)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="hidden_sum has NaN or infinite values"):
        engine.output_partial(rows, 1, bad, 0.1)
    with pytest.raises(ValueError, match="lr"):
        engine.output_partial(rows, 1, block, -1.0)
    _, grad = engine.output_partial(rows, 1, block, 0.1)
    grad = _host(grad)
    grad[0, 0] = np.inf
    with pytest.raises(ValueError, match="code_grad_sum has NaN or infinite values"):
        engine.finish_step(rows, grad, 0.1)
    with pytest.raises(ValueError, match="the lr of the step's output_partial"):
        engine.finish_step(rows, np.zeros((4, 6), np.float32), 0.2)
    with pytest.raises(TypeError, match="rows"):
        engine.input_partial(np.ones(3, dtype=bool), 1)
    with pytest.raises(ValueError, match="float32 weights"):
        CudaShardEngine(split_layers(layers, bounds)[0], TrainConfig(dtype="bfloat16"), data[0], None)
    with pytest.raises(ValueError, match="parts"):
        CudaShardEngine(split_layers(layers, bounds)[1], config, data[0], None)


# ----------------------------------------------------------------------------- the NCCL communicator
def _fake_nccl(log: list) -> types.ModuleType:
    """A stand-in for cupy.cuda.nccl: an id, communicators that record how they were made and used."""
    nccl = types.ModuleType("fake_nccl")
    nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_SUM = 7, 8, 0
    nccl.get_unique_id = lambda: tuple(range(-64, 64))

    class Comm:
        def __init__(self, ndev, commId, rank):
            log.append(("init", ndev, commId, rank))

        def allReduce(self, send, recv, count, datatype, op, stream):
            log.append(("allReduce", send, recv, count, datatype, op, stream))

        def destroy(self):
            log.append(("destroy",))

    nccl.NcclCommunicator = Comm
    return nccl


def _fake_cupy() -> types.SimpleNamespace:
    class Array:
        def __init__(self, shape, dtype="float32", contiguous=True, device=0, ptr=1000):
            self.shape, self.dtype, self.size = shape, np.dtype(dtype), int(np.prod(shape))
            self.flags = types.SimpleNamespace(c_contiguous=contiguous)
            self.device = types.SimpleNamespace(id=device)
            self.data = types.SimpleNamespace(ptr=ptr)

    class Device:
        def __init__(self, device=None):
            self.id = 0 if device is None else device

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cuda = types.SimpleNamespace(Device=Device, get_current_stream=lambda: types.SimpleNamespace(ptr=55))
    return types.SimpleNamespace(ndarray=Array, cuda=cuda,
                                 empty_like=lambda a: Array(a.shape, a.dtype, ptr=2000))


def test_nccl_handshake_through_a_file_store(tmp_path):
    from cfn_fast.sharding.nccl import FileIdStore, NcclCommunicator
    log: list = []
    nccl, cp = _fake_nccl(log), _fake_cupy()
    store = FileIdStore(tmp_path / "ids")
    made: list = [None] * 3

    def join(rank: int) -> None:
        made[rank] = NcclCommunicator.join(rank, 3, store, "run-1", timeout=30, nccl=nccl, cupy=cp)

    threads = [threading.Thread(target=join, args=(rank,)) for rank in (2, 1, 0)]   # rank 0 last
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    inits = sorted(entry for entry in log if entry[0] == "init")
    assert inits == [("init", 3, tuple(range(-64, 64)), rank) for rank in range(3)]
    assert [c.rank for c in made] == [0, 1, 2] and all(c.size == 3 for c in made)
    from cfn_fast.sharding.communicator import Communicator
    assert all(isinstance(c, Communicator) for c in made)
    # allreduce: the right pointers, count, type, sum and the current stream
    block = cp.ndarray((4, 6))
    total = made[1].allreduce(block)
    assert log[-1] == ("allReduce", 1000, 2000, 24, 7, 0, 55) and total.shape == (4, 6)
    made[1].allreduce(cp.ndarray((2,), "float64"), stream=types.SimpleNamespace(ptr=9))
    assert log[-1][4:] == (8, 0, 9)
    made[1].close()
    assert log[-1] == ("destroy",)
    with pytest.raises(RuntimeError, match="closed"):
        made[1].allreduce(block)


def test_nccl_refusals(tmp_path):
    from cfn_fast.sharding.nccl import FileIdStore, NcclCommunicator, share_unique_id
    nccl, cp = _fake_nccl([]), _fake_cupy()
    uid = tuple(range(128))
    for rank, size, error in ((2, 2, ValueError), (-1, 2, ValueError), (0, 0, ValueError), (True, 2, TypeError),
                              (0, 2.0, TypeError)):
        with pytest.raises(error, match="rank|size"):
            NcclCommunicator(rank, size, uid, nccl=nccl, cupy=cp)
    with pytest.raises(ValueError, match="unique_id must be 128 byte values"):
        NcclCommunicator(0, 2, (1, 2, 3), nccl=nccl, cupy=cp)
    with pytest.raises(TypeError, match="unique_id must be a sequence"):
        NcclCommunicator(0, 2, 5, nccl=nccl, cupy=cp)
    with pytest.raises(ValueError, match="device"):
        NcclCommunicator(0, 2, uid, device=-1, nccl=nccl, cupy=cp)
    comm = NcclCommunicator(0, 2, uid, nccl=nccl, cupy=cp)
    with pytest.raises(TypeError, match="CuPy array"):
        comm.allreduce(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        comm.allreduce(cp.ndarray((3,), "int32"))
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(cp.ndarray((3,), contiguous=False))
    with pytest.raises(ValueError, match="GPU 1"):
        comm.allreduce(cp.ndarray((3,), device=1))
    store = FileIdStore(tmp_path)
    with pytest.raises(TimeoutError, match="no NCCL unique id under 'late'"):
        share_unique_id(1, 2, store, "late", timeout=0.2, nccl=nccl)
    with pytest.raises(ValueError, match="key"):
        store.get("../escape")


def test_importing_the_shard_engines_loads_no_cupy():
    code = ("import sys, cfn_fast, cfn_fast.sharding.nccl, cfn_fast.backends.cuda_shard; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                            cwd=TESTS, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


@needs_gxx
def test_the_gpu_checks_shard_stage_runs_emulated():
    """bench/gpu_check.sh's shard stage (tests/cuda_emulator/shard_check.py) end to end, tiny and emulated."""
    result = subprocess.run([sys.executable, "-m", "cuda_emulator.shard_check", "--emulate", "--seconds", "0.1"],
                            capture_output=True, text=True, env=child_env(), cwd=TESTS, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    agreement, timing = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert agreement["ok"] and agreement["worst"] < 1e-4
    assert timing["steps_timed"] >= 1 and timing["sharded_step_ms"] > 0 and timing["unsharded_step_ms"] > 0


def test_without_nccl_the_binding_says_why():
    pytest.importorskip("cupy", reason="CuPy is not installed")
    from cfn_fast.backends import BackendUnavailable
    from cfn_fast.sharding.nccl import load_nccl
    try:
        nccl = load_nccl()
    except BackendUnavailable as exc:
        assert "NCCL" in str(exc) and "pip install" in str(exc)
    else:                                            # NCCL is here: the names the communicator uses exist
        assert all(hasattr(nccl, n) for n in ("NcclCommunicator", "get_unique_id", "NCCL_FLOAT32", "NCCL_SUM"))
