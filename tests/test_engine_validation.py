"""The engine API checks its arguments before any kernel runs, refuses concurrent training, and works after fork
(issue 21, "The public engine API").  Calls that used to kill or hang the interpreter run in a child process
(tests/_engine_child.py) so that this suite survives them."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from children import TESTS, child_env  # tests/children.py

import cfn_fast
from cfn_fast import available_backends, synthetic_ratings
from cfn_fast.engine import TrainConfig, init_layers, make_engine, minibatches, training_inputs

BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
TRAIN = synthetic_ratings(60, 40, 800, seed=0)
INPUTS = training_inputs(TRAIN, "item")


def engine(backend: str, **config):
    return make_engine(backend, init_layers(INPUTS.n_inputs, (8,), INPUTS.side_dim, 0),
                       TrainConfig(batch_size=8, **config), INPUTS.samples, INPUTS.side)


_OUTCOMES: dict[str, tuple[dict[str, str], str]] = {}


def child(scenario: str, case: str) -> str:
    """What ``tests/_engine_child.py SCENARIO`` printed for ``case`` (the child runs once per scenario); fails
    naming the signal and the case when the child died or hung."""
    if scenario not in _OUTCOMES:
        try:
            proc = subprocess.run([sys.executable, str(TESTS / "_engine_child.py"), scenario], capture_output=True,
                                  text=True, timeout=240, env=child_env(OMP_NUM_THREADS="2"), cwd=TESTS)
            out, code = proc.stdout, proc.returncode
            death = (f"was killed by {signal.Signals(-code).name}" if code < 0
                     else f"exited {code}: {proc.stderr[-500:]}")
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            death = "hung (no result in 240 s)"
        lines = [line.split(": ", 1) for line in out.splitlines()]
        if lines and (len(lines[-1]) < 2 or not lines[-1][1]):   # printed, never finished: the case it died in
            death += f" in case {lines[-1][0].rstrip(':')!r}"
        _OUTCOMES[scenario] = ({parts[0]: parts[1] for parts in lines if len(parts) == 2 and parts[1]}, death)
    outcomes, death = _OUTCOMES[scenario]
    if case not in outcomes:
        pytest.fail(f"no outcome for case {case!r}: the {scenario!r} child process {death}")
    return outcomes[case]


# ----------------------------------------------------------------------------- CSR structure and index ranges
@pytest.mark.parametrize("method", ["train_epoch", "predict_entries", "encode"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_index_out_of_range_is_refused_not_a_crash(backend, method):
    what = "samples" if method == "train_epoch" else "inputs"
    assert child("csr", f"{backend} {method} index") == \
        f"raised IndexError: {what}: column indices must lie in [0, 60), got 1000000 in row 0"


@pytest.mark.parametrize("method", ["train_epoch", "predict_entries", "encode"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_decreasing_indptr_is_refused_not_a_crash(backend, method):
    line = child("csr", f"{backend} {method} indptr")
    assert line.startswith("raised ValueError: ") and "indptr must be non-decreasing" in line, line


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_csr_damage_is_named(backend):
    e = engine(backend)
    rows, cols = np.arange(4), np.arange(4)
    nan = INPUTS.samples.copy()
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match="inputs contains NaN or infinite values"):
        e.encode(nan, INPUTS.side)
    twice = sp.csr_matrix((np.ones(3, np.float32), np.array([4, 4, 2]), np.array([0, 2, 3])), shape=(2, 60))
    with pytest.raises(ValueError, match=r"inputs stores \(row 0, column 4\) more than once"):
        e.encode(twice, INPUTS.side[:2])
    with pytest.raises(ValueError, match="inputs must have 60 columns"):
        e.predict_entries(INPUTS.samples[:, :50], INPUTS.side, rows, cols)
    with pytest.raises(TypeError, match="inputs must be a SciPy sparse matrix, got ndarray"):
        e.encode(INPUTS.samples.toarray(), INPUTS.side)
    coo = INPUTS.samples.tocoo(copy=True)   # not a view: the test must not damage INPUTS
    coo.col[2] = -1
    with pytest.raises(IndexError, match=r"inputs: column indices must lie in \[0, 60\), got -1"):
        e.encode(coo, INPUTS.side)
    assert np.array_equal(e.encode(INPUTS.samples.tocsc(), INPUTS.side), e.encode(INPUTS.samples, INPUTS.side))


# ----------------------------------------------------------------------------- batch_size, rows, epoch, lr
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_batch_size_below_one_is_refused_when_the_config_is_built(bad):
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad!r}"):
        TrainConfig(batch_size=bad)


def test_every_step_setting_is_checked_as_the_estimator_checks_it():
    for name, bad, expected in (("alpha", -1.0, "a finite number >= 0"), ("mask_ratio", 1.0, "a number in [0, 1)"),
                                ("weight_decay", float("nan"), "a finite number >= 0"),
                                ("seed", -1, "an integer >= 0")):
        with pytest.raises(ValueError, match=f"{name} must be {expected}".replace("[", r"\[").replace(")", r"\)")):
            TrainConfig(**{name: bad})
    with pytest.raises(ValueError, match="alpha \\+ beta must be > 0"):
        TrainConfig(alpha=0.0, beta=0.0)
    assert TrainConfig(batch_size=np.int64(7), alpha=np.float32(1)) == TrainConfig(batch_size=7, alpha=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_rows_are_refused_not_truncated(backend):
    e = engine(backend)
    with pytest.raises(TypeError, match="rows must be an integer array of indices, got dtype float64"):
        e.sgd_step(np.array([1.7, 2.2]), 1, 0.05)
    with pytest.raises(TypeError, match="rows must be an integer array"):
        e.predict_entries(INPUTS.samples, INPUTS.side, np.array([1.0]), np.array([2]))
    with pytest.raises(TypeError, match="cols must be an integer array"):
        e.predict_entries(INPUTS.samples, INPUTS.side, np.array([1]), np.array([2.0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_boolean_mask_rows_are_refused_not_read_as_indices(backend):
    e = engine(backend)
    mask = np.zeros(INPUTS.samples.shape[0], bool)
    mask[[3, 9]] = True
    with pytest.raises(TypeError, match=r"rows must be an integer array of indices, got a boolean array \(a mask\)"):
        e.sgd_step(mask, 1, 0.05)
    with pytest.raises(TypeError, match="rows must be an integer array"):
        e.gradients(mask, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_out_of_range_and_empty_batches(backend):
    e = engine(backend)
    n = INPUTS.samples.shape[0]
    with pytest.raises(IndexError, match=rf"rows must lie in \[0, {n}\), got \[{n}\]"):
        e.sgd_step(np.array([0, n]), 1, 0.05)
    with pytest.raises(IndexError, match=r"got \[18446744073709551615\]"):   # no wrap to -1 through int64
        e.sgd_step(np.array([2**64 - 1], np.uint64), 1, 0.05)
    with pytest.raises(ValueError, match="rows must be a non-empty array"):
        e.gradients(np.array([], np.int64), 1)
    assert e.predict_entries(INPUTS.samples, INPUTS.side, [], []).shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("epoch", [0, -5, 1.5, True, 2**64])
def test_epoch_must_be_an_integer_from_one(backend, epoch):
    e = engine(backend)
    expected = r"epoch must be an integer (>= 1 \(epochs are numbered from 1\)|below 2\*\*63)"
    with pytest.raises(ValueError, match=expected):
        e.train_epoch(epoch, 0.05)
    with pytest.raises(ValueError, match="epoch must be an integer"):
        e.sgd_step(np.arange(3), epoch, 0.05)
    with pytest.raises(ValueError, match="epoch must be an integer"):
        minibatches(e, epoch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_is_checked_like_the_estimators(backend):
    e = engine(backend, weight_decay=0.05)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "fast", None):
        with pytest.raises(ValueError, match=f"lr must be a finite number > 0, got {bad!r}"):
            e.train_epoch(1, bad)
    with pytest.raises(ValueError, match=r"lr \* weight_decay must be < 1"):
        e.sgd_step(np.arange(3), 1, 20.0)


# ----------------------------------------------------------------------------- restore
@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_takes_only_a_snapshot_of_this_engine(backend):
    e, other = engine(backend), engine(backend)
    before = e.get_layers()
    snapshot = e.snapshot()
    e.train_epoch(1, 0.05)
    for garbage in (None, 3, "snapshot", before):
        with pytest.raises(TypeError, match=f"restore takes a snapshot\\(\\) of this engine, got "
                                            f"{type(garbage).__name__}"):
            e.restore(garbage)
    with pytest.raises(ValueError, match="restore takes a snapshot\\(\\) of this engine; this one was taken from "
                                         f"another {backend} engine"):
        e.restore(other.snapshot())
    e.restore(snapshot)
    assert all(np.array_equal(a, b) for la, lb in zip(e.get_layers(), before) for a, b in zip(la.arrays(), lb.arrays()))


# ----------------------------------------------------------------------------- side information
@pytest.mark.parametrize("backend", BACKENDS)
def test_side_none_on_an_engine_built_with_side_information_is_refused(backend):
    e = engine(backend)
    message = r"side is None, but this engine was built with 16 side features: pass side, an array of shape \(40, 16\)"
    with pytest.raises(ValueError, match=message):
        e.predict_entries(INPUTS.samples, None, np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match=message):
        e.encode(INPUTS.samples, None)
    codes = e.encode(INPUTS.samples, INPUTS.side)
    with pytest.raises(ValueError, match="side is None, but this engine was built with 16 side features"):
        e.decode(codes, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_side_of_the_wrong_shape_is_refused(backend):
    e = engine(backend)
    with pytest.raises(ValueError, match=r"side must have shape \(40, 16\), got \(40, 15\)"):
        e.encode(INPUTS.samples, INPUTS.side[:, :15])
    with pytest.raises(ValueError, match=r"side must have shape \(40, n_features\)"):
        e.predict_entries(INPUTS.samples, INPUTS.side[:30], np.arange(3), np.arange(3))
    plain = make_engine(backend, init_layers(INPUTS.n_inputs, (8,), 0, 0), TrainConfig(), INPUTS.samples)
    with pytest.raises(ValueError, match="side given, but this engine was built without side information"):
        plain.encode(INPUTS.samples, INPUTS.side)


# ----------------------------------------------------------------------------- one training at a time
def test_model_busy_error_is_one_class_for_engines_and_estimators():
    from cfn_fast.model import ModelBusyError as estimator_error
    assert cfn_fast.engine.ModelBusyError is cfn_fast.ModelBusyError is estimator_error
    assert "ModelBusyError" in cfn_fast.engine.__all__


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_training_one_engine_are_refused_not_a_crash(backend):
    line = child("threads", backend)
    assert line.startswith(f"ok this {backend} engine is busy: profiled_epoch() is running in another thread; "
                           f"train_epoch() cannot start until it returns"), line


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_calls_run_together(backend):
    e = engine(backend)
    e.train_epoch(1, 0.05)
    expected = e.encode(INPUTS.samples, INPUTS.side)
    barrier, results = threading.Barrier(4), []

    def read() -> None:
        barrier.wait()
        results.append(e.encode(INPUTS.samples, INPUTS.side))
    workers = [threading.Thread(target=read) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)


# ----------------------------------------------------------------------------- fork
@pytest.mark.skipif(sys.platform == "win32" or "cpu" not in BACKENDS, reason="fork and the cpu kernels needed")
def test_cpu_engine_and_model_work_in_a_child_forked_after_openmp_ran():
    line = child("fork", "cpu")
    assert line.startswith("ok same True"), line


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_numpy_encode_chunk_must_be_a_positive_integer(chunk):
    """``chunk=-1`` used to skip every pass and return uninitialised memory as the codes."""
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        engine("numpy").encode(INPUTS.samples, INPUTS.side, chunk=chunk)
