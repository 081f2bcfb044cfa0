"""Data, models and byte counts of the benchmark suite's cases (imported by its conftest and tests).

Byte counts are *estimates of the minimal traffic* a case must move between memory and the cores
(each touched parameter row read and written once per mini-batch, the batch's CSR entries read
once; activations of one batch are assumed to stay in cache).  Dividing them by the measured
time gives the achieved GB/s; dividing them by the triad bandwidth gives the floor.  The per-input
weight arrays count :data:`WEIGHT_BYTES` per value: 4 in float32, 2 with ``CFN(dtype="bfloat16")``
(:mod:`cfn_fast.backends.bfloat16` lists the four arrays stored so).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cfn_fast import CFN
from cfn_fast.backends.base import epoch_order
from cfn_fast.data import load_movielens, synthetic_ratings
from cfn_fast.tools.paper.published import TABLE3, TABLE3_HIDDEN

#: where MovieLens lives (the repository's ``../shared/data``; CFN_BENCH_DATA overrides)
DATA_DIR = Path(os.environ.get("CFN_BENCH_DATA", "/work/shared/data"))

#: the synthetic default of ``cfn demo`` (users, items, ratings) and the micro cases' hidden width
SYNTHETIC_DEFAULT = (2000, 1000, 100_000)
ML10M_SHAPE = (69_878, 10_677, 10_000_054)
MICRO_HIDDEN = 600

#: ``CFN_BENCH_SMOKE=1`` (CI, with --benchmark-disable): every data set becomes a tiny synthetic one
#: and widths shrink, so that every case's code path runs in seconds; the figures mean nothing.
SMOKE = os.environ.get("CFN_BENCH_SMOKE", "0") == "1"
SMOKE_SHAPE = (120, 80, 2400)
if SMOKE:
    MICRO_HIDDEN = 16


@dataclass(frozen=True)
class DataSpec:
    name: str            # synthetic, ml-1m, ml-10m-shape
    hidden: int          # hidden units of the macro cases (Table 3's 700 where the paper has a row)
    paper_key: str | None = None


DATASETS = {"synthetic": DataSpec("synthetic", MICRO_HIDDEN),
            "ml-1m": DataSpec("ml-1m", 16 if SMOKE else TABLE3_HIDDEN, "ml-1m"),
            "ml-10m-shape": DataSpec("ml-10m-shape", 16 if SMOKE else TABLE3_HIDDEN, "ml-10m")}


@functools.lru_cache(maxsize=None)
def ratings(name: str):
    """The rating set of a data spec; None when it is not available here."""
    if SMOKE:
        return synthetic_ratings(*SMOKE_SHAPE, seed=0, side_info=False)
    if name == "synthetic":
        return synthetic_ratings(*SYNTHETIC_DEFAULT, seed=0)
    if name == "ml-1m":
        folder = DATA_DIR / "ml-1m"
        return load_movielens(folder) if folder.is_dir() else None
    if name == "ml-10m-shape":
        return synthetic_ratings(*ML10M_SHAPE, seed=0, side_info=False)
    raise ValueError(f"unknown data set {name!r}")


#: bytes per stored value of the per-input weight arrays, by ``CFN(dtype=...)``
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2}


def dtype_supported() -> bool:
    """Whether this cfn_fast's CFN takes ``dtype`` (the bfloat16 cases skip until it does)."""
    return "dtype" in CFN().get_params()


def model(kind: str, hidden: int, epochs: int, backend: str, dtype: str = "float32") -> CFN:
    """The cases' CFN; ``dtype`` is passed only when it is not float32 (a cfn_fast without the setting)."""
    extra = {} if dtype == "float32" else {"dtype": dtype}
    return CFN(kind, (hidden,), epochs, backend=backend, use_side_info=False, seed=0, **extra)


def prepared(kind: str, name: str, hidden: int, backend: str, dtype: str = "float32") -> CFN:
    """A model fitted for 0 epochs: engine built, nothing trained (the macro cases' set-up)."""
    return model(kind, hidden, 0, backend, dtype).fit(ratings(name))


# ----------------------------------------------------------------------------- byte counts
def batch_shapes(inputs: sp.csr_matrix, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per mini-batch of epoch 1: distinct input columns and known entries."""
    trainable = np.flatnonzero(np.diff(inputs.indptr) > 0)
    order = epoch_order(seed, 1, trainable)
    distinct, entries = [], []
    for start in range(0, len(order), batch_size):
        sub = inputs[order[start:start + batch_size]]
        distinct.append(len(np.unique(sub.indices)))
        entries.append(sub.nnz)
    return np.array(distinct, np.int64), np.array(entries, np.int64)


def epoch_bytes(inputs: sp.csr_matrix, hidden: int, side_dim: int, batch_size: int, weight_bytes: int = 4) -> int:
    """Minimal bytes of one epoch of a one-hidden-layer CFN: for every mini-batch, each distinct
    input column's values of the four per-input arrays (input-weight row: hidden values; output-weight
    row: hidden; output bias: 1; output side-weight row: side_dim) read and written once, at
    ``weight_bytes`` per value (4: float32, 2: bfloat16), and the batch's CSR entries (int32 index +
    float32 value: 8 bytes) read once.  Not counted: the dense parameters (O(hidden² + hidden·side),
    read once per mini-batch), the indptr of the batch and the activations (in cache)."""
    if weight_bytes not in (2, 4):
        raise ValueError(f"weight_bytes must be 4 (float32) or 2 (bfloat16), got {weight_bytes!r}")
    distinct, entries = batch_shapes(inputs, batch_size)
    return int(np.sum(2 * weight_bytes * distinct * (2 * hidden + 1 + side_dim) + 8 * entries))


def paper_seconds(kind: str, spec: DataSpec) -> float | None:
    """Table 3's GTX-980 time for 20 epochs, where the paper has this row."""
    row = TABLE3.get(kind, {}).get(spec.paper_key or "")
    return None if row is None else float(row["seconds"])


# ----------------------------------------------------------------------------- the test switch
def slowdown(stage: str) -> int:
    """``CFN_BENCH_SLOWDOWN=stage:k`` repeats that micro stage k times per timed call: a deliberate
    regression, so that a test can check that ``--compare`` flags it."""
    spec = os.environ.get("CFN_BENCH_SLOWDOWN", "")
    for item in filter(None, spec.split(",")):
        name, _, factor = item.partition(":")
        if name == stage:
            return max(1, int(factor or 2))
    return 1
