"""Macro cases: 1 and 20 epochs of I-CFN and U-CFN (one hidden layer, no side information).

Data: the synthetic default (600 hidden), MovieLens-1M from the shared data folder (skipped when
absent) and the ML-10M shape (synthetic, 69,878 x 10,677, 10M ratings; cuda, or cpu with
``--cfn-slow``), the last two with Table 3's 700 hidden units.  Each round trains a fresh model
(built untimed) through ``partial_fit`` with the library's per-kind defaults.  The numpy reference
runs 1 epoch of the synthetic default only (it is dense: ML-1M takes it minutes per epoch).
``test_training_bf16``: the ML-1M cases again with ``CFN(dtype="bfloat16")`` (skipped, with the reason,
while CFN has no ``dtype`` parameter).
"""
from __future__ import annotations

import pytest

from cfn_fast.tools.benchsuite import workloads as W
from cfn_fast.tools.benchsuite.plugin import machine_bandwidth, record

pytestmark = pytest.mark.macro


def _rounds(epochs: int, data: str, quick: bool, backend: str) -> int:
    if data == "ml-10m-shape" or W.SMOKE:
        return 1
    if epochs == 20 or backend == "numpy":
        return 1 if quick else 3
    return 2 if quick else 5


@pytest.mark.parametrize("epochs", [1, 20])
@pytest.mark.parametrize("kind", ["item", "user"])
@pytest.mark.parametrize("data", ["synthetic", "ml-1m", "ml-10m-shape"])
def test_training(benchmark, backend, data, kind, epochs, quick, slow):
    _train(benchmark, backend, data, kind, epochs, quick, slow, "float32")


@pytest.mark.parametrize("epochs", [1, 20])
@pytest.mark.parametrize("kind", ["item", "user"])
def test_training_bf16(benchmark, backend, kind, epochs, quick, slow):
    """ML-1M I-CFN and U-CFN with ``CFN(dtype="bfloat16")``: the four per-input arrays stored in 2 bytes
    (the bytes model counts them so); skipped while this cfn_fast's CFN has no ``dtype``."""
    if not W.dtype_supported():
        pytest.skip("CFN has no dtype parameter in this cfn_fast: the bfloat16 cases run once it has")
    _train(benchmark, backend, "ml-1m", kind, epochs, quick, slow, "bfloat16")


def _train(benchmark, backend, data, kind, epochs, quick, slow, dtype):
    if backend == "numpy" and data != "synthetic":
        pytest.skip("the dense reference runs the synthetic default only")
    if backend == "numpy" and (epochs == 20 or quick):
        pytest.skip("the dense reference runs 1 epoch only (20 take minutes), and not with --cfn-quick")
    if quick and epochs == 20 and data != "synthetic":
        pytest.skip("--cfn-quick: 20-epoch runs on the synthetic default only")
    if data == "ml-10m-shape" and not (backend == "cuda" or (backend == "cpu" and (slow or W.SMOKE))):
        pytest.skip("the ML-10M shape runs on cuda, or on cpu with --cfn-slow")
    if W.ratings(data) is None:
        pytest.skip(f"{data} is not in {W.DATA_DIR}")
    spec = W.DATASETS[data]
    hidden = spec.hidden

    def setup():
        return (W.prepared(kind, data, hidden, backend, dtype),), {}

    def train(model):
        model.partial_fit(epochs)
        if backend == "cuda":
            model.engine_.stream.synchronize()

    bf16 = dtype == "bfloat16"
    benchmark.group = f"macro-{data}-{kind}-{epochs}ep" + ("-bf16" if bf16 else "")
    benchmark.pedantic(train, setup=setup, rounds=_rounds(epochs, data, quick, backend), iterations=1)
    probe = W.prepared(kind, data, hidden, backend, dtype)
    per_epoch = W.epoch_bytes(probe.inputs_, hidden, 0, probe.resolved_params()["batch_size"], W.WEIGHT_BYTES[dtype])
    ratings = probe.inputs_.nnz
    floor = epochs * per_epoch / (machine_bandwidth() * 1e9)
    record(benchmark, backend=backend,
           case=f"{'I' if kind == 'item' else 'U'}-CFN {data} {epochs} ep" + (" bf16" if bf16 else ""),
           bytes_moved=epochs * per_epoch, ratings_epochs=epochs * ratings,
           data=data, kind=kind, epochs=epochs, hidden=hidden, samples=probe.inputs_.shape[0],
           inputs=probe.inputs_.shape[1], ratings=ratings, dtype=dtype, weight_bytes=W.WEIGHT_BYTES[dtype])
    info = benchmark.extra_info
    info["floor_s"] = floor
    paper = W.paper_seconds(kind, spec) if epochs == 20 else None
    if paper is not None:
        info["paper_gtx980_s"] = paper
