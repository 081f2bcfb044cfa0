"""Child process of tests/test_engine_validation.py: engine-API calls that used to kill or hang the interpreter.

``python _engine_child.py SCENARIO`` runs the cases of one scenario on the ``numpy`` and ``cpu`` engines, printing
(and flushing) ``<case>: <outcome>`` per case, the outcome being ``raised <Type>: <message>``, ``ok <detail>`` or
``bad <reason>``.  A crash shows as a negative exit status after the last case printed, a hang as the parent's
timeout.

* ``csr``: a samples x inputs CSR corrupted in place (``index``: a column index far out of range; ``indptr``: a
  decreasing indptr) given to ``make_engine`` + ``train_epoch``, ``predict_entries`` or ``encode``
  (cases ``BACKEND METHOD CORRUPTION``);
* ``threads``: a second thread's training call while the first is inside ``profiled_epoch`` (held in its
  ``ranges`` hook), a reading call then, and 40 unsynchronised epochs from two threads (cases ``BACKEND``);
* ``fork``: the parent trains and predicts on ``cpu`` (an OpenMP team is running), then a child started with the
  ``fork`` start method predicts, trains, exports the layers and runs ``CFN.predict``.
"""
from __future__ import annotations

import multiprocessing
import sys
import threading

import numpy as np

from cfn_fast import CFN, ModelBusyError, available_backends, synthetic_ratings
from cfn_fast.engine import TrainConfig, init_layers, make_engine, training_inputs

BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
TRAIN = synthetic_ratings(60, 40, 800, seed=0)
INPUTS = training_inputs(TRAIN, "item")


def engine(backend: str, samples=None, **options):
    layers = init_layers(INPUTS.n_inputs, (8,), INPUTS.side_dim, 0)
    return make_engine(backend, layers, TrainConfig(batch_size=8), INPUTS.samples if samples is None else samples,
                       INPUTS.side, **options)


def corrupted(kind: str):
    bad = INPUTS.samples.copy()
    if kind == "index":
        bad.indices[3] = 10**6
    else:
        bad.indptr[5] = bad.indptr[7] + 3
    return bad


def csr(backend: str, method: str, kind: str) -> str:
    if method == "train_epoch":
        return str(engine(backend, corrupted(kind)).train_epoch(1, 0.05))
    e = engine(backend)
    if method == "predict_entries":
        return str(e.predict_entries(corrupted(kind), INPUTS.side, np.arange(8), np.arange(8)).sum())
    return str(e.encode(corrupted(kind), INPUTS.side).sum())


class Hold:
    """NVTX-like ranges whose first push waits until released: the engine is held inside profiled_epoch."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def push(self, name: str) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)

    def pop(self) -> None:
        pass


def threads(backend: str) -> str:
    e = engine(backend, **({"threads": 2} if backend == "cpu" else {}))
    hold = Hold()
    worker = threading.Thread(target=e.profiled_epoch, args=(1, 0.05, hold))
    worker.start()
    hold.entered.wait(30)
    refused = []
    for call in (lambda: e.train_epoch(2, 0.05), lambda: e.sgd_step(np.arange(4), 2, 0.05),
                 lambda: e.predict_entries(INPUTS.samples, INPUTS.side, np.arange(3), np.arange(3))):
        try:
            call()
        except ModelBusyError as exc:
            refused.append(str(exc))
    hold.release.set()
    worker.join(30)
    outcomes: list[str] = []

    def train() -> None:
        for epoch in range(1, 21):
            try:
                e.train_epoch(epoch, 0.05)
                outcomes.append("trained")
            except ModelBusyError:
                outcomes.append("busy")
    pair = [threading.Thread(target=train) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(60)
    finite = bool(np.isfinite(e.max_abs_param()))
    if len(refused) != 3 or len(outcomes) != 40 or not finite:
        return f"bad refused {len(refused)} of 3, {len(outcomes)} outcomes, finite {finite}"
    return f"ok {refused[0]} | {outcomes.count('busy')} busy of 40"


def _forked(e, model, queue) -> None:
    out = e.predict_entries(INPUTS.samples, INPUTS.side, np.arange(8), np.arange(8))
    loss = e.train_epoch(2, 0.05)
    layers = e.get_layers()
    queue.put((out, loss, layers[0].weight.shape, model.predict(TRAIN.user_ids[:5], TRAIN.item_ids[:5])))


def fork() -> str:
    e = engine("cpu", threads=2)
    e.train_epoch(1, 0.05)
    model = CFN("item", (8,), 1, backend="cpu").fit(TRAIN)
    expected = e.predict_entries(INPUTS.samples, INPUTS.side, np.arange(8), np.arange(8))
    predicted = model.predict(TRAIN.user_ids[:5], TRAIN.item_ids[:5])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forked, args=(e, model, queue))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        return "bad the forked child hung"
    if child.exitcode != 0:
        return f"bad the forked child exited with {child.exitcode}"
    out, loss, shape, child_predicted = queue.get(timeout=10)
    same = np.array_equal(out, expected) and np.array_equal(child_predicted, predicted)
    return f"ok same {same} loss {loss:.4f}" if same else "bad the forked child predicted something else"


CASES = {"csr": [(b, m, k) for b in BACKENDS for m in ("train_epoch", "predict_entries", "encode")
                 for k in ("index", "indptr")],
         "threads": [(b,) for b in BACKENDS],
         "fork": [("cpu",)] if "cpu" in BACKENDS else []}


def main(scenario: str) -> None:
    run = {"csr": csr, "threads": threads, "fork": lambda backend: fork()}[scenario]
    for case in CASES[scenario]:
        print(" ".join(case), end=": ", flush=True)   # the case that killed the process is on the last line
        try:
            line = run(*case)
        except Exception as exc:
            line = f"raised {type(exc).__name__}: {exc}"
        print(line, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
