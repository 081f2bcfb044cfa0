"""Child process of tests/test_concurrency_and_interrupts.py: two threads fit one CFN at the same instant, many times.

Each round starts both ``fit`` calls behind a barrier on the cpu backend (the one that crashed
with "double free or corruption"); exactly one may train, the other must get ModelBusyError,
unless the first had already returned.  Afterwards the model must predict finite ratings and four
threads predicting at once must agree.  Prints ``ok <busy errors>`` or ``bad <reason>`` per round
(a crash shows as a non-zero exit status).  Argument: number of rounds.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

from cfn_fast import CFN, ModelBusyError, available_backends, synthetic_ratings

DATA = synthetic_ratings(300, 200, 8000, seed=0)
BACKEND = "cpu" if "cpu" in available_backends() else "numpy"


def round_(model: CFN) -> str:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def train() -> None:
        barrier.wait()
        try:
            model.fit(DATA)
            outcomes.append("fitted")
        except ModelBusyError:
            outcomes.append("busy")
        except BaseException as exc:  # anything else is a failure of the guard
            outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sorted(outcomes) not in (["busy", "fitted"], ["fitted", "fitted"]):
        return f"bad outcomes {outcomes}"
    users, items = DATA.user_ids[DATA.user[:500]], DATA.item_ids[DATA.item[:500]]
    expected = model.predict(users, items)
    results: list[np.ndarray] = []

    def predict() -> None:
        results.append(model.predict(users, items))

    readers = [threading.Thread(target=predict) for _ in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    if len(results) != 4 or not all(np.array_equal(r, expected) for r in results):
        return "bad concurrent predictions differ or failed"
    if not np.all(np.isfinite(expected)):
        return "bad non-finite predictions"
    return f"ok {outcomes.count('busy')}"


def main() -> int:
    rounds = int(sys.argv[1])
    model = CFN("user", (32,), 3, backend=BACKEND)
    for _ in range(rounds):
        print(round_(model), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
