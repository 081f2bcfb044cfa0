"""Ids (issue 21): exact for every integer type up to 64 bits, in training, in queries and in model files; string
ids of any length without fixed-width copies."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from model_files import read_arrays, write_rehashed  # tests/model_files.py: edit and re-hash a file

from cfn_fast import CFN, RatingSet, load_ratings, synthetic_ratings

BIG = 2 ** 53 + 1            # the first integer a float64 cannot hold
HUGE = 2 ** 64 - 2           # beyond int64: only uint64 holds it
INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.fixture(scope="module")
def base() -> RatingSet:
    return synthetic_ratings(60, 40, 900, seed=0, side_info=False)


def _relabelled(base: RatingSet, users: np.ndarray) -> RatingSet:
    """``base`` with user index k renamed ``users[k]``."""
    return RatingSet.from_arrays(users[base.user], base.item_ids[base.item], base.rating, scale=base.scale)


def test_ids_above_2_53_are_found_whatever_the_query_type(base, tmp_path):
    for users in (np.arange(BIG, BIG + base.n_users, dtype=np.int64),          # int64 beyond float precision
                  np.arange(HUGE - base.n_users, HUGE, dtype=np.uint64)):       # uint64 beyond int64
        data = _relabelled(base, users)
        assert data.user_ids.dtype == users.dtype and np.array_equal(data.user_ids, users)
        model = CFN("user", (8,), 1, backend="numpy").fit(data)
        items = data.item_ids[:3]
        expected = model.predict_indices([5, 6, 7], [0, 1, 2])
        queries = [users[5:8], [int(u) for u in users[5:8]]]
        if users.max() <= np.iinfo(np.int64).max:
            queries += [users[5:8].astype(np.uint64), users[5:8].astype(np.int64)]
        for query in queries:                                   # the finding: reported unknown
            np.testing.assert_array_equal(model.predict(query, items), expected)
        assert np.array_equal(model.recommend_batch(users[5:6])[0][0], model.recommend(int(users[5]))[0])
        loaded = CFN.load(model.save(tmp_path / "big.npz"))
        assert loaded.train_.user_ids.dtype == users.dtype and np.array_equal(loaded.train_.user_ids, users)
        np.testing.assert_array_equal(loaded.predict(queries[0], items), expected)
    with pytest.raises(KeyError, match="unknown user id"):     # a uint64 beyond int64 is not in an int64 map
        model_ids = _relabelled(base, np.arange(base.n_users, dtype=np.int64))
        model_ids.user_index(np.array([2 ** 63 + 5], dtype=np.uint64))


@pytest.mark.parametrize("stored", INT_TYPES, ids=lambda t: t.__name__)
def test_every_integer_type_finds_every_other(base, stored):
    users = np.arange(3, 3 + base.n_users).astype(stored)
    data = _relabelled(base, users)
    for query_type in INT_TYPES:
        np.testing.assert_array_equal(data.user_index(users[[0, 9, 50]].astype(query_type)), [0, 9, 50])
    assert data.user_index(np.array([200], dtype=np.int64), missing="-1").tolist() == [-1]


def test_python_integers_up_to_64_bits(base):
    users = [2 ** 64 - 1 - k for k in range(base.n_users)]
    data = _relabelled(base, np.array(users, dtype=object))
    assert data.user_ids.dtype == np.uint64 and data.user_index([2 ** 64 - 1]).tolist() == [base.n_users - 1]
    with pytest.raises(ValueError, match=r"must fit in 64 bits \(at most 2\*\*64 - 1\); found 18446744073709551616"):
        RatingSet.from_arrays([2 ** 64, 1], [1, 2], [3, 4])
    with pytest.raises(ValueError, match="beyond 2\\*\\*53 where a float no longer holds every integer"):
        RatingSet.from_arrays(np.array([2.0 ** 60, 1.0]), [1, 2], [3, 4])


def _peak_growth(make) -> int:
    tracemalloc.start()
    try:
        make()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_one_long_string_id_costs_its_own_length_not_a_copy_per_id(tmp_path):
    rng = np.random.default_rng(0)   # ML-100K-sized: 100,000 ratings of 943 users and 1,682 items
    user_names = [f"user-{k}" for k in range(943)]
    item_names = [f"item-{k}" for k in range(1682)]
    users = [user_names[k] for k in rng.integers(0, 943, 100_000)]
    items = [item_names[k] for k in rng.integers(0, 1682, 100_000)]
    ratings = rng.integers(1, 6, 100_000).astype(float)
    long_id = "x" * 5000
    with_long = [long_id] + users[1:]

    def build(names):
        return RatingSet.from_arrays(names, items, ratings, duplicates="last")
    growth = _peak_growth(lambda: build(with_long)) - _peak_growth(lambda: build(users))
    assert growth < 4 * 2 ** 20, f"one 5,000-character id grew peak memory by {growth / 2 ** 20:.1f} MB"
    data = build(with_long)
    assert data.user_ids.dtype == object and long_id in set(data.user_ids)
    np.testing.assert_array_equal(data.user_index([long_id, "user-7"]),
                                  np.searchsorted(data.user_ids, [long_id, "user-7"]))


def test_long_and_unusual_string_ids_survive_files_and_loaders(base, tmp_path):
    odd = ["x" * 5000, "ends with nul\0", "é\udc80", *(f"u{k}" for k in range(base.n_users - 3))]
    users = np.empty(base.n_users, dtype=object)
    users[:] = odd
    data = _relabelled(base, users)
    model = CFN("user", (8,), 1, backend="numpy").fit(data)
    path = model.save(tmp_path / "odd.npz")
    with np.load(path, allow_pickle=False) as stored:
        assert "user_ids_utf8" in stored.files and int(stored["cfn_version"][0]) == 3
    loaded = CFN.load(path)
    assert loaded.train_.user_ids.dtype == object and sorted(loaded.train_.user_ids) == sorted(odd)
    np.testing.assert_array_equal(loaded.predict(odd[:3], data.item_ids[:3]), model.predict(odd[:3], data.item_ids[:3]))
    plain = CFN("user", (8,), 1, backend="numpy").fit(_relabelled(base, np.array([f"u{k}" for k in range(60)])))
    with np.load(plain.save(tmp_path / "plain.npz"), allow_pickle=False) as stored:   # old releases read it
        assert stored["user_ids"].dtype.kind == "U" and int(stored["cfn_version"][0]) == 1
    csv = tmp_path / "long.csv"
    csv.write_text("user,item,rating\n" + "".join(f"{odd[0] if k == 0 else 'u' + str(k % 50)},i{k % 30},{1 + k % 5}\n"
                                                   for k in range(400)))
    loaded_csv = load_ratings(csv, duplicates="last")
    assert loaded_csv.user_ids.dtype == object and odd[0] in set(loaded_csv.user_ids)
    pd = pytest.importorskip("pandas")
    named = np.array([odd[0], *(f"c{k}" for k in range(1, base.n_users))], dtype=object)   # (arrow: no surrogates)
    frame = pd.DataFrame({"user": pd.Categorical(named[base.user]), "item": base.item_ids[base.item],
                          "rating": base.rating})
    from_frame = RatingSet.from_dataframe(frame)
    assert from_frame.user_ids.dtype == object and np.array_equal(np.sort(from_frame.user_ids), np.sort(named))


def test_damaged_string_ids_in_a_file_are_a_model_file_error(base, tmp_path):
    from cfn_fast.fitted.persistence import ModelFileError
    users = np.array(["x" * 5000, *(f"u{k}" for k in range(1, base.n_users))], dtype=object)
    path = CFN("user", (8,), 1, backend="numpy").fit(_relabelled(base, users)).save(tmp_path / "m.npz")
    for entry, change in (("user_ids_utf8", lambda a: np.concatenate([a[:-1], [0xFF]]).astype(np.uint8)),
                          ("user_ids_offsets", lambda a: a[::-1].copy())):
        arrays = read_arrays(path)
        arrays[entry] = change(arrays[entry])
        write_rehashed(tmp_path / "bad.npz", arrays)
        with pytest.raises(ModelFileError, match="is not a valid cfn_fast model: user_ids_"):
            CFN.load(tmp_path / "bad.npz")


def test_a_saved_split_stores_each_string_id_once(tmp_path):
    """``cfn fit --save-split`` used to write one fixed-width copy of the longest id per rating."""
    from cfn_fast import load_ratings
    from cfn_fast.cli.files import save_split
    rng = np.random.default_rng(1)
    users = ["x" * 5000] + [f"user-{k}" for k in rng.integers(0, 300, 19_999)]
    items = [f"item-{k}" for k in rng.integers(0, 400, 20_000)]
    data = RatingSet.from_arrays(users, items, rng.integers(1, 6, 20_000).astype(float), duplicates="last")
    path = tmp_path / "train.npz"
    save_split({"train": path}, {"train": data})
    assert path.stat().st_size < 2 * 2 ** 20, f"{path.stat().st_size:,} bytes for {data.n_ratings:,} ratings"
    again = load_ratings(path)
    np.testing.assert_array_equal(again.user_ids[again.user], data.user_ids[data.user])
    np.testing.assert_array_equal(again.item_ids[again.item], data.item_ids[data.item])
    np.testing.assert_array_equal(again.rating, data.rating)
