"""Inputs read as the user meant them: CSV headers and delimiters, labelled (pandas) features and series,
the rating scale, missing and mixed ids, DataFrame and sparse inputs, top-n ties and min_support."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from small_models import TRAIN, same_layers, small  # tests/small_models.py

from cfn_fast import (
    RatingSet,
    load_movielens,
    load_ratings,
)
from cfn_fast.cli import main as cli_main
from cfn_fast.fitted.ranking import DEFAULT_MIN_SUPPORT, top_n

pd = pytest.importorskip("pandas")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ============================================================================= 7. misparsed files
def test_trailing_delimiter_with_header_does_not_shift_columns(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n196,242,3,881250949,\n186,302,4,891717742,\n"
                    "196,302,5,881250950,\n")
    rs = load_ratings(path)
    got = {(int(rs.user_ids[u]), int(rs.item_ids[i]), float(r)) for u, i, r in zip(rs.user, rs.item, rs.rating)}
    assert got == {(196, 242, 3.0), (186, 302, 4.0), (196, 302, 5.0)} and rs.scale == (3.0, 5.0)
    assert load_ratings(path, duplicates="last").nnz == 3     # the duplicates hint no longer meets garbage
    nohead = tmp_path / "plain.csv"
    nohead.write_text("196,242,3,881250949,\n186,302,4,891717742,\n")
    assert load_ratings(nohead).nnz == 2
    both = tmp_path / "both.csv"
    both.write_text("user,item,rating,\n1,2,3,\n2,1,4,\n")
    assert load_ratings(both).nnz == 2


def test_header_and_rows_with_different_field_counts_is_an_error(tmp_path):
    path = tmp_path / "shift.csv"
    path.write_text("userId,movieId,rating\n196,242,3,881250949\n186,302,4,891717742\n")
    with pytest.raises(ValueError, match=r"header has 3 field\(s\) \(userId, movieId, rating\) but the data rows "
                                         r"have 4: the columns would not line up"):
        load_ratings(path)
    partial = tmp_path / "partial.csv"
    partial.write_text("customer,movieId,stars\n1,2,3\n")
    with pytest.raises(ValueError, match="names no user column"):
        load_ratings(partial)


def test_double_colon_file_with_trailing_separator(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::900000000::\n2::20::3::900000100::\n")  # made-up rows in the ratings.dat layout
    assert load_ratings(path).nnz == 2


# ============================================================================= 8. labelled inputs
def test_feature_frames_are_aligned_on_their_index():
    base = TRAIN.with_features(user_features=None)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((TRAIN.n_items, 4)), index=TRAIN.item_ids)
    shuffled = frame.sample(frac=1.0, random_state=1)
    a = base.with_features(item_features=frame)
    b = base.with_features(item_features=shuffled)
    np.testing.assert_array_equal(a.item_features, b.item_features)
    np.testing.assert_array_equal(a.item_features, frame.to_numpy(np.float32))
    m1 = small().fit(base, item_features=frame)
    m2 = small().fit(base, item_features=shuffled)
    assert same_layers(m1.layers_, m2.layers_)
    extra = pd.concat([shuffled, pd.DataFrame(np.ones((2, 4)), index=[10_001, 10_002])])  # extra ids ignored
    np.testing.assert_array_equal(base.with_features(item_features=extra).item_features, a.item_features)
    series = pd.Series(np.arange(TRAIN.n_users, dtype=float), index=TRAIN.user_ids)[::-1]
    np.testing.assert_array_equal(base.with_features(user_features=series).user_features[:, 0],
                                  np.arange(TRAIN.n_users))
    rs = RatingSet.from_arrays(TRAIN.user_ids[TRAIN.user], TRAIN.item_ids[TRAIN.item], TRAIN.rating,
                               item_features=shuffled)
    np.testing.assert_array_equal(rs.item_features, a.item_features)


def test_misaligned_feature_index_is_rejected():
    ids = np.arange(1, 6)
    frame = pd.DataFrame(np.ones((5, 2)))                      # default 0..4 index, ids are 1..5
    with pytest.raises(ValueError, match=r"user_features: its index lacks 1 of the 5 user ids, e.g. \[5\]"):
        RatingSet.from_arrays(ids, ids, [1, 2, 3, 4, 5], user_features=frame)
    dup = pd.DataFrame(np.ones((5, 2)), index=[1, 1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"its index repeats user id\(s\) \[1\]"):
        RatingSet.from_arrays(ids, ids, [1, 2, 3, 4, 5], user_features=dup)
    strings = pd.DataFrame(np.ones((5, 2)), index=[str(i) for i in ids])
    with pytest.raises(ValueError, match=r"index dtype (object|str), ids dtype int64"):
        RatingSet.from_arrays(ids, ids, [1, 2, 3, 4, 5], user_features=strings)
    with pytest.raises(ValueError, match="item_features: its index lacks"):
        small().fit(TRAIN, item_features=pd.DataFrame(np.ones((TRAIN.n_items, 2)), index=TRAIN.item_ids + 1))


def test_parallel_series_with_different_indexes_are_rejected():
    frame = pd.DataFrame({"u": [1, 2, 3], "i": [1, 2, 3], "r": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="user and rating are pandas objects with different indexes"):
        RatingSet.from_arrays(frame.u, frame.i, frame.r.sort_values(ascending=False))
    assert RatingSet.from_arrays(frame.u, frame.i, frame.r).nnz == 3
    model = small(epochs=1).fit(TRAIN)
    users = pd.Series(TRAIN.user_ids[:3])
    with pytest.raises(ValueError, match="user_ids and item_ids are pandas objects with different indexes"):
        model.predict(users, pd.Series(TRAIN.item_ids[:3], index=[5, 6, 7]))


def test_fold_in_labelled_inputs():
    names = tuple(f"f{j}" for j in range(3))
    train = TRAIN.with_features(item_features=np.random.default_rng(0).random((TRAIN.n_items, 3)),
                                item_feature_names=names)
    model = small(epochs=1).fit(train)
    ratings = pd.Series([5.0, 3.0], index=train.user_ids[:2])
    vector = np.array([0.1, 0.2, 0.3])
    plain = model.fold_in(train.user_ids[:2], [5.0, 3.0], features=vector)
    labelled = model.fold_in(ratings, features=pd.Series(vector[::-1], index=names[::-1]))
    np.testing.assert_array_equal(plain.ratings, labelled.ratings)
    with pytest.raises(ValueError, match="labels do not match the model's feature names"):
        model.fold_in(ratings, features=pd.Series(vector, index=["a", "b", "c"]))


# ============================================================================= 9. scale
def test_scale_is_observed_unless_declared_in_files_and_folders(tmp_path, capsys):
    folder = tmp_path / "tens"
    folder.mkdir()
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 40, 600), rng.integers(0, 30, 600)
    keys = np.unique(user * 100 + item)
    np.savez(folder / "ratings.npz", user=keys // 100, item=keys % 100,
             rating=rng.integers(2, 11, len(keys)).astype(np.float32))
    alone = load_ratings(folder / "ratings.npz")
    assert alone.scale == (2.0, 10.0) and load_movielens(folder).scale == (2.0, 10.0)
    assert load_movielens(folder, scale=(1, 10)).scale == (1.0, 10.0)
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,2,1,0\n2,2,5,0\n1,3,4,0\n")
    assert load_ratings(csv).scale == (1.0, 5.0)           # not (0.5, 5) because of the file name
    assert cli_main(["fit", "--ratings", str(folder), "--hidden", "4", "--epochs", "1", "--backend", "numpy"]) == 0
    assert "scale [2, 10] (observed min..max; declare with --scale LOW HIGH)" in capsys.readouterr().out
    assert cli_main(["fit", "--ratings", str(folder), "--hidden", "4", "--epochs", "1", "--backend", "numpy",
                     "--scale", "1", "10"]) == 0
    assert "scale [1, 10] (declared with --scale)" in capsys.readouterr().out
    assert cli_main(["fit", "--ratings", str(folder), "--epochs", "1", "--scale", "3", "5"]) == 2
    assert "outside the scale [3, 5]" in capsys.readouterr().err


@pytest.mark.skipif(not (Path("/work/shared/data/ml-100k").is_dir() or (ROOT.parent / "shared/data/ml-100k").is_dir()),
                    reason="MovieLens-100K not present")
def test_movielens_100k_scale_is_its_observed_one_to_five():
    folder = Path("/work/shared/data/ml-100k")
    folder = folder if folder.is_dir() else ROOT.parent / "shared/data/ml-100k"
    assert load_movielens(folder, side_info=False).scale == (1.0, 5.0)


# ============================================================================= 10. missing ids
@pytest.mark.parametrize("missing", [None, float("nan"), "pd.NA"])
def test_missing_ids_are_rejected(missing):
    value = pd.NA if missing == "pd.NA" else missing
    with pytest.raises(ValueError, match=r"user ids contain 1 missing value\(s\)"):
        RatingSet.from_arrays(np.array([1, value, 2], dtype=object), [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"item ids contain 1 missing value\(s\)"):
        RatingSet.from_dataframe(pd.DataFrame({"user": ["a", "b", "c"], "item": ["x", value, "z"],
                                               "rating": [1.0, 2.0, 3.0]}))
    nullable = pd.DataFrame({"user": pd.array([1, None, 3], dtype="Int64"), "item": [1, 2, 3], "rating": [1, 2, 3]})
    with pytest.raises(ValueError, match="missing value"):
        RatingSet.from_dataframe(nullable)


# ============================================================================= 16. load_ratings of objects
def test_load_ratings_takes_a_dataframe_or_a_sparse_matrix():
    frame = pd.DataFrame({"userId": [1, 2, 2], "movieId": [10, 10, 20], "rating": [4.0, 2.0, 5.0]})
    rs = load_ratings(frame)
    assert rs.nnz == 3 and list(rs.user_ids) == [1, 2] and rs.scale == (2.0, 5.0)
    assert load_ratings(frame, scale=(1, 5)).scale == (1.0, 5.0)
    matrix = sp.csr_matrix(np.array([[0, 3.0, 0], [1.0, 0, 5.0]]))
    rs = load_ratings(matrix)
    assert rs.nnz == 3 and rs.n_users == 2 and rs.n_items == 3
    with pytest.raises(ValueError, match=r"DataFrame has no item column"):
        load_ratings(frame.rename(columns={"movieId": "thing"}))
    with pytest.raises(TypeError, match="load_ratings takes a file path, a pandas DataFrame or a scipy.sparse"):
        load_ratings(42)


# ============================================================================= 19. min_support
def test_top_n_breaks_ties_by_the_unclipped_score_and_filters_support():
    clipped = np.array([5.0, 5.0, 4.0, 5.0])
    unclipped = np.array([5.2, 6.1, 4.0, 5.9])
    np.testing.assert_array_equal(top_n(clipped, 3), [0, 1, 3])
    np.testing.assert_array_equal(top_n(clipped, 3, unclipped=unclipped), [1, 3, 0])
    support = np.array([50, 1, 9, 10])
    np.testing.assert_array_equal(top_n(clipped, 3, unclipped=unclipped, support=support, min_support=10), [3, 0])


def test_recommend_min_support_default_and_override():
    assert DEFAULT_MIN_SUPPORT == 10
    model = small(epochs=2).fit(TRAIN)
    support = np.bincount(TRAIN.item, minlength=TRAIN.n_items)
    for k in (0, 10, 40):
        ids, scores = model.recommend(TRAIN.user_ids[3], n=TRAIN.n_items, min_support=k)
        assert np.all(support[TRAIN.item_index(ids)] >= k)
        seen = np.unique(TRAIN.item[TRAIN.user == 3])
        eligible = (support >= k)
        eligible[seen] = False
        assert len(ids) == eligible.sum()
    default = model.recommend(TRAIN.user_ids[3], n=5)[0]
    np.testing.assert_array_equal(default, model.recommend(TRAIN.user_ids[3], n=5, min_support=10)[0])
    with pytest.raises(ValueError, match="min_support must be an integer >= 0, got -1"):
        model.recommend(TRAIN.user_ids[3], min_support=-1)
    fold = model.fold_in(TRAIN.user_ids[:3], [5.0, 4.0, 1.0], features=TRAIN.item_features[0])
    user_support = np.bincount(TRAIN.user, minlength=TRAIN.n_users)
    ids, _ = fold.recommend(20, min_support=25)
    assert np.all(user_support[TRAIN.user_index(ids)] >= 25)


def test_cli_recommend_min_support(tmp_path, capsys):
    path = small(epochs=1).fit(TRAIN).save(tmp_path / "m.npz")
    user = str(TRAIN.user_ids[0])
    assert cli_main(["recommend", "--model", str(path), "--user", user, "-n", "500", "--min-support", "30",
                     "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    support = np.bincount(TRAIN.item, minlength=TRAIN.n_items)
    items = [e["item"] for e in out["recommendations"][0]["items"]]
    assert out["min_support"] == 30 and items and np.all(support[TRAIN.item_index(items)] >= 30)
    assert cli_main(["recommend", "--model", str(path), "--user", user, "--min-support", "-2"]) == 2


def test_mixed_id_types_are_rejected_not_merged():
    with pytest.raises(ValueError, match="user ids mix strings and int values"):
        RatingSet.from_arrays(np.array([1, "1", 2], dtype=object), [1, 2, 3], [1, 2, 3])
    assert RatingSet.from_arrays(np.array([1, 2, 3], dtype=object), [1, 2, 3], [1, 2, 3]).user_ids.dtype.kind == "i"


def test_rmse_of_series_with_different_indexes_is_rejected():
    from cfn_fast import rmse
    with pytest.raises(ValueError, match="predicted and actual are pandas objects with different indexes"):
        rmse(pd.Series([1.0, 2.0]), pd.Series([1.0, 2.0], index=[1, 0]))


def test_side_tables_with_trailing_delimiters_keep_their_columns(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    np.savez(folder / "ratings.npz", user=np.array([1, 2, 2]), item=np.array([10, 10, 20]),
             rating=np.array([1.0, 4.0, 5.0]))
    (folder / "items.csv").write_text("id,genres,\n10,Action|Comedy,\n20,Drama,\n")
    rs = load_movielens(folder)
    names = list(rs.item_feature_names)
    row = dict(zip(names, rs.item_features[rs.item_index([10])[0]]))
    assert row["genre=Action"] == 1 and row["genre=Comedy"] == 1 and row["genre=Drama"] == 0


def test_fold_in_file_with_the_rating_column_first_is_rejected(tmp_path):
    from cfn_fast.cli.product import read_ratings_of_new
    path = tmp_path / "new.csv"
    path.write_text("rating,item\n5,3\n")
    with pytest.raises(ValueError, match="puts the columns in the order rating,id"):
        read_ratings_of_new(path)
    path.write_text("item,rating\n3,5\n")
    assert read_ratings_of_new(path) == (["3"], [5.0])

