"""What the ONNX tests share: a recommend graph's top lists checked against ``CFN.recommend_batch``."""
from __future__ import annotations

from typing import Any

import numpy as np


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
