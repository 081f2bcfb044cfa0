"""Rating preprocessing (paper Sec. 4.1): scale to [-1, 1], centre each sample, and invert.

A *sample* is a row of the autoencoder's data: a user for U-CFN, an item for I-CFN.  Its
*inputs* are the other side (items for U-CFN, users for I-CFN).

    unit(r)      = (r - mid) / half_range          e.g. (r - 3) / 2 on a 1..5 scale
    centred(i,j) = unit(r_ij) - mean_i             mean_i over sample i's training ratings
    prediction   = clip(mid + half_range * (y_ij + mean_i), low, high)

Predictions are clipped to the rating scale: the output tanh lies in (-1, 1) but adding the
sample mean back can leave the scale.

Two centrings (``CFN(centring=...)``):

* ``"sample"`` — the paper's, above: each sample's own, unshrunk mean.
* ``"bias"`` — the regularised bias model ``μ + b_i + b_j`` (Koren's baseline predictor, in unit
  scale, offsets shrunk by :data:`BIAS_SHRINKAGE` pseudo-ratings):

      mean_i       = μ + b_i                       the sample's shrunk offset
      centred(i,j) = unit(r_ij) - mean_i - b_j
      prediction   = clip(mid + half_range * (y_ij + mean_i + b_j), low, high)

  The network then learns what the bias model leaves.  Why: the paper's centring leaves the
  *other* side's offsets (each user's in an I-CFN) to be learned through the weights, which a
  few ratings per sample cannot teach, and an unshrunk mean of 3 ratings is noise (bench/README.md,
  density sweep).  ``b_j`` is a
  per-input vector: every conversion between ratings and network values goes through this class.
  The residuals are not clipped (clipping was worse on validation; figures in bench/README.md).

A new row (fold-in, ``encode(rows=...)``) gets its mean by the same rule as a training sample:
:meth:`Preprocessing.row_mean`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .data.ratings import RatingSet, build_csr

__all__ = ["Preprocessing", "BiasModel", "bias_offsets", "sample_axes", "CENTRINGS", "BIAS_SHRINKAGE",
           "BASELINE_SHRINKAGE"]

CENTRINGS = ("sample", "bias")

#: Pseudo-ratings at the global mean added to every offset of the ``"bias"`` centring (the
#: ``reg`` of :class:`cfn_fast.tools.baselines.UserItemBias`, whose default it is; not tuned).
BIAS_SHRINKAGE = 10.0

#: Alternating rounds of the bias fit (each solves one side exactly given the other).
BIAS_ROUNDS = 10

#: Pseudo-ratings of the bias model a blend holds (:class:`BiasModel`): the reference predictor that a blend
#: must never lose to (μ + b_u + b_i, λ = 5 on both sides, 10 sweeps, items first).
BASELINE_SHRINKAGE = 5.0


def sample_axes(kind: str, ratings: RatingSet) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(sample_index, input_index, n_samples, n_inputs)`` of each rating for ``kind``."""
    if kind == "user":
        return ratings.user, ratings.item, ratings.n_users, ratings.n_items
    if kind == "item":
        return ratings.item, ratings.user, ratings.n_items, ratings.n_users
    raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")


@dataclass
class Preprocessing:
    """Scale and centring statistics learned from the training ratings."""

    kind: str
    low: float
    high: float
    sample_mean: np.ndarray   # (n_samples,) unit value added back to each sample; global mean if none
    sample_count: np.ndarray  # (n_samples,) number of training ratings of each sample
    global_mean: float        # mean unit rating over all training ratings
    input_offset: np.ndarray | None = None  # (n_inputs,) unit offset b_j of each input ("bias" centring)

    @property
    def centring(self) -> str:
        return "sample" if self.input_offset is None else "bias"

    @property
    def mid(self) -> float:
        return 0.5 * (self.low + self.high)

    @property
    def half_range(self) -> float:
        return 0.5 * (self.high - self.low)

    @classmethod
    def fit(cls, kind: str, train: RatingSet, centring: str = "sample") -> "Preprocessing":
        if centring not in CENTRINGS:
            raise ValueError(f"centring must be 'sample' or 'bias', got {centring!r}")
        low, high = train.scale
        rows, cols, n_samples, n_inputs = sample_axes(kind, train)
        unit = (train.rating.astype(np.float64) - 0.5 * (low + high)) / (0.5 * (high - low))
        counts = np.bincount(rows, minlength=n_samples)
        global_mean = float(unit.mean())
        if centring == "sample":
            sums = np.bincount(rows, weights=unit, minlength=n_samples)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), global_mean)
            return cls(kind, float(low), float(high), means.astype(np.float32), counts.astype(np.int64), global_mean)
        sample_offset, input_offset = bias_offsets(rows, cols, unit - global_mean, counts,
                                                   np.bincount(cols, minlength=n_inputs), BIAS_SHRINKAGE)
        return cls(kind, float(low), float(high), (global_mean + sample_offset).astype(np.float32),
                   counts.astype(np.int64), global_mean, input_offset.astype(np.float32))

    # ------------------------------------------------------------------ ratings -> network values
    def to_unit(self, rating: np.ndarray) -> np.ndarray:
        return ((np.asarray(rating, dtype=np.float64) - self.mid) / self.half_range).astype(np.float32)

    def centre(self, unit: np.ndarray, means: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Centred float32 network values of unit ratings ``unit`` at ``inputs``, their samples'
        means given entry by entry."""
        centred = np.asarray(unit, dtype=np.float32) - np.asarray(means, dtype=np.float32)
        if self.input_offset is not None:
            centred = centred - self.input_offset[inputs]
        return centred.astype(np.float32, copy=False)

    def row_mean(self, unit: np.ndarray, inputs: np.ndarray) -> np.float32:
        """The mean a new row with unit ratings ``unit`` at ``inputs`` is centred by, by the rule a
        training sample's was computed (the global mean for an empty row)."""
        return self.row_means(np.asarray(unit, dtype=np.float64), np.asarray(inputs), np.array([len(unit)]))[0]

    def row_means(self, unit: np.ndarray, inputs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """:meth:`row_mean` of consecutive rows holding ``counts`` entries each (float32)."""
        owner = np.repeat(np.arange(len(counts)), counts)
        if self.input_offset is None:
            sums = np.bincount(owner, weights=unit, minlength=len(counts))
            means = np.where(counts > 0, sums / np.maximum(counts, 1), self.global_mean)
        else:
            shifted = unit - self.global_mean - self.input_offset[inputs].astype(np.float64)
            sums = np.bincount(owner, weights=shifted, minlength=len(counts))
            means = self.global_mean + sums / (counts + BIAS_SHRINKAGE)
        return means.astype(np.float32)

    def centred_matrix(self, ratings: RatingSet) -> sp.csr_matrix:
        """Samples x inputs CSR of centred unit ratings (explicit zeros kept: they are known values)."""
        rows, cols, n_samples, n_inputs = sample_axes(self.kind, ratings)
        values = self.centre(self.to_unit(ratings.rating), self.sample_mean[rows], cols)
        return build_csr(rows, cols, values, (n_samples, n_inputs))

    # ------------------------------------------------------------------ network values -> ratings
    def input_offsets(self, inputs: np.ndarray | None = None) -> np.ndarray | None:
        """The inputs' offsets ``b_j`` (float64) at ``inputs`` (every input when None); None with
        the ``"sample"`` centring, which has none."""
        if self.input_offset is None:
            return None
        offset = self.input_offset if inputs is None else self.input_offset[inputs]
        return offset.astype(np.float64)

    def unit_offsets(self, means: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
        """What is added back to the network's outputs: for rows with ``means`` and outputs at
        ``inputs`` (every input when None), broadcastable to ``(len(means), len(inputs))`` (float64)."""
        grid = np.asarray(means, dtype=np.float64)[:, None]
        offset = self.input_offsets(inputs)
        return grid if offset is None else grid + offset[None, :]

    def pair_offsets(self, samples: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """What is added back to the outputs of (sample, input) pairs (float64)."""
        offset = self.sample_mean[samples].astype(np.float64)
        if self.input_offset is not None:
            offset = offset + self.input_offset[inputs]
        return offset

    def to_rating(self, samples: np.ndarray, outputs: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
        """Undo centring and scaling of the network outputs of (sample, input) pairs, clipped to the
        scale (``inputs`` may be omitted with the ``"sample"`` centring)."""
        if inputs is None and self.input_offset is not None:
            raise ValueError("the 'bias' centring needs the inputs of the outputs to invert them")
        offset = self.sample_mean[samples].astype(np.float64) if inputs is None else self.pair_offsets(samples, inputs)
        return self.invert(outputs, offset)[0]

    def invert(self, outputs: Any, offsets: Any, xp: Any = np) -> tuple[Any, Any]:
        """The one inversion of the preprocessing: ``(ratings, unclipped)`` of network ``outputs``, given
        what is added back to them (``offsets``, broadcastable: :meth:`pair_offsets` for pairs,
        :meth:`unit_offsets` for rows x inputs).  ``ratings`` are clipped to the scale; ``unclipped``
        breaks ties among ratings clipped to the same end.  ``xp``: the array library of ``outputs``
        (NumPy, or CuPy on a device).  The ONNX graphs (:mod:`cfn_fast.export.onnx`) compute the same."""
        unclipped = self.mid + self.half_range * (xp.asarray(outputs, dtype=xp.float64) + offsets)
        return xp.clip(unclipped, self.low, self.high), unclipped


def bias_offsets(rows: np.ndarray, cols: np.ndarray, residual: np.ndarray, row_count: np.ndarray,
                 col_count: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk offsets ``(b_rows, b_cols)`` of ``residual ≈ b_rows[rows] + b_cols[cols]``, by
    :data:`BIAS_ROUNDS` alternating exact solves, the columns first.  The rows are solved last, so a
    training sample's offset is what :meth:`Preprocessing.row_means` gives the same ratings as a new row."""
    b_rows = np.zeros(len(row_count))
    b_cols = np.zeros(len(col_count))
    for _ in range(BIAS_ROUNDS):
        b_cols = np.bincount(cols, residual - b_rows[rows], len(col_count)) / (col_count + shrinkage)
        b_rows = np.bincount(rows, residual - b_cols[cols], len(row_count)) / (row_count + shrinkage)
    return b_rows, b_cols


@dataclass
class BiasModel:
    """The regularised bias model ``μ + b_u + b_i`` in rating units (Koren's baseline predictor), clipped
    to the scale: the floor a blend (``CFN(kind="blend")``) is built on and never loses to.  Fitted by
    :func:`bias_offsets` with the users as rows, so the items are solved first and the users last: a new
    user's offset (:meth:`offset_of_new`) follows the rule of a training user's."""

    low: float
    high: float
    mean: float                # μ, the mean training rating
    user_offset: np.ndarray    # (n_users,) float64
    item_offset: np.ndarray    # (n_items,) float64
    shrinkage: float = BASELINE_SHRINKAGE

    @classmethod
    def fit(cls, train: RatingSet, shrinkage: float = BASELINE_SHRINKAGE) -> "BiasModel":
        rating = train.rating.astype(np.float64)
        mean = float(rating.mean())
        b_user, b_item = bias_offsets(train.user, train.item, rating - mean,
                                      np.bincount(train.user, minlength=train.n_users),
                                      np.bincount(train.item, minlength=train.n_items), shrinkage)
        low, high = (float(s) for s in train.scale)
        return cls(low, high, mean, b_user, b_item, float(shrinkage))

    def unclipped(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean + self.user_offset[users] + self.item_offset[items]

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (float64, clipped) of pairs of training indices."""
        return np.clip(self.unclipped(users, items), self.low, self.high)

    def offset_of_new(self, new: str, others: np.ndarray, ratings: np.ndarray) -> float:
        """The offset of a new user (``new="user"``) or item given its ``ratings`` of training ``others``
        (items, or users): the shrunk mean of what μ and the others' offsets leave."""
        other_offset = self.item_offset if new == "user" else self.user_offset
        residual = np.asarray(ratings, dtype=np.float64) - self.mean - other_offset[others]
        return float(residual.sum() / (len(residual) + self.shrinkage))

    def row_of_new(self, new: str, offset: float) -> np.ndarray:
        """Unclipped predictions of a new user (item) with ``offset`` for every training item (user)."""
        return self.mean + offset + (self.item_offset if new == "user" else self.user_offset)
