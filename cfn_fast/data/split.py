"""Deterministic random splits of a RatingSet (train/test, and validation carved from train)."""
from __future__ import annotations

import numpy as np

from .ratings import RatingSet

__all__ = ["train_test_split", "train_validation_test_split"]


def train_test_split(ratings: RatingSet, test_ratio: float = 0.1, seed: int = 0) -> tuple[RatingSet, RatingSet]:
    """Split ratings uniformly at random into ``(train, test)``, exactly ``round(test_ratio * nnz)`` in test.

    Deterministic for a seed.  Both parts keep the parent's id maps and side information,
    so a user or item that lands only in the test part is a *cold* row for the model.
    """
    if not isinstance(ratings, RatingSet):
        raise TypeError(f"expected a RatingSet, got {type(ratings).__name__}")
    if not 0.0 < float(test_ratio) < 1.0:
        raise ValueError(f"test_ratio must be in (0, 1), got {test_ratio}")
    # int() keeps n_test a Python int whatever number type test_ratio is (round() defers to its __round__)
    n_test = int(round(test_ratio * ratings.nnz))  # noqa: RUF046
    if n_test == 0 or n_test == ratings.nnz:
        raise ValueError(f"test_ratio={test_ratio} leaves an empty part with only {ratings.nnz} rating(s)")
    order = np.random.default_rng(seed).permutation(ratings.nnz)
    test_mask = np.zeros(ratings.nnz, dtype=bool)
    test_mask[order[:n_test]] = True
    return ratings.subset(~test_mask), ratings.subset(test_mask)


def train_validation_test_split(ratings: RatingSet, test_ratio: float = 0.1, validation_ratio: float = 0.1,
                                seed: int = 0) -> tuple[RatingSet, RatingSet, RatingSet]:
    """``(train, validation, test)``: the test part as :func:`train_test_split` with the same seed,
    then ``validation_ratio`` of the remaining training ratings carved out for model selection."""
    train, test = train_test_split(ratings, test_ratio, seed)
    train, validation = train_test_split(train, validation_ratio, seed + 1_000_003)
    return train, validation, test
