"""bfloat16 weight storage (``CFN(dtype="bfloat16")``): the storage format and its rounding rules.

What is stored in bfloat16
    The four per-input arrays, which hold all but O(H² + H·side) of a CFN's parameters and all of its
    per-step memory traffic: the input weight (kept transposed, one row of H per input), the output
    weight (one row per output), the output bias and the output side weight.  They are ``uint16``
    arrays holding the top half of a float32, times one float64 *decay scale* shared by the four
    (weight decay multiplies the scale, so it stays exact however small the step; a row moves only when
    a gradient touches it).  There is no float32 master copy.  The dense parameters (the input bias
    and side weight, hidden-to-hidden layers) are O(H²), are read once per mini-batch and stay float32.
    Every sum is accumulated in float32.

Updates round stochastically
    An updated float32 value ``x`` is stored as ``(bits(x) + r) >> 16`` with ``r`` 16 random bits, so
    it rounds up with the probability of its distance to the lower bfloat16 neighbour: small steps are
    kept in expectation instead of being lost under round-to-nearest (a weight of 0.02 has an ulp of
    1.2e-4, above most single SGD steps).  The bits are a counter-based hash, deterministic for a seed
    and the same in every backend:

    * ``array_key = splitmix64(epoch_key + ROUND_SALT + 4 * first_row + array)``: ``first_row`` is
      the first sample of the mini-batch (each sample is in one mini-batch per epoch), ``array`` the
      array's number in :data:`ARRAYS`; ``seed`` its low 32 bits;
    * the row ``r``'s seed is ``fmix32(seed ^ (r * 0x9E3779B1 mod 2**32))``;
    * element ``k`` of that row gets ``r = fmix32(row_seed + k) >> 16`` (the MurmurHash3 finaliser).

Loading float32 parameters (``set_layers``, folding the scale in) rounds to nearest even.
"""
from __future__ import annotations

import numpy as np

from ..corruption import splitmix64

__all__ = ["ARRAYS", "ROUND_SALT", "array_seed", "row_seeds", "round_stochastic", "round_nearest",
           "to_float32", "fmix32"]

#: The arrays held in bfloat16, numbered as the rounding hash numbers them.
ARRAYS = {"input_weight": 0, "output_weight": 1, "output_bias": 2, "output_side_weight": 3}
ROUND_SALT = 0xB16F_0A7A_5EED_0001

_U32 = np.uint32


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser on uint32 (wrapping arithmetic); the same in C."""
    h = np.asarray(h, dtype=np.uint32).copy()
    with np.errstate(over="ignore"):
        h ^= h >> _U32(16)
        h *= _U32(0x85EBCA6B)
        h ^= h >> _U32(13)
        h *= _U32(0xC2B2AE35)
        h ^= h >> _U32(16)
    return h


def array_seed(epoch_key: int, first_row: int, array: int) -> int:
    """The 32-bit seed of one array's updates in one mini-batch."""
    with np.errstate(over="ignore"):
        x = np.uint64(epoch_key) + np.uint64(ROUND_SALT) + np.uint64(4 * int(first_row) + int(array))
    return int(splitmix64(np.array([x]))[0]) & 0xFFFFFFFF


def row_seeds(seed: int, rows: np.ndarray) -> np.ndarray:
    """The per-row seeds ``fmix32(seed ^ (row * 0x9E3779B1))`` of ``rows`` (uint32)."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(rows, dtype=np.int64).astype(np.uint32) * _U32(0x9E3779B1)
    return fmix32(_U32(seed) ^ mixed)


def round_stochastic(values: np.ndarray, seed: int) -> np.ndarray:
    """bfloat16 bits (uint16) of a float32 array of shape ``(rows, cols)`` (or ``(rows,)``, one column),
    each element rounded with its own random bits (module docstring)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    matrix = values.reshape(values.shape[0], -1)
    seeds = row_seeds(seed, np.arange(matrix.shape[0]))
    with np.errstate(over="ignore"):
        bits = fmix32(seeds[:, None] + np.arange(matrix.shape[1], dtype=np.uint32)[None, :]) >> _U32(16)
        rounded = (matrix.view(np.uint32) + bits) >> _U32(16)
    return rounded.astype(np.uint16).reshape(values.shape)


def round_nearest(values: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) of a float32 array, rounded to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = (bits + _U32(0x7FFF) + ((bits >> _U32(16)) & _U32(1))) >> _U32(16)
    return rounded.astype(np.uint16)


def to_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bits (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << _U32(16)).view(np.float32)
