"""Bad-input rows for the public engine API (cfn_fast.engine); tests/test_bad_input.py runs and renders them."""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from bad_input_case import Case  # tests/bad_input_case.py

from cfn_fast import ModelBusyError, synthetic_ratings
from cfn_fast.engine import (
    Engine,
    ShardData,
    TrainConfig,
    TrainingInputs,
    init_layers,
    make_engine,
    make_shard_engine,
    shard_bounds,
    shard_data,
    split_layers,
    training_inputs,
)


@lru_cache(maxsize=None)
def _inputs() -> TrainingInputs:
    return training_inputs(synthetic_ratings(60, 40, 800, seed=0), "item")   # 40 items x 60 users, 16 features


def _engine() -> Engine:
    inputs = _inputs()
    return make_engine("numpy", init_layers(inputs.n_inputs, (8,), inputs.side_dim, 0), TrainConfig(batch_size=8),
                       inputs.samples, inputs.side)


def _on_engine(call: Callable[[Engine, TrainingInputs], Any]) -> Callable[[], Any]:
    return lambda: call(_engine(), _inputs())


def _column_out_of_range(engine: Engine, inputs: TrainingInputs) -> Any:
    bad = inputs.samples.copy()
    bad.indices[3] = 1_000_000
    return engine.encode(bad, inputs.side)


def _decreasing_indptr() -> Any:
    samples = sp.csr_matrix((np.ones(3, np.float32), np.array([0, 1, 2]), np.array([0, 2, 1, 3])), shape=(3, 60))
    return make_engine("numpy", init_layers(60, (8,), 0, 0), TrainConfig(), samples)


def _twice(engine: Engine, inputs: TrainingInputs) -> Any:
    rows = sp.csr_matrix((np.ones(3, np.float32), np.array([4, 4, 2]), np.array([0, 2, 3])), shape=(2, 60))
    return engine.encode(rows, inputs.side[:2])


def _mask(engine: Engine, inputs: TrainingInputs) -> Any:
    return engine.sgd_step(np.diff(inputs.samples.indptr) > 10, 1, 0.05)


def _shard(positions_offset: int = 0) -> Any:
    """Shard 0 of 2 of the engine's network (data with its global positions moved by ``positions_offset``)."""
    inputs = _inputs()
    bounds = shard_bounds(inputs.n_inputs, 2)
    data = shard_data(inputs.samples, bounds)[0]
    data = ShardData(data.samples, data.positions + positions_offset, data.row_starts, data.first)
    return make_shard_engine("numpy", split_layers(init_layers(inputs.n_inputs, (8,), inputs.side_dim, 0), bounds)[0],
                             TrainConfig(batch_size=8), data, inputs.side)


def _busy(read: bool) -> Callable[[], Any]:
    """A second call on an engine another thread is inside of (held in profiled_epoch's ranges until released)."""
    def run() -> Any:
        engine, inputs = _engine(), _inputs()
        entered, release = threading.Event(), threading.Event()

        class Hold:
            def push(self, name: str) -> None:
                if not entered.is_set():
                    entered.set()
                    release.wait(30)

            def pop(self) -> None:
                pass
        worker = threading.Thread(target=engine.profiled_epoch, args=(1, 0.05, Hold()))
        worker.start()
        entered.wait(30)
        try:
            if read:
                return engine.predict_entries(inputs.samples, inputs.side, [0], [0])
            return engine.sgd_step([0, 1], 1, 0.05)
        finally:
            release.set()
            worker.join()
    return run


CASES: list[Case] = [
    Case("shard data whose global positions run past the training CSR", "make_shard_engine(\"numpy\", part, config, "
         "data_with_positions_moved_by_10000, side)", lambda: _shard(10_000), ValueError,
         "re:data.positions must hold one position in \\[0, 800\\) per entry \\(\\d+ entries\\)",
         shown="data.positions must hold one position in [0, 800) per entry (439 entries)"),
    Case("split step out of order", "shard.output_partial(rows, 1, hidden_sum, 0.05)  # before input_partial",
         lambda: _shard().output_partial([0, 1], 1, np.zeros((2, 8), np.float32), 0.05), ValueError,
         "call input_partial on the same rows first (one step at a time)"),
    Case("engine input CSR with a column index out of range", "engine.encode(inputs_with_column_1000000, side)",
         _on_engine(_column_out_of_range), IndexError,
         "inputs: column indices must lie in [0, 60), got 1000000 in row 0"),
    Case("engine samples CSR whose indptr decreases", "make_engine(\"numpy\", layers, config, samples)",
         _decreasing_indptr, ValueError,
         "samples: indptr must be non-decreasing, got indptr[2] = 1 < indptr[1] = 2"),
    Case("engine input CSR storing an entry twice", "engine.encode(rows_with_row0_column4_twice, side)",
         _on_engine(_twice), ValueError,
         "inputs stores (row 0, column 4) more than once; merge the duplicates (sum_duplicates()) or drop them "
         "first"),
    Case("engine batch_size zero", "TrainConfig(batch_size=0)", lambda: TrainConfig(batch_size=0), ValueError,
         "batch_size must be a positive integer, got 0"),
    Case("engine weight storage type unknown", "TrainConfig(dtype=\"float16\")", lambda: TrainConfig(dtype="float16"),
         ValueError, "dtype must be 'float32' or 'bfloat16', got 'float16'"),
    Case("float rows of a mini-batch", "engine.sgd_step(np.array([1.7, 2.2]), 1, 0.05)",
         _on_engine(lambda e, i: e.sgd_step(np.array([1.7, 2.2]), 1, 0.05)), TypeError,
         "rows must be an integer array of indices, got dtype float64"),
    Case("a boolean mask as the rows of a mini-batch", "engine.sgd_step(mask, 1, 0.05)", _on_engine(_mask), TypeError,
         "rows must be an integer array of indices, got a boolean array (a mask); pass np.flatnonzero(mask)"),
    Case("mini-batch row out of range", "engine.sgd_step([0, 40], 1, 0.05)",
         _on_engine(lambda e, i: e.sgd_step([0, 40], 1, 0.05)), IndexError, "rows must lie in [0, 40), got [40]"),
    Case("epoch 0", "engine.train_epoch(0, 0.05)", _on_engine(lambda e, i: e.train_epoch(0, 0.05)), ValueError,
         "epoch must be an integer >= 1 (epochs are numbered from 1), got 0"),
    Case("negative learning rate for an engine", "engine.train_epoch(1, -0.05)",
         _on_engine(lambda e, i: e.train_epoch(1, -0.05)), ValueError, "lr must be a finite number > 0, got -0.05"),
    Case("restore of something else than a snapshot", "engine.restore(None)",
         _on_engine(lambda e, i: e.restore(None)), TypeError,
         "restore takes a snapshot() of this engine, got NoneType"),
    Case("restore of another engine's snapshot", "engine.restore(other_engine.snapshot())",
         _on_engine(lambda e, i: e.restore(_engine().snapshot())), ValueError,
         "restore takes a snapshot() of this engine; this one was taken from another numpy engine (copy parameters "
         "with set_layers(other.get_layers()))"),
    Case("no side information for an engine built with it", "engine.predict_entries(samples, None, rows, cols)",
         _on_engine(lambda e, i: e.predict_entries(i.samples, None, [0], [0])), ValueError,
         "side is None, but this engine was built with 16 side features: pass side, an array of shape (40, 16)"),
    Case("side information of the wrong width", "engine.encode(samples, side[:, :15])",
         _on_engine(lambda e, i: e.encode(i.samples, i.side[:, :15])), ValueError,
         "side must have shape (40, 16), got (40, 15)"),
    Case("training an engine another thread trains", "engine.sgd_step(rows, 1, 0.05)  # while thread A trains it",
         _busy(read=False), ModelBusyError,
         "this numpy engine is busy: profiled_epoch() is running in another thread; sgd_step() cannot start until it "
         "returns (drive one engine from one thread at a time, or build one engine per thread)"),
    Case("predicting with an engine another thread trains",
         "engine.predict_entries(samples, side, rows, cols)  # while thread A trains it", _busy(read=True),
         ModelBusyError,
         "this numpy engine is busy: profiled_epoch() is running in another thread; predict_entries() would see "
         "half-updated parameters (wait for it to return)"),
]
