"""Rating preprocessing (paper Sec. 4.1): scale to [-1, 1], centre each sample, and invert.

A *sample* is a row of the autoencoder's data: a user for U-CFN, an item for I-CFN.  Its
*inputs* are the other side (items for U-CFN, users for I-CFN).

    unit(r)      = (r - mid) / half_range          e.g. (r - 3) / 2 on a 1..5 scale
    centred(i,j) = unit(r_ij) - mean_i             mean_i over sample i's training ratings
    prediction   = clip(mid + half_range * (y_ij + mean_i), low, high)

Predictions are clipped to the rating scale: the output tanh lies in (-1, 1) but adding the
sample mean back can leave the scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .data.ratings import RatingSet, build_csr

__all__ = ["Preprocessing", "sample_axes"]


def sample_axes(kind: str, ratings: RatingSet) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(sample_index, input_index, n_samples, n_inputs)`` of each rating for ``kind``."""
    if kind == "user":
        return ratings.user, ratings.item, ratings.n_users, ratings.n_items
    if kind == "item":
        return ratings.item, ratings.user, ratings.n_items, ratings.n_users
    raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")


@dataclass
class Preprocessing:
    """Scale and per-sample centring statistics learned from the training ratings."""

    kind: str
    low: float
    high: float
    sample_mean: np.ndarray   # (n_samples,) mean unit rating of each sample; global mean if none
    sample_count: np.ndarray  # (n_samples,) number of training ratings of each sample
    global_mean: float        # mean unit rating over all training ratings

    @property
    def mid(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def half_range(self) -> float:
        return 0.5 * (self.high - self.low)

    @classmethod
    def fit(cls, kind: str, train: RatingSet) -> "Preprocessing":
        low, high = train.scale
        rows, _, n_samples, _ = sample_axes(kind, train)
        unit = (train.rating.astype(np.float64) - 0.5 * (low + high)) / (0.5 * (high - low))
        counts = np.bincount(rows, minlength=n_samples)
        sums = np.bincount(rows, weights=unit, minlength=n_samples)
        global_mean = float(unit.mean())
        means = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
        return cls(kind, float(low), float(high), means.astype(np.float32), counts.astype(np.int64), global_mean)

    def to_unit(self, rating: np.ndarray) -> np.ndarray:
        return ((np.asarray(rating, dtype=np.float64) - self.mid) / self.half_range).astype(np.float32)

    def centred_matrix(self, ratings: RatingSet) -> sp.csr_matrix:
        """Samples x inputs CSR of centred unit ratings (explicit zeros kept: they are known values)."""
        rows, cols, n_samples, n_inputs = sample_axes(self.kind, ratings)
        values = self.to_unit(ratings.rating) - self.sample_mean[rows]
        return build_csr(rows, cols, values, (n_samples, n_inputs))

    def to_rating(self, samples: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Undo centring and scaling of network outputs for the given samples, clipped to the scale."""
        unit = np.asarray(outputs, dtype=np.float64) + self.sample_mean[samples]
        return np.clip(self.mid + self.half_range * unit, self.low, self.high)
