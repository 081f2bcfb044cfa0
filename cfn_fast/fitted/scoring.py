"""Scoring a fitted model: predicted ratings of (user, item) pairs and of whole rows, top-n lists.

Functions over a :class:`~cfn_fast.fitted.runtime.Runtime` (the fitted value and its engine).  A sample
(user for U-CFN, item for I-CFN) with no training ratings is predicted from its side information when
the model has some, otherwise by the mean training rating of the input (the item's mean for U-CFN, the
user's for I-CFN; the global mean if that has none).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import interop
from ..data.ratings import build_csr
from .ranking import check_min_support, top_n
from .runtime import Runtime

__all__ = ["as_index", "ids_to_index", "predict_pairs", "input_mean_rating", "user_scores", "recommend_batch",
           "item_codes", "support_of"]


def as_index(index: Any, n: int, what: str) -> np.ndarray:
    """``index`` as an int64 array of indices in ``[0, n)`` (``IndexError`` / ``TypeError`` naming ``what``)."""
    arr = np.atleast_1d(np.asarray(interop.to_host(index)))
    if arr.ndim != 1:
        raise ValueError(f"{what} indices must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{what} indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)]
        raise IndexError(f"{what} indices must lie in [0, {n}), got {bad[:5].tolist()}")
    return arr


def ids_to_index(rt: Runtime, ids: Any, side: str) -> np.ndarray:
    """Training indices of original ``ids`` of ``side`` (``KeyError`` saying what an unknown id needs)."""
    ids = interop.to_host(ids)
    train, kind = rt.fitted.train, rt.fitted.kind
    lookup = train.user_index if side == "user" else train.item_index
    try:
        return lookup(ids)
    except KeyError as exc:
        text = exc.args[0] if exc.args else str(exc)
        if side == kind or rt.fitted.blend is not None:
            hint = f"use fold_in to score a new {side} without retraining"
        else:
            hint = (f"a new {side} is an input dimension of this {'U' if kind == 'user' else 'I'}-CFN "
                    f"and needs retraining")
        raise KeyError(f"{text} ({hint})") from None


def predict_pairs(rt: Runtime, users: Any, items: Any) -> np.ndarray:
    """Predicted ratings (float64, clipped) of pairs of user and item training indices."""
    train, blend = rt.fitted.train, rt.fitted.blend
    users = as_index(users, train.n_users, "user")
    items = as_index(items, train.n_items, "item")
    if len(users) != len(items):
        raise ValueError(f"users and items differ in length: {len(users)} and {len(items)}")
    if blend is not None:
        members = [predict_pairs(member, users, items) for member in rt.members]
        return blend.combine("pairs", blend.bias.predict(users, items), members,
                             lambda f: f.predict(blend.bias, users, items))[0]
    net = rt.network
    samples, inputs = (users, items) if net.kind == "user" else (items, users)
    outputs = np.zeros(len(samples), dtype=np.float32)
    if len(samples) == 0:
        return outputs.astype(np.float64)
    counts = net.preprocessing.sample_count[samples]
    # cold samples (no training ratings) are predicted from side information when there is some
    use_net = (counts > 0) | (net.side is not None)
    if use_net.any():
        with rt.memory_guard("predicting"):
            outputs[use_net] = rt.engine.predict_entries(net.inputs, net.side, samples[use_net], inputs[use_net])
    ratings = net.preprocessing.to_rating(samples, outputs, inputs)
    fallback = ~use_net
    if fallback.any():
        ratings[fallback] = input_mean_rating(rt, inputs[fallback])
    return ratings


def input_mean_rating(rt: Runtime, inputs: np.ndarray) -> np.ndarray:
    """Mean training rating of each input (item for U-CFN, user for I-CFN); global mean if none."""
    def compute() -> np.ndarray:
        pre, train = rt.network.preprocessing, rt.fitted.train
        index, n = (train.item, train.n_items) if rt.network.kind == "user" else (train.user, train.n_users)
        counts = np.bincount(index, minlength=n)
        sums = np.bincount(index, weights=train.rating.astype(np.float64), minlength=n)
        global_rating = pre.mid + pre.half_range * pre.global_mean
        means = np.where(counts > 0, sums / np.maximum(counts, 1), global_rating)
        return np.clip(means, pre.low, pre.high)
    return rt.cached("input_means", compute)[inputs]


def item_codes(rt: Runtime) -> np.ndarray:
    """Hidden codes of every item's training vector (I-CFN), cached until the next training."""
    def compute() -> np.ndarray:
        with rt.memory_guard("encoding every item"):
            return rt.engine.encode(rt.network.inputs, rt.network.side)
    return rt.cached("codes", compute)


def user_scores(rt: Runtime, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted ratings ``(len(users), n_items)`` of known user indices, and the same scores before
    clipping to the rating scale (the ranking's tie-breaker)."""
    blend = rt.fitted.blend
    if blend is not None:
        base = blend.bias.predict(users[:, None], np.arange(rt.fitted.train.n_items)[None, :])
        return blend.combine("pairs", base, [user_scores(member, users)[0] for member in rt.members],
                             lambda f: f.user_scores(blend.bias, users))
    net = rt.network
    pre = net.preprocessing
    n_items = rt.fitted.train.n_items
    raw = np.empty((len(users), n_items), dtype=np.float64)
    if net.kind == "user":
        use_net = (pre.sample_count[users] > 0) | (net.side is not None)
        rows = users[use_net]
        if len(rows):
            side = None if net.side is None else net.side[rows]
            with rt.memory_guard("recommending"):
                out = rt.engine.decode(rt.engine.encode(net.inputs[rows], side), side)
            raw[use_net] = pre.invert(out, pre.unit_offsets(pre.sample_mean[rows]))[1]
        if (~use_net).any():
            raw[~use_net] = input_mean_rating(rt, np.arange(n_items))[None, :]
    else:
        with rt.memory_guard("recommending"):
            out = rt.engine.decode(item_codes(rt), net.side, cols=users)  # (n_items, len(users))
        raw[:] = pre.invert(out, pre.unit_offsets(pre.sample_mean, users))[1].T
        cold = (pre.sample_count == 0) if net.side is None else np.zeros(n_items, dtype=bool)
        if cold.any():
            raw[:, cold] = input_mean_rating(rt, users)[:, None]
    return np.clip(raw, pre.low, pre.high), raw


def seen_items(rt: Runtime) -> sp.csr_matrix:
    """Users x items CSR of the training ratings (what ``exclude_seen`` skips)."""
    train = rt.fitted.train
    return rt.cached("seen", lambda: build_csr(train.user, train.item, np.ones(train.nnz, dtype=np.float32),
                                               (train.n_users, train.n_items)))


def support_of(rt: Runtime, side: str) -> np.ndarray:
    """Training ratings of every user or item (cached: every recommendation reads them)."""
    train = rt.fitted.train
    index, n = (train.item, train.n_items) if side == "item" else (train.user, train.n_users)
    return rt.cached(f"support_{side}", lambda: np.bincount(index, minlength=n))


def recommend_batch(rt: Runtime, users: np.ndarray, n: int, exclude_seen: bool, chunk: int,
                    min_support: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-``n`` ``(item_ids, scores)`` of each known user index in ``users`` (see ``CFN.recommend``)."""
    min_support = check_min_support(min_support)
    train = rt.fitted.train
    seen = seen_items(rt) if exclude_seen else None
    support = support_of(rt, "item") if min_support else None
    result = []
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        scores, unclipped = user_scores(rt, block)
        for row, u in enumerate(block):
            banned = None if seen is None else seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
            best = top_n(scores[row], int(n), banned, unclipped=unclipped[row], support=support,
                         min_support=min_support)
            result.append((train.item_ids[best], scores[row, best]))
    return result
