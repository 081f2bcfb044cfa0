"""Child process of tests/test_engine_fuzz.py: seeded malformed engine-API calls on the numpy and cpu engines.

``python _engine_fuzz_child.py N SEED`` runs N cases.  Before each it prints (and flushes) ``case <id>`` so that the
parent names the case that killed the process; a case must raise ``TypeError``, ``ValueError`` or ``IndexError``
with a one-line message, or work.  Anything else is printed as ``unclean <id>: <Type>: <message>``.  The last
line is ``summary cases <n> raised <n> worked <n> unclean <n>``; the exit status is 1 when a case was unclean.

The families: corrupted sparse matrices (every part of the CSR, CSC and COO structure, dtypes, shapes, values,
duplicates) given to ``make_engine``, ``predict_entries`` and ``encode``; rows and cols (negative, huge, unsigned,
float, boolean, multi-dimensional, empty, not arrays); epochs and learning rates; side information (missing,
unexpected, misshapen, non-finite); ``restore`` of garbage, of other engines' snapshots and of forged ones;
``set_layers``, ``decode``, ``TrainConfig``, ``make_engine`` and ``profiled_epoch`` with bad arguments; and valid
calls in between (the engines must keep working).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from cfn_fast import available_backends, synthetic_ratings
from cfn_fast.engine import EngineSnapshot, Layer, TrainConfig, init_layers, make_engine, minibatches, training_inputs

CLEAN = (TypeError, ValueError, IndexError)
BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
INPUTS = training_inputs(synthetic_ratings(40, 30, 400, seed=1), "item")
SAMPLES, SIDE = INPUTS.samples, INPUTS.side
N_ROWS, N_COLS = SAMPLES.shape
SIDE_DIM = SIDE.shape[1]
HIDDEN = (6,)
CONFIG = TrainConfig(batch_size=7, seed=3)


def layers(side: bool = True) -> list[Layer]:
    return init_layers(N_COLS, HIDDEN, SIDE_DIM if side else 0, 0)


class Engines:
    """One engine with side information and one without per backend, rebuilt now and then (cases train them)."""

    def __init__(self) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        self.side = {b: make_engine(b, layers(), CONFIG, SAMPLES, SIDE) for b in BACKENDS}
        self.plain = {b: make_engine(b, layers(False), CONFIG, SAMPLES) for b in BACKENDS}


# ----------------------------------------------------------------------------- malformed values
def bad_index(rng: np.random.Generator, n: int) -> Any:
    """Rows or cols that are not valid indices into ``n``."""
    size = int(rng.integers(1, 6))
    choices = [
        lambda: np.array([-1]), lambda: np.array([n]), lambda: np.array([0, n + 5]),
        lambda: np.array([2**31]), lambda: np.array([2**62], np.int64), lambda: np.array([-2**63], np.int64),
        lambda: np.array([2**64 - 1], np.uint64), lambda: np.array([2**63], np.uint64),
        lambda: rng.random(size) * n, lambda: np.array([1.0, 2.0]), lambda: np.array([np.nan]),
        lambda: np.ones(n, bool), lambda: np.zeros(3, bool), lambda: np.array([True]),
        lambda: np.zeros((2, 2), np.int64), lambda: np.int64(1), lambda: 3, lambda: None, lambda: "0,1",
        lambda: np.array(["1"]), lambda: np.array([1, None], object), lambda: [0.5, 1.5], lambda: [[0, 1]],
        lambda: np.array([1 + 2j]), lambda: rng.integers(-n, 2 * n, size),
    ]
    return choices[int(rng.integers(len(choices)))]()


def good_rows(rng: np.random.Generator, n: int, dtype: Any = np.int64) -> np.ndarray:
    return rng.integers(0, n, int(rng.integers(1, 9))).astype(dtype)


BAD_EPOCHS = [0, -5, -2**63, 2**63, 2**64, 2**70, 1.5, float("nan"), True, False, "1", None, [1], np.uint64(2**64 - 1),
              np.float64(2.0), 1 + 0j]
GOOD_EPOCHS = [1, 2, np.int64(3), np.uint8(4), 2**62]
BAD_LRS = [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf"), "0.1", None, True, 1e30, 1 + 1j, [0.1],
           np.float64(-0.01), 2**1100]
GOOD_LRS = [0.05, np.float32(0.01), 1e-300, 3]


def corrupt(matrix: sp.csr_matrix, rng: np.random.Generator) -> tuple[str, Any]:
    """A copy of ``matrix`` damaged one way (or changed harmlessly: those cases must work)."""
    m = matrix.copy()
    nnz = m.nnz
    j = int(rng.integers(nnz)) if nnz else 0
    i = int(rng.integers(m.shape[0]))
    kind = int(rng.integers(26))
    if kind == 0:
        m.indices[j] = rng.choice([m.shape[1], m.shape[1] + 1, 10**6, -1, -2**31, 2**31 - 1])
    elif kind == 1:
        m.indices = m.indices.astype(np.int64)
        m.indices[j] = rng.choice([2**40, -2**40, 2**62])
    elif kind == 2:
        m.indptr[i + 1] = m.indptr[i] - int(rng.integers(1, 5))
    elif kind == 3:
        m.indptr[0] = int(rng.integers(1, 5))
    elif kind == 4:
        m.indptr[-1] = nnz + int(rng.integers(1, 1000))
    elif kind == 5:
        m.indptr = m.indptr[:-1] if rng.random() < 0.5 else np.append(m.indptr, nnz)
    elif kind == 6:
        m.data[j] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 7:
        m.data = m.data.astype(rng.choice([np.complex64, object, "U3"]))
    elif kind == 8:
        m.indices = m.indices.astype(np.float64)
    elif kind == 9:
        row = np.flatnonzero(np.diff(m.indptr) >= 2)
        r = int(row[int(rng.integers(len(row)))])
        m.indices[m.indptr[r] + 1] = m.indices[m.indptr[r]]          # a duplicate entry
    elif kind == 10:
        row = np.flatnonzero(np.diff(m.indptr) >= 2)
        r = int(row[int(rng.integers(len(row)))])
        a = m.indptr[r]
        m.indices[a], m.indices[a + 1] = m.indices[a + 1], m.indices[a]  # unsorted, still valid: must work
    elif kind == 11:
        m = sp.csr_matrix((m.data, m.indices % (N_COLS - 1), m.indptr), shape=(m.shape[0], N_COLS - 1))
    elif kind == 12:
        m = sp.csr_matrix(sp.hstack([m, sp.csr_matrix((m.shape[0], 2))]), dtype=np.float32)
    elif kind == 13:
        c = m.tocsc(copy=True)
        c.indices[j] = rng.choice([m.shape[0], -1, 10**6])
        m = c
    elif kind == 14:
        c = m.tocsc(copy=True)
        k = int(rng.integers(m.shape[1]))
        c.indptr[k + 1] = c.indptr[k] - 1
        m = c
    elif kind == 15:
        c = m.tocoo(copy=True)
        getattr(c, rng.choice(["row", "col"]))[j] = rng.choice([-1, 10**6, m.shape[0] + m.shape[1]])
        m = c
    elif kind == 16:
        c = m.tocoo(copy=True)
        c.row[1], c.col[1] = c.row[0], c.col[0]                      # a duplicate coordinate
        m = c
    elif kind == 17:
        m = m.tolil()
        m.rows[i] = [N_COLS + 3] if rng.random() < 0.5 else [-2]
        m.data[i] = [1.0]
    elif kind == 18:
        m = rng.choice([None, "matrix", 3.0]) if rng.random() < 0.5 else m.toarray()
    elif kind == 19:
        m = sp.csr_array(m)                                           # valid: must work
    elif kind == 20:
        m = m.astype(rng.choice([np.float64, np.int8, np.bool_]))      # valid: must work
    elif kind == 21:
        m.indptr = m.indptr.astype(np.float64)
    elif kind == 22:
        m.indices = m.indices[:-1]
    elif kind == 23:
        m.indptr = m.indptr.astype(np.uint64)
        m.indptr[-1] = np.uint64(2**64 - 1)
    elif kind == 24:
        m = m.tobsr(blocksize=(1, 1))
        m.indices[j] = rng.choice([-1, N_COLS, 10**6])
    else:
        m = m.todok()                                                 # valid: must work
    return f"csr{kind}", m


def bad_side(rng: np.random.Generator, n_rows: int) -> tuple[str, Any]:
    kind = int(rng.integers(10))
    values: list[Any] = [
        None, np.ones((n_rows, SIDE_DIM + 1), np.float32), np.ones((n_rows + 1, SIDE_DIM)),
        np.full((n_rows, SIDE_DIM), np.nan), np.ones(SIDE_DIM), np.ones((n_rows, SIDE_DIM, 1)), "side",
        np.array([["a"] * SIDE_DIM] * n_rows), sp.csr_matrix(np.ones((n_rows, SIDE_DIM))),   # sparse: must work
        [[1.0] * SIDE_DIM] * n_rows,                                                          # a list: must work
    ]
    return f"side{kind}", values[kind]


def bad_layers(rng: np.random.Generator) -> tuple[str, Any]:
    good = layers()
    kind = int(rng.integers(9))
    if kind == 0:
        return "layers0", None
    if kind == 1:
        return "layers1", good[:1]
    if kind == 2:
        return "layers2", [Layer(np.ones((6, N_COLS + 1), np.float32), good[0].bias, good[0].side_weight), good[1]]
    if kind == 3:
        good[1].weight[0, 0] = np.nan
        return "layers3", good
    if kind == 4:
        return "layers4", layers(side=False)
    if kind == 5:
        return "layers5", [layer.weight for layer in good]
    if kind == 6:
        return "layers6", [Layer(np.array([["x"] * N_COLS] * 6), good[0].bias, good[0].side_weight), good[1]]
    if kind == 7:
        return "layers7", init_layers(N_COLS, (7,), SIDE_DIM, 0)
    return "layers8", good                                            # valid: must work


# ----------------------------------------------------------------------------- the cases
def make_case(rng: np.random.Generator, engines: Engines, backend: str) -> tuple[str, Callable[[], Any]]:
    e, plain = engines.side[backend], engines.plain[backend]
    family = int(rng.integers(16))
    if family == 0:
        what, samples = corrupt(SAMPLES, rng)
        return f"{what}.make_engine+train", lambda: make_engine(backend, layers(), CONFIG, samples,
                                                                 SIDE).train_epoch(1, 0.05)
    if family == 1:
        what, inputs = corrupt(SAMPLES, rng)
        rows = good_rows(rng, N_ROWS)
        return f"{what}.predict_entries", lambda: e.predict_entries(inputs, SIDE, rows, rows % N_COLS)
    if family == 2:
        what, inputs = corrupt(SAMPLES, rng)
        return what + ".encode", lambda: e.encode(inputs, SIDE)
    if family == 3:
        rows = bad_index(rng, N_ROWS)
        method = rng.choice(["sgd_step", "gradients"])
        return f"rows.{method}", (lambda: e.sgd_step(rows, 1, 0.05)) if method == "sgd_step" \
            else (lambda: e.gradients(rows, 2))
    if family == 4:
        rows, cols = (bad_index(rng, N_ROWS), good_rows(rng, N_COLS)) if rng.random() < 0.5 \
            else (good_rows(rng, N_ROWS), bad_index(rng, N_COLS))
        return "rows_cols.predict_entries", lambda: e.predict_entries(SAMPLES, SIDE, rows, cols)
    if family == 5:
        epoch = BAD_EPOCHS[int(rng.integers(len(BAD_EPOCHS)))]
        call = int(rng.integers(4))
        calls = [lambda: e.train_epoch(epoch, 0.05), lambda: e.sgd_step(np.arange(4), epoch, 0.05),
                 lambda: e.gradients(np.arange(4), epoch), lambda: minibatches(e, epoch)]
        return f"epoch{call}", calls[call]
    if family == 6:
        lr = BAD_LRS[int(rng.integers(len(BAD_LRS)))]
        return "lr", (lambda: e.train_epoch(1, lr)) if rng.random() < 0.5 else (lambda: e.sgd_step([1, 2], 1, lr))
    if family == 7:
        what, side = bad_side(rng, N_ROWS)
        target = plain if rng.random() < 0.2 else e
        call = int(rng.integers(3))
        calls = [lambda: target.encode(SAMPLES, side),
                 lambda: target.predict_entries(SAMPLES, side, np.arange(3), np.arange(3)),
                 lambda: target.decode(np.zeros((N_ROWS, HIDDEN[-1]), np.float32), side)]
        return f"{what}.{call}", calls[call]
    if family == 8:
        other = engines.side[BACKENDS[int(rng.integers(len(BACKENDS)))]]
        forged_payload = [None, (1.0, []), (1.0, [np.zeros(3)]), "x", layers()[:1], (float("nan"), None)]
        garbage = [None, 0, "snapshot", layers(), e.get_layers(), (1.0, []), other.snapshot(), plain.snapshot(),
                   EngineSnapshot(e.snapshot().owner, forged_payload[int(rng.integers(len(forged_payload)))], backend)]
        kind = int(rng.integers(len(garbage)))
        return f"restore{kind}", lambda: e.restore(garbage[kind])
    if family == 9:
        what, value = bad_layers(rng)
        return what + ".set_layers", lambda: e.set_layers(value)
    if family == 10:
        codes = [np.zeros((4, HIDDEN[-1] + 1)), np.zeros(HIDDEN[-1]), "codes", None, np.full((4, HIDDEN[-1]), np.nan),
                 np.zeros((0, HIDDEN[-1])), [[0.0] * HIDDEN[-1]]][int(rng.integers(7))]
        cols = [None, bad_index(rng, N_COLS), np.arange(3)][int(rng.integers(3))]
        rows = np.shape(codes)[0] if np.ndim(codes) == 2 else 4
        return "decode", lambda: plain.decode(codes, None, cols) if rng.random() < 0.3 \
            else e.decode(codes, SIDE[:rows] if rows <= N_ROWS else None, cols)
    if family == 11:
        name = rng.choice(["alpha", "beta", "mask_ratio", "weight_decay", "batch_size", "seed"])
        values = [0, -1, -2**31, 2.5, float("nan"), float("inf"), True, None, "8", 1.0, 2**70, np.int64(5),
                  2**31 - 1, 2**28 + 1]   # the last two: batches the kernels once sized in overflowing C ints
        value = values[int(rng.integers(len(values)))]
        return f"config.{name}", lambda: make_engine(backend, layers(), TrainConfig(**{name: value}), SAMPLES,
                                                     SIDE).train_epoch(1, 0.01)
    if family == 12:
        kind = int(rng.integers(6))
        calls = [lambda: make_engine(backend, layers(), {"batch_size": 7}, SAMPLES, SIDE),
                 lambda: make_engine(backend, layers(), CONFIG, SAMPLES, SIDE, threads=rng.choice([0, -1, 1.5])),
                 lambda: make_engine(backend, layers(), CONFIG, SAMPLES, SIDE[:5]),
                 lambda: make_engine(backend, bad_layers(rng)[1], CONFIG, SAMPLES, SIDE),
                 lambda: make_engine(backend, layers(), CONFIG, SAMPLES, None),
                 lambda: make_engine(rng.choice(["tpu", None, 3, ""]), layers(), CONFIG, SAMPLES, SIDE)]
        return f"make_engine{kind}", calls[kind]
    if family == 13:
        ranges = [object(), "nvtx", Raising(), None][int(rng.integers(4))]
        return "profiled_epoch", lambda: e.profiled_epoch(int(rng.integers(1, 5)), 0.05, ranges)
    # valid calls between the bad ones: the engines go on working
    epoch, lr = GOOD_EPOCHS[int(rng.integers(len(GOOD_EPOCHS)))], GOOD_LRS[int(rng.integers(len(GOOD_LRS)))]
    if family == 14:
        return "valid.sgd_step", lambda: e.sgd_step(good_rows(rng, N_ROWS, rng.choice([np.int8, np.uint32])), epoch,
                                                    min(float(lr), 0.05))
    return "valid.train", lambda: (e.train_epoch(epoch, min(float(lr), 0.05)),
                                   e.restore(e.snapshot()), e.predict_entries(SAMPLES, SIDE, [0, 1], [2, 3]))


class Raising:
    """Ranges whose push raises: the error must come out of profiled_epoch cleanly."""

    def push(self, name: str) -> None:
        raise ValueError("push refused")

    def pop(self) -> None:
        pass


def main(n_cases: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    engines = Engines()
    raised = worked = 0
    unclean: list[str] = []
    for k in range(n_cases):
        if k % 200 == 0:
            engines.rebuild()
        backend = BACKENDS[k % len(BACKENDS)]
        what, call = make_case(rng, engines, backend)
        case = f"{k} {backend} {what}"
        print(f"case {case}", flush=True)
        try:
            call()
            worked += 1
        except CLEAN as exc:
            raised += 1
            if "\n" in str(exc) or not str(exc):
                unclean.append(f"{case}: {type(exc).__name__} without a one-line message: {exc!r}")
        except Exception as exc:  # anything but the three clean errors is a finding
            unclean.append(f"{case}: {type(exc).__name__}: {exc}")
    for line in unclean:
        print(f"unclean {line}", flush=True)
    print(f"summary cases {n_cases} raised {raised} worked {worked} unclean {len(unclean)}", flush=True)
    return 1 if unclean else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
