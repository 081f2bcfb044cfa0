"""Evaluation metrics: RMSE, mean ± 95% confidence interval over seeds, RMSE by item popularity."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .data.labelled import check_parallel

__all__ = ["rmse", "MeanCI", "mean_ci", "rmse_by_popularity", "POPULARITY_BUCKETS"]


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error (pandas Series must share one index: rows are paired by position)."""
    check_parallel({"predicted": predicted, "actual": actual})
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"shapes differ: predicted {predicted.shape}, actual {actual.shape}")
    if predicted.size == 0:
        raise ValueError("RMSE of an empty set is undefined")
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


@dataclass(frozen=True)
class MeanCI:
    mean: float
    half_width: float   # 95% interval is mean ± half_width (Student t)
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


def mean_ci(values: list[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean and Student-t confidence half-width of repeated measurements (e.g. RMSE over seeds)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if values.size == 1:
        return MeanCI(float(values[0]), float("nan"), 1)
    sem = values.std(ddof=1) / np.sqrt(values.size)
    return MeanCI(float(values.mean()), float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * sem),
                  int(values.size))


#: Popularity buckets of the paper's Table 2 (items sorted by number of training ratings).
POPULARITY_BUCKETS = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0))


def rmse_by_popularity(predicted: np.ndarray, actual: np.ndarray, item: np.ndarray, train_item_counts: np.ndarray,
                       buckets: tuple[tuple[float, float], ...] = POPULARITY_BUCKETS) -> dict[str, float]:
    """RMSE of the test ratings whose item lies in each popularity quantile bucket, plus ``"full"``.

    Items are ranked by their number of training ratings, least popular first; bucket
    ``(0.0, 0.2)`` holds the 20% least rated items.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    n_items = len(train_item_counts)
    rank = np.empty(n_items, dtype=np.float64)
    rank[np.argsort(train_item_counts, kind="stable")] = np.arange(n_items) / n_items
    item_rank = rank[item]
    out = {}
    for low, high in buckets:
        sel = (item_rank >= low) & ((item_rank < high) if high < 1.0 else (item_rank <= high))
        out[f"{int(low * 100)}-{int(high * 100)}%"] = rmse(predicted[sel], actual[sel]) if sel.any() else float("nan")
    out["full"] = rmse(predicted, actual)
    return out
