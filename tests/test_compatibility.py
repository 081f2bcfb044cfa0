"""What the restructuring must not change: the paper's configurations on ML-1M, and model files written by
cfn_fast 0.1.0 (tests/data, small synthetic models saved by the release before it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cfn_fast import CFN, RatingSet, train_test_split

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("name, version", [("item_sample", 1), ("user_bias", 2)])
def test_model_files_of_release_0_1_0_load_and_predict_identically(name, version):
    expected = json.loads((DATA / "model_0.1.0_expected.json").read_text())[name]
    path = DATA / f"model_0.1.0_{name}.npz"
    assert int(np.load(path)["cfn_version"][0]) == version
    # 0.1.0's numpy engine summed a row differently by the size of its batch (BLAS picks kernels by shape); since
    # issue 21 every row goes through products of one shape, so its values agree with 0.1.0's to float rounding
    for backend in ("numpy", "cpu"):
        model = CFN.load(path, backend=backend)
        np.testing.assert_allclose(model.predict(expected["users"], expected["items"]), expected["predictions"],
                                   rtol=0, atol=1e-6)
    model = CFN.load(path, backend="numpy")
    ids, scores = model.recommend(expected["recommend_user"], n=5, min_support=0)
    assert ids.tolist() == expected["recommend"][0]
    np.testing.assert_allclose(scores, expected["recommend"][1], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "ml-1m" / "ratings.npz").exists(), reason="../shared/data/ml-1m is absent")
@pytest.mark.parametrize("kind, paper_rmse", [("item", 0.8406), ("user", 0.8588)])
def test_the_paper_configuration_on_ml1m(kind, paper_rmse):
    """CFN("item") / CFN("user") with their defaults, cpu, ML-1M split seed 0: the test RMSE of 0.1.0."""
    data = np.load(SHARED / "ml-1m" / "ratings.npz", allow_pickle=False)
    ratings = RatingSet.from_arrays(data["user"], data["item"], data["rating"], scale=(1, 5))
    train, test = train_test_split(ratings, 0.1, seed=0)
    model = CFN(kind, backend="cpu").fit(train)
    assert round(model.score(test), 4) == paper_rmse
