"""A synthetic rating set the package generates itself (the embedded default of the main job).

Ratings follow a biased low-rank model, ``r = μ + b_u + b_i + u·v + noise`` quantised to stars,
observed on a long-tailed pattern (a few very active users and very popular items, as in
MovieLens).  Side information is derived from the latent factors, so it carries real
signal: users get a one-hot "segment" and a one-hot activity bracket, items get multi-hot
"genres" and a one-hot popularity bracket.
"""
from __future__ import annotations

import numpy as np

from .ratings import RatingSet

__all__ = ["ML10M_SHAPE", "ML20M_SHAPE", "NETFLIX_SHAPE", "synthetic_ratings"]

#: (users, items, ratings) of the MovieLens sets that are not on these machines.
ML10M_SHAPE = (69_878, 10_677, 10_000_054)
ML20M_SHAPE = (138_493, 26_744, 20_000_263)
#: (users, items, ratings) of the Netflix Prize training set.
NETFLIX_SHAPE = (480_189, 17_770, 100_480_507)


def synthetic_ratings(n_users: int = 2000, n_items: int = 1000, n_ratings: int = 100_000, *,
                      rank: int = 8, noise: float = 0.45, half_stars: bool = False, side_info: bool = True,
                      seed: int = 0, scale: tuple[float, float] | None = None,
                      max_density: float = 0.5) -> RatingSet:
    """Generate a MovieLens-like rating set on the 1-5 star scale, deterministic for ``seed``.

    Every user and item has at least one rating.  With ``side_info=True`` user features are
    a one-hot latent segment (8) + activity bracket (4), item features multi-hot genres (12) +
    popularity bracket (4).

    ``scale=(low, high)`` maps the same latent ratings linearly onto another integer scale
    (e.g. ``(1, 100)`` or ``(-10, 10)``), rounded to whole numbers; ``half_stars`` then has no
    effect.  ``max_density`` (at most 0.9) bounds ``n_ratings / (n_users · n_items)``: dense
    sets (thousands of ratings per item) need more than the default half.
    """
    if n_users < 1 or n_items < 1:
        raise ValueError("n_users and n_items must be positive")
    if not 0 < max_density <= 0.9:
        raise ValueError(f"max_density must lie in (0, 0.9], got {max_density}")
    most = int(n_users * n_items * max_density)
    if not n_users + n_items <= n_ratings <= most:
        raise ValueError(f"n_ratings must lie in [n_users + n_items, n_users * n_items * max_density] "
                         f"= [{n_users + n_items}, {most}], got {n_ratings}")
    if scale is not None and not (len(scale) == 2 and float(scale[0]) < float(scale[1])):
        raise ValueError(f"scale must be (low, high) with low < high, got {scale!r}")
    rng = np.random.default_rng(seed)
    user_activity = _long_tail(rng, n_users, 1.0)
    item_popularity = _long_tail(rng, n_items, 1.1)
    user, item = _sample_pairs(rng, user_activity, item_popularity, n_ratings)

    user_factors = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_users, rank)).astype(np.float32)
    item_factors = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_items, rank)).astype(np.float32)
    user_bias = rng.normal(0.0, 0.35, n_users).astype(np.float32)
    # popular items are rated a little higher, as in MovieLens
    item_bias = (rng.normal(0.0, 0.4, n_items) + 0.3 * (np.argsort(np.argsort(item_popularity)) / n_items - 0.5))
    signal = np.einsum("ij,ij->i", user_factors[user], item_factors[item]) * 1.6
    raw = 3.55 + user_bias[user] + item_bias[item] + signal + rng.normal(0.0, noise, len(user))
    if scale is None:
        step = 0.5 if half_stars else 1.0
        low, high = (0.5 if half_stars else 1.0), 5.0
        rating = np.clip(np.round(raw / step) * step, low, high).astype(np.float32)
    else:
        low, high = float(scale[0]), float(scale[1])
        rating = np.clip(np.round(low + (raw - 1.0) / 4.0 * (high - low)), low, high).astype(np.float32)

    user_features = item_features = None
    if side_info:
        user_features = np.hstack([
            _one_hot(np.argmax(user_factors @ rng.normal(size=(rank, 8)), axis=1), 8),
            _one_hot(_bracket(np.bincount(user, minlength=n_users), 4), 4),
        ])
        genre_scores = item_factors @ rng.normal(size=(rank, 12))
        genres = genre_scores > np.quantile(genre_scores, 0.83, axis=0)
        genres[np.arange(n_items), np.argmax(genre_scores, axis=1)] = True  # at least one genre
        item_features = np.hstack([genres.astype(np.float32),
                                   _one_hot(_bracket(np.bincount(item, minlength=n_items), 4), 4)])
    ratings = RatingSet.from_arrays(user, item, rating, scale=(low, high),
                                    user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                                    user_features=user_features, item_features=item_features)
    names_u = tuple(f"segment_{k}" for k in range(8)) + tuple(f"activity_{k}" for k in range(4))
    names_i = tuple(f"genre_{k}" for k in range(12)) + tuple(f"popularity_{k}" for k in range(4))
    return ratings.with_features(user_feature_names=names_u, item_feature_names=names_i) if side_info \
        else ratings


def _long_tail(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf-like weights in random order: weight of rank k is 1 / (k + 10)^exponent."""
    weights = 1.0 / (np.arange(n) + 10.0) ** exponent
    return rng.permutation(weights / weights.sum())


def _sample_pairs(rng: np.random.Generator, p_user: np.ndarray, p_item: np.ndarray,
                  n_ratings: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs drawn from the product of the two long-tailed laws.

    Each user and each item first gets one pair (no empty rows), then pairs are drawn in
    rounds and de-duplicated until ``n_ratings`` distinct pairs exist.
    """
    n_users, n_items = len(p_user), len(p_item)
    seed_users = np.r_[np.arange(n_users), rng.choice(n_users, n_items, p=p_user)]
    seed_items = np.r_[rng.choice(n_items, n_users, p=p_item), np.arange(n_items)]
    keys = np.unique(seed_users.astype(np.int64) * n_items + seed_items)
    flatten = 0.0
    while len(keys) < n_ratings:
        # later rounds mix in a growing share of uniform draws: the long-tailed law keeps
        # hitting pairs it already drew, and a pure retry loop would crawl at ML-10M scale
        want = int((n_ratings - len(keys)) * 1.3) + 16
        pu = (1 - flatten) * p_user + flatten / n_users
        pi = (1 - flatten) * p_item + flatten / n_items
        fresh = rng.choice(n_users, want, p=pu).astype(np.int64) * n_items + rng.choice(n_items, want, p=pi)
        keys = np.unique(np.concatenate([keys, fresh]))
        flatten = min(1.0, flatten + 0.25)
    if len(keys) > n_ratings:
        # trim the random draws, never the seeds, so no row or column becomes empty
        seed_keys = np.unique(seed_users.astype(np.int64) * n_items + seed_items)
        extra = np.setdiff1d(keys, seed_keys, assume_unique=True)
        keys = np.union1d(seed_keys, rng.choice(extra, n_ratings - len(seed_keys), replace=False))
    keys = rng.permutation(keys)
    return (keys // n_items).astype(np.int64), (keys % n_items).astype(np.int64)


def _bracket(counts: np.ndarray, n_brackets: int) -> np.ndarray:
    """Quantile bracket (0..n_brackets-1) of each count."""
    ranks = np.argsort(np.argsort(counts, kind="stable"), kind="stable")
    return (ranks * n_brackets // len(counts)).astype(np.int64)


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(labels), n), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out
