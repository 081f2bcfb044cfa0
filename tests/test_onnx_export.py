"""ONNX export: ONNX Runtime reproduces CFN.predict / fold_in / recommend (cfn_fast.export.onnx)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_checks import (  # tests/onnx_checks.py
    assert_recommend_graph_matches,
    assert_user_index_recommend_refuses_bad_input,
    refused,
    session,
)

from cfn_fast import CFN, synthetic_ratings
from cfn_fast.model import NotFittedError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from cfn_fast.export.onnx import OPSET, build_onnx  # noqa: E402  (needs onnx)

TOLERANCE = 1e-5  # rating units


_MODELS: dict = {}


def fitted(kind: str, side: bool, hidden: tuple, half_stars: bool, centring: str = "sample") -> CFN:
    key = (kind, side, hidden, half_stars, centring)
    if key not in _MODELS:
        ratings = synthetic_ratings(150, 90, 2600, seed=1, half_stars=half_stars, side_info=side)
        _MODELS[key] = CFN(kind, hidden, 2, backend="cpu", seed=3, centring=centring).fit(ratings)
    return _MODELS[key]


CASES = [(kind, side, hidden, half, "sample")
         for kind in ("user", "item") for side in (False, True) for hidden in ((12,), (12, 8))
         for half in (False, True)]
# the bias model's centring adds per-input offsets to every conversion (cfn_fast.preprocessing)
CASES += [(kind, side, (12,), half, "bias") for kind in ("user", "item") for side in (False, True)
          for half in (False, True)]
IDS = [f"{'U' if k == 'user' else 'I'}-CFN{'++' if s else ''}-{len(h)}layer-{'half' if hs else '1to5'}"
       f"{'-bias' if c == 'bias' else ''}" for k, s, h, hs, c in CASES]


def training_rows(model: CFN) -> np.ndarray:
    """Every sample's training ratings as dense rows over the inputs (NaN = unknown)."""
    train = model.train_
    samples, inputs = (train.user, train.item) if model.kind == "user" else (train.item, train.user)
    dense = np.full(model.inputs_.shape, np.nan, dtype=np.float32)
    dense[samples, inputs] = train.rating
    return dense


def as_padded(dense: np.ndarray, pad: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The sparse input format: known column indices and values per row, padded with -1."""
    known = ~np.isnan(dense)
    width = int(known.sum(1).max()) + pad
    indices = np.full((len(dense), width), -1, dtype=np.int64)
    values = np.full((len(dense), width), np.nan, dtype=np.float32)  # padding values must be ignored
    for row, cols in enumerate(known):
        where = np.flatnonzero(cols)
        indices[row, :len(where)] = where
        values[row, :len(where)] = dense[row, where]
    return indices, values


def pairs_of(model: CFN, samples: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(samples[:, None], columns.shape[1], axis=1)
    return (rows, columns) if model.kind == "user" else (columns, rows)


def with_features(model: CFN, feeds: dict, side_rows: np.ndarray | None) -> dict:
    if model.side_ is not None:
        feeds["features"] = side_rows
    return feeds


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_predict_graph_matches_predict(case):
    model = fitted(*case)
    dense = training_rows(model)
    samples = np.arange(len(dense))
    rng = np.random.default_rng(0)
    columns = rng.integers(0, dense.shape[1], size=(len(dense), 7)).astype(np.int64)
    expected = model.predict_indices(*(a.ravel() for a in pairs_of(model, samples, columns))).reshape(columns.shape)
    side = None if model.side_ is None else model.side_
    dense_out, = session(model, "predict").run(None, with_features(model, {"ratings": dense, "columns": columns}, side))
    np.testing.assert_allclose(dense_out, expected, atol=TOLERANCE, rtol=0)
    indices, values = as_padded(dense)
    sparse_out, = session(model, "predict", input_format="sparse").run(
        None, with_features(model, {"indices": indices, "values": values, "columns": columns}, side))
    np.testing.assert_allclose(sparse_out, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_reconstruct_graph_matches_predict_and_codes(case):
    model = fitted(*case)
    dense = training_rows(model)
    predictions, codes = session(model, "reconstruct").run(
        None, with_features(model, {"ratings": dense}, model.side_))
    grid = np.meshgrid(np.arange(dense.shape[0]), np.arange(dense.shape[1]), indexing="ij")
    users, items = grid if model.kind == "user" else grid[::-1]
    expected = model.predict_indices(users.ravel(), items.ravel()).reshape(dense.shape)
    np.testing.assert_allclose(predictions, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(codes, model.encode(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "user"][:4] + [c for c in CASES if c[0] == "user"][-2:],
                         ids=[i for i in IDS if i[0] == "U"][:4] + [i for i in IDS if i[0] == "U"][-2:])
def test_predict_graph_on_new_rows_matches_fold_in(case):
    model = fitted(*case)
    train = model.train_
    rng = np.random.default_rng(5)
    low, high = train.scale
    rated = rng.choice(train.n_items, 6, replace=False)
    ratings = rng.choice(np.arange(low, high + 0.5, 0.5 if low == 0.5 else 1.0), 6)
    rows = np.full((2, train.n_items), np.nan, dtype=np.float32)
    rows[0, rated] = ratings                       # a new user with six ratings; row 1 has none (cold)
    features = None if model.side_ is None else model.side_[[3, 4]]
    folds = [model.fold_in(train.item_ids[rated], ratings, features=None if features is None else features[0]),
             model.fold_in([], [], features=None if features is None else features[1])]
    columns = np.tile(np.arange(train.n_items, dtype=np.int64), (2, 1))
    out, = session(model, "predict").run(None, with_features(model, {"ratings": rows, "columns": columns}, features))
    for row, fold in enumerate(folds):
        np.testing.assert_allclose(out[row], fold.ratings, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] == (12,)], ids=[i for i in IDS if "1layer" in i])
def test_recommend_graph_top10_equals_recommend_for_100_users(case):
    model = fitted(*case)
    users = np.arange(100)
    k = np.array([10], dtype=np.int64)
    if model.kind == "user":
        feeds = with_features(model, {"ratings": training_rows(model)[users], "k": k},
                              None if model.side_ is None else model.side_[users])
    else:
        seen = training_rows(model).T[users]  # each user's ratings over the items
        exclude, _ = as_padded(seen)
        feeds = {"users": users.astype(np.int64), "exclude": exclude, "k": k}
    assert_recommend_graph_matches(session(model, "recommend"), feeds, model, users, TOLERANCE)


def test_graph_contract_and_metadata():
    model = fitted("item", True, (12,), False)
    proto = build_onnx(model.runtime_, "predict", input_format="sparse")
    assert proto.opset_import[0].version == OPSET >= 17
    assert [i.name for i in proto.graph.input] == ["indices", "values", "features", "columns"]
    assert [o.name for o in proto.graph.output] == ["predictions"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cfn_kind"] == "item" and meta["inputs_are"] == "users"
    assert json.loads(meta["input_ids"]) == model.train_.user_ids.tolist()
    assert json.loads(meta["scale"]) == [1.0, 5.0]
    ops = {node.op_type for node in proto.graph.node}
    assert {"Clip", "ReduceSum", "Tanh"} <= ops  # scaling, centring, inverse and clipping in the graph
    assert "TopK" in {node.op_type for node in build_onnx(model.runtime_, "recommend").graph.node}


def test_to_onnx_writes_a_file_ort_runs(tmp_path):
    model = fitted("user", False, (12,), True)
    path = model.to_onnx(tmp_path / "m.onnx", graph="reconstruct")
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predictions, _ = sess.run(None, {"ratings": training_rows(model)[:3]})
    assert predictions.shape == (3, model.train_.n_items)


def test_export_bad_arguments(tmp_path):
    model = fitted("user", False, (12,), False)
    with pytest.raises(ValueError, match="graph must be one of"):
        model.to_onnx(tmp_path / "m.onnx", graph="train")
    with pytest.raises(ValueError, match="input_format"):
        model.to_onnx(tmp_path / "m.onnx", input_format="coo")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.to_onnx(tmp_path / "missing" / "m.onnx")
    with pytest.raises(IsADirectoryError):
        model.to_onnx(tmp_path)
    with pytest.raises(NotFittedError):
        CFN("user").to_onnx(tmp_path / "m.onnx")


def test_cli_export(tmp_path, capsys):
    from cfn_fast.cli import main
    model = fitted("item", True, (12,), False)
    saved = model.save(tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--graph", "recommend", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["onnx"] == str(out) and result["graph"] == "recommend"
    assert [i["name"] for i in result["inputs"]] == ["users", "exclude", "k", "min_support"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    top, _ = sess.run(None, {"users": np.array([0], np.int64), "exclude": np.full((1, 1), -1, np.int64),
                             "k": np.array([5], np.int64)})
    assert top.shape == (1, 5)
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--graph", "nope"]) == 2  # bad option
    assert main(["export", "--model", str(saved), "--onnx", str(saved)]) == 2  # the output is the input
    assert CFN.load(saved).layers_[0].weight.shape == model.layers_[0].weight.shape  # and it is intact
    assert main(["export", "--model", str(saved), "--onnx", str(tmp_path / "no" / "m.onnx")]) == 2


def test_stacked_cfn_exports_its_network(tmp_path):
    from cfn_fast import StackedCFN
    ratings = synthetic_ratings(80, 50, 1200, seed=4, side_info=False)
    deep = StackedCFN("item", hidden=(10, 6), epochs=1, backend="cpu", pretrain={"epochs": 1}).fit(ratings)
    sess = ort.InferenceSession(str(deep.to_onnx(tmp_path / "deep.onnx", graph="reconstruct")),
                                providers=["CPUExecutionProvider"])
    rows = training_rows(deep.model_)
    predictions, codes = sess.run(None, {"ratings": rows})
    np.testing.assert_allclose(codes, deep.encode(), atol=1e-5)
    grid = np.meshgrid(np.arange(rows.shape[0]), np.arange(rows.shape[1]), indexing="ij")
    expected = deep.predict_indices(grid[1].ravel(), grid[0].ravel()).reshape(rows.shape)
    np.testing.assert_allclose(predictions, expected, atol=TOLERANCE, rtol=0)


# ----------------------------------------------------------------------------- invalid inputs (issue 21)
def row_feeds(model: CFN, input_format: str, rows: np.ndarray, side_rows: np.ndarray | None = None) -> dict:
    if input_format == "dense":
        feeds = {"ratings": rows}
    else:
        indices, values = as_padded(rows)
        feeds = {"indices": indices, "values": values}
    if model.side_ is not None:
        feeds["features"] = model.side_[:len(rows)] if side_rows is None else side_rows
    return feeds


SIDE_CASES = [("user", True, (12,), False), ("item", True, (12,), False)]


@pytest.mark.parametrize("input_format", ["dense", "sparse"])
@pytest.mark.parametrize("case", SIDE_CASES, ids=["U-CFN++", "I-CFN++"])
def test_predict_graph_refuses_columns_out_of_range_and_minus_one(case, input_format):
    model = fitted(*case)
    n = model.inputs_.shape[1]
    sess = session(model, "predict", input_format=input_format)
    feeds = row_feeds(model, input_format, training_rows(model)[:3])
    good = np.tile(np.arange(4, dtype=np.int64), (3, 1))
    assert sess.run(None, {**feeds, "columns": good})[0].shape == (3, 4)
    for bad in (-1, -2, n, n + 7, np.iinfo(np.int64).min, np.iinfo(np.int64).max):
        columns = good.copy()
        columns[1, 2] = bad
        refused(sess, {**feeds, "columns": columns}, f"columns: indices must lie in [0, {n})")


@pytest.mark.parametrize("graph", ["predict", "reconstruct", "recommend"])
def test_sparse_rows_refuse_bad_indices_and_keep_minus_one_padding(graph):
    model = fitted("user", True, (12,), False)
    n = model.inputs_.shape[1]
    sess = session(model, graph, input_format="sparse")
    feeds = row_feeds(model, "sparse", training_rows(model)[:3])  # padded with -1: runs
    extra = {"predict": {"columns": np.zeros((3, 2), np.int64)}, "reconstruct": {},
             "recommend": {"k": np.array([5], np.int64)}}[graph]
    sess.run(None, {**feeds, **extra})
    for bad in (-2, n, n + 1, np.iinfo(np.int64).min):
        indices = feeds["indices"].copy()
        indices[2, -1] = bad                                   # a padding slot turned into a bad index
        refused(sess, {**feeds, **extra, "indices": indices},
                f"indices: column indices must lie in [0, {n}), or be -1 for padding")
    indices = feeds["indices"].copy()
    indices[0, -1] = indices[0, 0]                             # a column twice in one row
    refused(sess, {**feeds, **extra, "indices": indices}, "indices: a column at most once per row")
    refused(sess, {**feeds, **extra, "values": feeds["values"][:, :-1]},
            "values: must have the shape of indices")


@pytest.mark.parametrize("graph", ["predict", "reconstruct", "recommend"])
@pytest.mark.parametrize("input_format", ["dense", "sparse"])
def test_row_graphs_refuse_mismatched_batch_sizes(graph, input_format):
    model = fitted("user", True, (12,), False)
    sess = session(model, graph, input_format=input_format)
    extra = {"predict": {"columns": np.zeros((3, 2), np.int64)}, "reconstruct": {},
             "recommend": {"k": np.array([5], np.int64)}}[graph]
    for n_rows, n_features in ((3, 1), (3, 2), (1, 3)):       # batch 1 would broadcast
        rows = training_rows(model)[:n_rows]
        feeds = row_feeds(model, input_format, rows, model.side_[:n_features])
        if graph == "predict":
            feeds["columns"] = np.zeros((n_rows, 2), np.int64)
        refused(sess, {**extra, **feeds}, "features: one row per row of the ratings (the same batch size)")
    if graph == "predict":
        for n_columns in (1, 2):
            feeds = row_feeds(model, input_format, training_rows(model)[:3])
            refused(sess, {**feeds, "columns": np.zeros((n_columns, 2), np.int64)},
                    "columns: one row per row of the ratings (the same batch size)")


@pytest.mark.parametrize("side", [False, True])
def test_item_cfn_recommend_graph_refuses_bad_users_exclude_and_batches(side):
    model = fitted("item", side, (12,), False)
    assert_user_index_recommend_refuses_bad_input(session(model, "recommend"), model.train_.n_users,
                                                  model.train_.n_items)
