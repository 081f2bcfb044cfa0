"""Micro cases: one stage of the training step, or of inference, on a fixed shape, per backend.

Shape: I-CFN on the synthetic default (2000 users x 1000 items, 100k ratings), 600 hidden units,
one mini-batch of 35 items, no side information.  Stages (names of the issue in brackets):

* numpy (the reference, dense): ``batch_setup`` [batch set-up], ``forward`` [sparse encode, hidden
  activation, sampled output: dense here], ``loss``, ``backward`` [hidden delta], ``update``
  [scatter/update, weight decay];
* cpu (Cython, the engine's public hook ``CpuEngine.run_stage``): ``batch_setup`` [batch set-up], ``encode`` [sparse
  encode + hidden activation, fused], ``output`` [sampled output + hidden delta + output scatter,
  fused], ``input_update`` [sparse scatter/update of the input layer], ``fold`` [weight-decay fold];
* cuda: ``step`` (one whole mini-batch, synchronised; the per-kernel split is in
  ``CFN(profile=True)`` and Nsight Systems) and ``fold`` (``CudaEngine.run_stage``);
* every backend: ``predict_pairs`` (10k (user, item) pairs) and ``top_n`` (top 10 of 200 users).
"""
from __future__ import annotations

import numpy as np
import pytest

from cfn_fast.tools.benchsuite import workloads as W
from cfn_fast.tools.benchsuite.plugin import record, require

pytestmark = pytest.mark.micro

BATCH = 35
STAGES = {"numpy": ("batch_setup", "forward", "loss", "backward", "update"),
          "cpu": ("batch_setup", "encode", "output", "input_update", "fold"),
          "cuda": ("step", "fold")}


@pytest.fixture(scope="module")
def fitted():
    """One model per backend, trained 1 epoch on the synthetic default (built once per module)."""
    cache: dict[str, object] = {}

    def get(backend: str):
        if backend not in cache:
            cache[backend] = W.model("item", W.MICRO_HIDDEN, 1, backend).fit(W.ratings("synthetic"))
        return cache[backend]
    return get


def rounds(quick: bool) -> int:
    return 1 if W.SMOKE else 5 if quick else 20


def _stage_bytes(stage: str, inputs, rows: np.ndarray, hidden: int) -> int:
    """Estimated minimal bytes of one call of a training stage (see workloads)."""
    sub = inputs[rows]
    distinct, nnz, n_inputs = len(np.unique(sub.indices)), sub.nnz, inputs.shape[1]
    row_bytes = 4 * hidden
    return {"batch_setup": 8 * nnz + 17 * nnz,
            "encode": distinct * row_bytes + len(rows) * row_bytes,
            "output": 2 * distinct * (row_bytes + 4) + 2 * len(rows) * row_bytes,
            "input_update": 2 * distinct * row_bytes,
            "fold": 2 * n_inputs * (2 * row_bytes + 4),
            "step": 2 * distinct * (2 * row_bytes + 4) + 8 * nnz,
            # the dense reference touches every input column of the batch
            "forward": 2 * n_inputs * row_bytes + len(rows) * n_inputs * 8,
            "loss": 4 * 4 * len(rows) * n_inputs,
            "backward": 2 * n_inputs * row_bytes + len(rows) * n_inputs * 8,
            "update": 4 * n_inputs * row_bytes,
            }[stage]


def _stage_call(model, backend: str, stage: str, rows: np.ndarray):
    """A callable running ``stage`` once on the mini-batch ``rows`` (after a priming step)."""
    engine = model.engine_
    lr, epoch = 0.01, 2
    if backend == "cpu":
        engine.sgd_step(rows, epoch, lr)          # leaves the buffers run_stage re-runs a stage on
        return lambda: engine.run_stage(stage, rows, epoch, lr)
    if backend == "cuda":
        if stage == "fold":
            return lambda: engine.run_stage("fold", rows, epoch, lr)    # synchronised

        def step():
            engine.sgd_step(rows, epoch, lr)      # returns the loss: synchronises
        return step
    from cfn_fast.backends import numpy_backend as nb
    from cfn_fast.corruption import epoch_key
    cfg = engine.config
    X, known, hidden = nb.corrupted_batch(engine.samples, rows, epoch_key(cfg.seed, epoch), engine.threshold)
    inputs = np.where(known & ~hidden, X, np.float32(0.0))
    acts = nb.forward(engine.layers, inputs, None)
    loss, out_grad = nb.reconstruction_loss(acts[-1], X, known, hidden, cfg.alpha, cfg.beta)
    grads = nb.backward(engine.layers, acts, None, out_grad)
    return {"batch_setup": lambda: nb.corrupted_batch(engine.samples, rows, epoch_key(cfg.seed, epoch),
                                                      engine.threshold),
            "forward": lambda: nb.forward(engine.layers, inputs, None),
            "loss": lambda: nb.reconstruction_loss(acts[-1], X, known, hidden, cfg.alpha, cfg.beta),
            "backward": lambda: nb.backward(engine.layers, acts, None, out_grad),
            "update": lambda: nb.sgd_update(engine.layers, grads, 0.0, len(rows), 0.0)}[stage]


def _repeated(fn, times: int):
    if times == 1:
        return fn

    def slowed():
        for _ in range(times):
            fn()
    return slowed


@pytest.mark.parametrize("backend, stage", [pytest.param(b, s, id=f"{b}-{s}")
                                            for b, stages in STAGES.items() for s in stages])
def test_stage(benchmark, backend, stage, fitted, quick):
    require(backend)
    model = fitted(backend)
    rows = np.arange(BATCH, dtype=np.int64) * 7 % model.inputs_.shape[0]
    rows = np.unique(rows)
    call = _repeated(_stage_call(model, backend, stage, rows), W.slowdown(stage))
    benchmark.group = f"micro-{stage}"
    benchmark.pedantic(call, rounds=rounds(quick), iterations=1, warmup_rounds=0 if W.SMOKE else 1)
    record(benchmark, backend=backend, case=f"micro {stage}",
           bytes_moved=_stage_bytes(stage, model.inputs_, rows, W.MICRO_HIDDEN),
           batch=len(rows), hidden=W.MICRO_HIDDEN, n_inputs=model.inputs_.shape[1],
           batch_nnz=int(model.inputs_[rows].nnz))


def test_predict_pairs(benchmark, backend, fitted, quick):
    model = fitted(backend)
    rng = np.random.default_rng(0)
    n_users, n_items = model.train_.n_users, model.train_.n_items
    users, items = rng.integers(0, n_users, 10_000), rng.integers(0, n_items, 10_000)
    call = _repeated(lambda: model.predict_indices(users, items), W.slowdown("predict_pairs"))
    benchmark.group = "micro-predict_pairs"
    benchmark.pedantic(call, rounds=rounds(quick), iterations=1, warmup_rounds=0 if W.SMOKE else 1)
    # each distinct item's code (hidden floats) and the output rows of its pairs
    record(benchmark, backend=backend, case="micro predict_pairs",
           bytes_moved=4 * W.MICRO_HIDDEN * (len(np.unique(items)) + len(users)) + 24 * len(users),
           pairs=len(users), hidden=W.MICRO_HIDDEN)


def test_top_n(benchmark, backend, fitted, quick):
    model = fitted(backend)
    users = model.train_.user_ids[:200]
    call = _repeated(lambda: model.recommend_batch(users, n=10), W.slowdown("top_n"))
    benchmark.group = "micro-top_n"
    benchmark.pedantic(call, rounds=rounds(quick), iterations=1, warmup_rounds=0 if W.SMOKE else 1)
    n_items = model.train_.n_items
    # I-CFN: all item codes and the 200 users' output rows, the 200 x n_items score matrix
    record(benchmark, backend=backend, case="micro top_n",
           bytes_moved=4 * W.MICRO_HIDDEN * (n_items + len(users)) + 4 * len(users) * n_items,
           users=len(users), n=10, n_items=n_items, hidden=W.MICRO_HIDDEN)
