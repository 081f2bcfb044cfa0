"""What the ONNX tests share: a session on a built graph, a refused run, a recommend graph's top lists checked against
``CFN.recommend_batch``, and the refusals of the recommend graphs that take user indices (I-CFN's and a blend's).
onnx and onnxruntime are imported where used: a test module imports this before it skips without them."""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest


def session(model: Any, graph: str, **options: Any) -> Any:
    """An onnxruntime session on ``model``'s ``graph`` (built in memory), its log quiet below errors."""
    import onnxruntime as ort

    from cfn_fast.export.onnx import build_onnx
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(build_onnx(model.runtime_, graph, **options).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def refused(sess: Any, feeds: dict, rule: str) -> None:
    """The run fails, and onnxruntime's message carries the refusing node's name: the rule broken."""
    with pytest.raises(Exception, match=re.escape(rule)):
        sess.run(None, feeds)


def assert_user_index_recommend_refuses_bad_input(sess: Any, n_users: int, n_items: int) -> None:
    """A recommend graph fed ``users``, ``exclude`` and ``k`` runs on good input and refuses, naming the rule, user
    indices out of range, excluded items out of range (``-1`` pads), and ``exclude`` of another batch size."""
    users = np.array([0, 1, 2], np.int64)
    exclude = np.array([[3, -1], [-1, -1], [0, 1]], np.int64)   # -1 pads
    k = np.array([5], np.int64)
    assert sess.run(None, {"users": users, "exclude": exclude, "k": k})[0].shape == (3, 5)
    for bad in (-1, -2, n_users, np.iinfo(np.int64).max):
        refused(sess, {"users": np.array([0, bad, 2], np.int64), "exclude": exclude, "k": k},
                f"users: indices must lie in [0, {n_users})")
    for bad in (-2, n_items, np.iinfo(np.int64).min):
        bad_exclude = exclude.copy()
        bad_exclude[1, 0] = bad
        refused(sess, {"users": users, "exclude": bad_exclude, "k": k},
                f"exclude: item indices must lie in [0, {n_items}), or be -1 for padding")
    for n_users_fed, n_exclude in ((3, 1), (3, 2), (1, 3), (2, 3)):   # batch 1 would broadcast
        refused(sess, {"users": users[:n_users_fed], "exclude": np.full((n_exclude, 2), -1, np.int64), "k": k},
                "exclude: one row per user (the same batch size as users)")


def assert_recommend_graph_matches(sess: Any, feeds: dict[str, np.ndarray], model: Any, users: np.ndarray,
                                   tolerance: float) -> None:
    """Run the recommend graph ``sess`` on ``feeds`` (its users, exclude or ratings, ``k`` = 10) with the graph's
    default ``min_support`` and with 0 and 3, each against ``recommend_batch`` of the same users and minimum."""
    train = model.train_
    for min_support in (None, 0, 3):  # None: the graph's default, DEFAULT_MIN_SUPPORT as in recommend_batch
        if min_support is None:
            expected = model.recommend_batch(train.user_ids[users], n=10)
        else:
            expected = model.recommend_batch(train.user_ids[users], n=10, min_support=min_support)
            feeds = {**feeds, "min_support": np.array([min_support], dtype=np.int64)}
        top, scores = sess.run(None, feeds)
        for row, (ids, expected_scores) in enumerate(expected):
            np.testing.assert_array_equal(train.item_ids[top[row][:len(ids)]], ids)
            np.testing.assert_allclose(scores[row][:len(ids)], expected_scores, atol=tolerance, rtol=0)
