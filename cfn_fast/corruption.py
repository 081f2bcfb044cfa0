"""Masking noise: which known input entries are hidden in a mini-batch (paper Sec. 3.2).

Each known entry of a sample is hidden (set to 0 at the input) with probability
``mask_ratio``, drawn anew for every mini-batch.  The draw is a counter-based hash of
``(seed, epoch, position of the entry in the training CSR)``: every backend (NumPy,
Cython, CUDA) computes the same bits with no shared RNG state, so runs are
deterministic for a seed whatever the thread count, and backends can be compared
exactly.  Each sample is in exactly one mini-batch per epoch, so "per epoch and entry"
is "anew every mini-batch".

If the draw would hide *every* known entry of a sample, hidden and visible are swapped
(the authors' Torch ``SDAECriterionGPU``), so a sample never loses its whole input.

Dropout (not in the paper; ``dropout=p``) draws from the same hash with its own salt: unit ``j`` of hidden
layer ``l`` of sample ``row`` is dropped in ``epoch`` when ``splitmix64(dropout_key + row * H + offset_l + j)``
has its top 24 bits below ``dropout_threshold(p)``, where ``H`` is the sum of the hidden widths and
``offset_l`` the widths of the hidden layers before ``l``.  A kept unit is scaled by ``1 / (1 - p)``
(inverted dropout), so inference uses the network as it is.  The draw depends on the sample, not on its
batch nor on the thread count, like the masking noise.
"""
from __future__ import annotations

import numpy as np

__all__ = ["epoch_key", "mask_threshold", "hidden_entries", "splitmix64", "DROPOUT_SALT", "dropout_key",
           "dropout_threshold", "dropout_scale", "dropout_multipliers"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_WORD = (1 << 64) - 1

#: Added to the epoch key for the dropout draws: their counters (``row * H + unit``) then never meet the
#: masking noise's (CSR positions counted from 0) for any data set that fits in memory.
DROPOUT_SALT = 0xD50F_0D7A_5EED_0003


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic); the same in C and CUDA."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def epoch_key(seed: int, epoch: int) -> int:
    """The 64-bit stream key of one epoch: ``splitmix64(seed * golden + epoch)``."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(epoch)
    return int(splitmix64(np.array([x]))[0])


def mask_threshold(mask_ratio: float) -> int:
    """An entry is hidden when the top 24 bits of its hash are below this integer."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(round(mask_ratio * (1 << 24)))


def hidden_entries(indptr: np.ndarray, rows: np.ndarray, key: int, threshold: int) -> np.ndarray:
    """Boolean 'hidden' flag for every known entry of ``rows``, in CSR order row after row.

    ``indptr`` is the training CSR's row pointer; entry ``k`` (its global CSR position)
    is hidden when ``splitmix64(key + k) >> 40 < threshold``.
    """
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = (ends - starts).astype(np.int64)
    if counts.sum() == 0:
        return np.zeros(0, dtype=bool)
    # global CSR positions of the batch's entries, row after row
    offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    positions = (np.arange(counts.sum(), dtype=np.int64) + offsets).astype(np.uint64)
    with np.errstate(over="ignore"):
        bits = splitmix64(np.uint64(key) + positions) >> np.uint64(40)
    hidden = bits < np.uint64(threshold)
    # swap rule: a row whose every entry is hidden gets all of them visible instead
    row_of = np.repeat(np.arange(len(rows)), counts)
    n_hidden = np.bincount(row_of, weights=hidden, minlength=len(rows))
    all_hidden = (n_hidden == counts) & (counts > 0)
    hidden ^= all_hidden[row_of]
    return hidden


# ----------------------------------------------------------------------------- dropout of hidden units
def dropout_key(seed: int, epoch: int) -> int:
    """The 64-bit key of one epoch's dropout draws: :func:`epoch_key` plus :data:`DROPOUT_SALT` (wrapping)."""
    return (epoch_key(seed, epoch) + DROPOUT_SALT) & _WORD


def dropout_threshold(dropout: float) -> int:
    """A hidden unit is dropped when the top 24 bits of its hash are below this integer."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return int(round(dropout * (1 << 24)))


def dropout_scale(dropout: float) -> np.float32:
    """What a kept unit is multiplied by, ``1 / (1 - p)`` in float32 (every backend uses this value)."""
    return np.float32(1.0 / (1.0 - dropout))


def dropout_multipliers(key: int, rows: np.ndarray, hidden_widths: tuple[int, ...], threshold: int,
                        scale: np.float32) -> list[np.ndarray]:
    """For each hidden layer, the ``len(rows) x width`` float32 multipliers of its units: 0 (dropped) or
    ``scale`` (kept), for the samples ``rows`` (their indices in the training set)."""
    total = np.uint64(sum(hidden_widths))
    base = np.asarray(rows, dtype=np.uint64)[:, None] * total
    out, offset = [], 0
    for width in hidden_widths:
        counters = base + np.arange(offset, offset + width, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            dropped = (splitmix64(np.uint64(key) + counters) >> np.uint64(40)) < np.uint64(threshold)
        out.append(np.where(dropped, np.float32(0.0), scale).astype(np.float32))
        offset += width
    return out
