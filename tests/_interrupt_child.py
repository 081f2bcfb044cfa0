"""Child process of tests/test_concurrency_and_interrupts.py: trains, gets SIGINT from the parent, checks consistency.

Protocol (one line per message on stdout): the child prints ``go`` once each training round has
finished its first epoch; the parent then sends SIGINT after a random delay; the child checks that
the interrupted model is exactly an uninterrupted ``fit`` of ``epochs_trained_`` epochs, that
``partial_fit(1)`` then equals an uninterrupted ``fit(k).partial_fit(1)``, and that save/load keeps
it, and prints ``ok <backend> <epochs>`` or ``bad <reason>``.  Argument: number of rounds.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from cfn_fast import CFN, available_backends, synthetic_ratings, train_test_split

TRAIN, VALID = train_test_split(synthetic_ratings(150, 90, 2500, seed=3), 0.1, seed=0)
BACKENDS = [b for b in ("cpu", "numpy") if b in available_backends()]


def model(backend: str, epochs: int) -> CFN:
    return CFN("item", (12,), epochs, backend=backend, lr_decay=0.0, seed=1)


def same(a: CFN, b: CFN) -> bool:
    return all(np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias)
               for x, y in zip(a.layers_, b.layers_))


def round_(number: int, folder: Path) -> str:
    backend = BACKENDS[number % len(BACKENDS)]
    validation = VALID if number % 3 == 0 else None
    told = []

    def announce(record) -> None:
        if not told:
            told.append(True)
            print("go", flush=True)

    m = model(backend, 10**6)
    try:
        m.fit(TRAIN, validation=validation, callbacks=(announce,))
        return "bad the fit was not interrupted"
    except KeyboardInterrupt:
        pass
    k = m.epochs_trained_
    if [r.epoch for r in m.history_] != list(range(1, k + 1)):
        return f"bad history {[r.epoch for r in m.history_][:5]}... does not match epochs_trained_ {k}"
    if not same(m, model(backend, k).fit(TRAIN)):
        return f"bad weights differ from an uninterrupted {k}-epoch fit"
    loaded = CFN.load(m.save(folder / f"m{number}.npz"))
    m.partial_fit(1)
    # the uninterrupted path to k + 1 epochs through a resume (on cpu a straight fit differs by float32 ulps)
    if not same(m, model(backend, k).fit(TRAIN).partial_fit(1)) or not same(loaded.partial_fit(1), m):
        return f"bad partial_fit after the interrupt does not continue from epoch {k}"
    return f"ok {backend} {k}"


def main() -> int:
    rounds = int(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(rounds):
            print(round_(number, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
