"""Shared by the test files split from one: the small synthetic split, a small CFN and a layer comparison."""
from __future__ import annotations

import numpy as np

from cfn_fast import CFN, synthetic_ratings, train_test_split

TRAIN, TEST = train_test_split(synthetic_ratings(200, 120, 4000, seed=2), 0.1, seed=0)


def small(backend: str = "numpy", epochs: int = 2, kind: str = "item") -> CFN:
    return CFN(kind, (10,), epochs, backend=backend, seed=0)


def same_layers(a, b) -> bool:
    return all(np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias) and
               (x.side_weight is None or np.array_equal(x.side_weight, y.side_weight)) for x, y in zip(a, b))
