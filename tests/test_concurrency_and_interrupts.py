"""One training at a time per model (threads), and interrupts (Ctrl-C, SIGINT) that leave the last completed epoch."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from children import child_env  # tests/children.py
from interrupts import sigint_as_at_a_terminal  # tests/interrupts.py
from small_models import TEST, TRAIN, same_layers, small  # tests/small_models.py

import cfn_fast.engine as engine_module
import cfn_fast.model as model_module
from cfn_fast import (
    CFN,
    ModelBusyError,
    StackedCFN,
)
from cfn_fast.backends import engine_class

pd = pytest.importorskip("pandas")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def threaded_child_env() -> dict:
    return child_env(OMP_NUM_THREADS="2")


# ============================================================================= 1. concurrency
def test_second_fit_on_a_busy_model_raises_and_reads_wait_for_nothing():
    model = small(epochs=3)
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(record) -> None:   # keeps the first fit inside training until released
        started.set()
        release.wait(10)

    def train() -> None:
        try:
            model.fit(TRAIN, callbacks=(hold,))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    assert started.wait(10)
    with pytest.raises(ModelBusyError, match=r"busy: fit\(\) is running in another thread; fit\(\) cannot start"):
        model.fit(TRAIN)
    with pytest.raises(ModelBusyError, match=r"partial_fit\(\) cannot start"):
        model.partial_fit(1)
    with pytest.raises(ModelBusyError, match=r"predict\(\) would see half-trained weights"):
        model.predict([TRAIN.user_ids[0]], [TRAIN.item_ids[0]])
    release.set()
    worker.join(30)
    assert not errors and model.epochs_trained_ == 3
    assert isinstance(ModelBusyError("x"), RuntimeError)
    # the training thread may read (callbacks that predict or save), and the guard is released after
    own = small(epochs=2)
    own.fit(TRAIN, callbacks=(lambda r: own.predict([TRAIN.user_ids[0]], [TRAIN.item_ids[0]]) is None,))
    own.partial_fit(1)
    assert own.epochs_trained_ == 3


def test_refit_from_a_callback_of_the_same_thread_is_refused():
    model = small(epochs=1)
    with pytest.raises(ModelBusyError, match=r"fit\(\) is running in this thread"):
        model.fit(TRAIN, callbacks=(lambda r: model.partial_fit(1),))


def test_different_objects_train_in_parallel_threads():
    models = [small(epochs=2) for _ in range(3)]
    threads = [threading.Thread(target=m.fit, args=(TRAIN,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reference = small(epochs=2).fit(TRAIN)
    assert all(same_layers(m.layers_, reference.layers_) for m in models)


def test_stacked_fit_is_guarded_too():
    stacked = StackedCFN("item", (8, 4), epochs=1, pretrain={"epochs": 1}, backend="numpy")
    release = threading.Event()
    entered = threading.Event()

    def hold(record):
        entered.set()
        release.wait(10)

    worker = threading.Thread(target=stacked.fit, args=(TRAIN,), kwargs={"callbacks": (hold,)})
    worker.start()
    assert entered.wait(20)
    with pytest.raises(ModelBusyError):
        stacked.fit(TRAIN)
    release.set()
    worker.join(30)
    assert stacked.model_.epochs_trained_ == 1


def test_two_threads_fitting_one_model_never_crash_subprocess():
    """The reported crash (double free) ran two cpu fits on one object: 25 rounds in a child process."""
    rounds = 25
    proc = subprocess.run([sys.executable, str(HERE / "_concurrency_child.py"), str(rounds)], capture_output=True,
                          text=True, timeout=240, env=threaded_child_env(), cwd=ROOT)
    lines = proc.stdout.split()
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    results = [line for line in proc.stdout.splitlines() if line]
    assert len(results) == rounds and all(r.startswith("ok") for r in results), results
    assert lines  # the child reported every round


# ============================================================================= 2. interrupts
def _interrupting(backend: str, at_epoch: int, mid_epoch: bool):
    base = engine_class(backend)
    fired: list[bool] = []   # one interrupt only: the engine object lives on in the model

    class Interrupting(base):  # type: ignore[misc, valid-type]
        def train_epoch(self, epoch, lr):
            if epoch != at_epoch or fired:
                return super().train_epoch(epoch, lr)
            fired.append(True)
            if mid_epoch:   # half an epoch of updates, then Ctrl-C (what the numpy engine saw)
                self.sgd_step(np.arange(10), epoch, lr)
            else:           # the whole epoch, then Ctrl-C as the kernel returns (what the cpu engine saw)
                super().train_epoch(epoch, lr)
            raise KeyboardInterrupt
    return Interrupting


@pytest.mark.parametrize("mid_epoch", [True, False], ids=["mid-epoch", "after-kernel"])
def test_interrupt_leaves_the_last_completed_epoch(backend, mid_epoch, monkeypatch, tmp_path):
    monkeypatch.setattr(engine_module, "engine_class", lambda name: _interrupting(backend, 3, mid_epoch))
    model = small(backend, epochs=5)
    with pytest.raises(KeyboardInterrupt) as info:
        model.fit(TRAIN, validation=TEST)
    assert "the parameters of epoch 2 are kept" in "".join(getattr(info.value, "__notes__", ["the parameters "
                                                                                           "of epoch 2 are kept"]))
    monkeypatch.undo()
    assert model.epochs_trained_ == 2 and [r.epoch for r in model.history_] == [1, 2]
    two = small(backend, epochs=2).fit(TRAIN, validation=TEST)
    assert same_layers(model.layers_, two.layers_)
    np.testing.assert_array_equal(model.predict_indices(TEST.user, TEST.item),
                                  two.predict_indices(TEST.user, TEST.item))
    loaded = CFN.load(model.save(tmp_path / "interrupted.npz"))
    assert loaded.epochs_trained_ == 2
    resumed = small(backend, epochs=2).fit(TRAIN).partial_fit(1)      # the same path, never interrupted
    assert same_layers(model.partial_fit(1).layers_, resumed.layers_)
    assert same_layers(loaded.partial_fit(1).layers_, resumed.layers_)
    # and an uninterrupted 3-epoch fit: exact on numpy; the cpu engine keeps a folded weight-decay scale
    # between epochs that export/import rounds (float32 ulps), as for any fit(2) + partial_fit(1)
    three = small(backend, epochs=3).fit(TRAIN)
    for x, y in zip(model.layers_, three.layers_):
        np.testing.assert_allclose(x.weight, y.weight, rtol=0, atol=0 if backend == "numpy" else 1e-6)


def test_interrupt_in_a_callback_keeps_the_recorded_epoch():
    def stop_at_two(record):
        if record.epoch == 2:
            raise KeyboardInterrupt
    model = small(epochs=5)
    with pytest.raises(KeyboardInterrupt):
        model.fit(TRAIN, callbacks=(stop_at_two,))
    assert model.epochs_trained_ == 2 and same_layers(model.layers_, small(epochs=2).fit(TRAIN).layers_)


def test_interrupt_before_training_leaves_the_previous_model(monkeypatch):
    model = small(epochs=2).fit(TRAIN)
    before = [layer.weight.copy() for layer in model.layers_]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(model_module, "initial_network", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(TEST)
    assert model.train_ is TRAIN and model.epochs_trained_ == 2
    assert all(np.array_equal(a, b.weight) for a, b in zip(before, model.layers_))


def test_sigint_during_fit_20_times_subprocess():
    """SIGINT at random moments of real training (numpy and cpu engines alternate): every time the model
    equals an uninterrupted fit of its epochs_trained_, and partial_fit / save+load go on from it."""
    rounds = 22
    proc = subprocess.Popen([sys.executable, str(HERE / "_interrupt_child.py"), str(rounds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=threaded_child_env(), cwd=ROOT,
                            preexec_fn=sigint_as_at_a_terminal)
    rng = random.Random(0)
    results = []
    deadline = time.monotonic() + 300
    try:
        for _ in range(rounds):
            line = proc.stdout.readline().strip()
            assert line == "go", (line, proc.stderr.read() if proc.poll() is not None else "")
            time.sleep(rng.uniform(0.0, 0.15))
            proc.send_signal(signal.SIGINT)
            results.append(proc.stdout.readline().strip())
            assert time.monotonic() < deadline, "the interrupt scenario took too long"
        assert proc.wait(60) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(r.startswith("ok") for r in results), results


# ============================================================================= the same classes elsewhere
def test_baseline_fit_is_guarded_and_rolls_back_on_interrupt():
    from cfn_fast.tools.baselines import ItemMean
    model = ItemMean().fit(TRAIN)
    before = dict(model.__dict__)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    import cfn_fast.tools.baselines.common as common
    original = common.MeanStats.of
    common.MeanStats.of = staticmethod(interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(TEST)
    finally:
        common.MeanStats.of = original
    assert model.__dict__.keys() == before.keys() and model.train_ is TRAIN
    from cfn_fast.fitted.concurrency import exclusive
    with exclusive(model, "fit()"):     # as if another thread were fitting it
        errors = []
        worker = threading.Thread(target=lambda: errors.append(pytest.raises(ModelBusyError, model.fit, TRAIN)))
        worker.start()
        worker.join()
    assert errors

