"""ONNX export of a blend: ONNX Runtime reproduces predict_indices / recommend_batch (cfn_fast.export.onnx_blend),
with and without the factor member."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from onnx_checks import (  # tests/onnx_checks.py
    assert_recommend_graph_matches,
    assert_user_index_recommend_refuses_bad_input,
    refused,
    session,
)

from cfn_fast import CFN, synthetic_ratings, train_test_split
from cfn_fast.training import blending

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from cfn_fast.export.onnx import build_onnx  # noqa: E402  (needs onnx)

TOLERANCE = 1e-4   # rating units: the graph computes in float32, the library blends in float64
COLD_USER, COLD_ITEM = 7, 5   # their training ratings are removed: the networks' fallbacks (and side information)


def every_candidate(deltas: np.ndarray, residual: np.ndarray, shrinkage: float) -> np.ndarray:
    """Stands in for blend_weights: a weight for every candidate network and the factor member (the last column;
    after 2 epochs on synthetic data the validation keeps the bias model alone, which would leave nothing to
    export)."""
    return np.linspace(0.4, 0.1, deltas.shape[1])


_MODELS: dict = {}


def blend_model(side: bool) -> tuple[CFN, object]:
    """``(model, test)``: a blend of I-CFN and U-CFN networks with both centrings, one user and one item cold."""
    if side not in _MODELS:
        ratings = synthetic_ratings(300, 150, 8000, seed=1, side_info=side)
        train, test = train_test_split(ratings, 0.1, seed=0)
        train = train.subset((train.user != COLD_USER) & (train.item != COLD_ITEM))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(blending, "blend_weights", every_candidate)
            patch.setitem(blending.MAX_MEMBERS, "default", 4)
            patch.setitem(blending.FACTOR_CANDIDATES, "default", ((8, 0.05), (4, 0.1)))   # two factor members
            model = CFN(hidden=(16,), epochs=2, backend="cpu").fit(train)
        assert {(p["kind"], p["centring"]) for p in model.blend_.member_params} == \
            {(k, c) for k in ("item", "user") for c in ("sample", "bias")}
        factors = model.blend_.factors
        assert [f.rank for f in factors] == [8, 4] and np.all(model.blend_.factor_weights["pairs"] > 0)
        # the cold user and item have all-zero factors: the factor members fall back on the bias model for them
        assert not any(f.user_factors[COLD_USER].any() or f.item_factors[COLD_ITEM].any() for f in factors)
        _MODELS[side] = model, test
    return _MODELS[side]


def without_factors(model: CFN) -> CFN:
    """A copy of the blend ``model`` whose factor members are dropped (a blend where they earned no weight)."""
    copied = copy.deepcopy(model)
    copied.blend_.factors = ()
    copied.blend_.factor_weights = {use: np.zeros(0) for use in ("pairs", "user", "item")}
    assert copied.blend_.factors == () and model.blend_.factors
    return copied


def bias_alone() -> CFN:
    ratings = synthetic_ratings(40, 30, 120, seed=2, side_info=False)
    model = CFN(hidden=(16,), epochs=2, backend="cpu").fit(ratings)
    assert model.blend_.member_params == () and len(model.runtime_.members) == 0
    return model


def seen_as_exclude(model: CFN, users: np.ndarray) -> np.ndarray:
    """Each user's training items, padded with -1 (one padding column at least)."""
    train = model.train_
    seen = [np.unique(train.item[train.user == u]) for u in users]
    exclude = np.full((len(users), max(map(len, seen)) + 1), -1, dtype=np.int64)
    for row, items in enumerate(seen):
        exclude[row, :len(items)] = items
    return exclude


def check_recommend(model: CFN, users: np.ndarray) -> None:
    feeds = {"users": users.astype(np.int64), "exclude": seen_as_exclude(model, users), "k": np.array([10], np.int64)}
    assert_recommend_graph_matches(session(model, "recommend"), feeds, model, users, TOLERANCE)


def check_predict(model: CFN, test) -> None:
    train = model.train_
    users = np.concatenate([test.user, [COLD_USER, COLD_USER, 0, COLD_USER]]).astype(np.int64)
    items = np.concatenate([test.item, [COLD_ITEM, 0, COLD_ITEM, train.n_items - 1]]).astype(np.int64)
    assert np.sum(train.user == COLD_USER) == 0 and np.sum(train.item == COLD_ITEM) == 0
    predictions, = session(model, "predict").run(None, {"users": users, "items": items})
    assert predictions.dtype == np.float32 and predictions.shape == users.shape
    np.testing.assert_allclose(predictions, model.predict_indices(users, items), atol=TOLERANCE, rtol=0)
    empty, = session(model, "predict").run(None, {"users": users[:0], "items": items[:0]})
    assert empty.shape == (0,)


@pytest.mark.parametrize("factors", [True, False], ids=["factors", "no-factors"])
@pytest.mark.parametrize("side", [False, True], ids=["plain", "side-info"])
def test_predict_graph_matches_predict_indices(side, factors):
    model, test = blend_model(side)
    check_predict(model if factors else without_factors(model), test)


@pytest.mark.parametrize("factors", [True, False], ids=["factors", "no-factors"])
@pytest.mark.parametrize("side", [False, True], ids=["plain", "side-info"])
def test_recommend_graph_matches_recommend_batch(side, factors):
    model, _ = blend_model(side)
    check_recommend(model if factors else without_factors(model), np.concatenate([np.arange(40), [COLD_USER]]))


def test_the_factor_member_is_in_the_graphs():
    """The graphs store the factors and weigh them: without them they would give the blend without the member."""
    model, test = blend_model(False)
    plain = without_factors(model)
    users, items = test.user.astype(np.int64), test.item.astype(np.int64)
    assert np.abs(model.predict_indices(users, items) - plain.predict_indices(users, items)).max() > 10 * TOLERANCE
    for graph in ("predict", "recommend"):
        stored = {init.name.rsplit("_", 1)[0]: tuple(init.dims)      # names are stem_<counter>
                  for init in build_onnx(model.runtime_, graph).graph.initializer}
        for j, factors in enumerate(model.blend_.factors):            # each member its own tables
            assert stored[f"factors{j}_user"] == (model.train_.n_users, factors.rank)
            assert stored[f"factors{j}_item"] == (model.train_.n_items, factors.rank)
        assert not any(name.startswith("factors") for name in
                       (init.name for init in build_onnx(plain.runtime_, graph).graph.initializer))
        meta = {p.key: p.value for p in build_onnx(plain.runtime_, graph).metadata_props}
        assert json.loads(meta["factors"]) == []


def test_blend_without_networks_exports_the_bias_model():
    model = bias_alone()
    train = model.train_
    users, items = (a.ravel().astype(np.int64) for a in np.meshgrid(np.arange(train.n_users),
                                                                    np.arange(train.n_items)))
    predictions, = session(model, "predict").run(None, {"users": users, "items": items})
    np.testing.assert_allclose(predictions, model.predict_indices(users, items), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(predictions, model.blend_.bias.predict(users, items), atol=TOLERANCE, rtol=0)
    check_recommend(model, np.arange(train.n_users))
    meta = {p.key: p.value for p in build_onnx(model.runtime_, "predict").metadata_props}
    assert meta["cfn_kind"] == "blend" and json.loads(meta["members"]) == [] and json.loads(meta["factors"]) == []


def test_graph_contract_and_metadata():
    model, _ = blend_model(True)
    train = model.train_
    proto = build_onnx(model.runtime_, "predict")
    assert [i.name for i in proto.graph.input] == ["users", "items"]
    assert [o.name for o in proto.graph.output] == ["predictions"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cfn_kind"] == "blend" and meta["graph"] == "predict"
    assert json.loads(meta["scale"]) == [1.0, 5.0]
    assert json.loads(meta["user_ids"]) == train.user_ids.tolist()
    assert json.loads(meta["item_ids"]) == train.item_ids.tolist()
    members = json.loads(meta["members"])
    assert [m["weight"] for m in members] == pytest.approx(model.blend_.weights.tolist())
    assert [(m["kind"], m["centring"]) for m in members] == \
        [(p["kind"], p["centring"]) for p in model.blend_.member_params]
    assert [(m["hidden"], m["side_dim"]) for m in members] == \
        [([16], model.member(k).side_.shape[1]) for k in range(len(members))]
    factors = json.loads(meta["factors"])
    assert [f["rank"] for f in factors] == [f.rank for f in model.blend_.factors]
    assert [f["weight"] for f in factors] == pytest.approx(model.blend_.factor_weights["pairs"].tolist())
    recommend = build_onnx(model.runtime_, "recommend", input_format="sparse")  # no rating rows: no effect
    assert [i.name for i in recommend.graph.input] == ["users", "exclude", "k", "min_support"]
    assert [o.name for o in recommend.graph.output] == ["top_indices", "top_scores"]
    assert "TopK" in {node.op_type for node in recommend.graph.node}


def test_reconstruct_is_refused_naming_member():
    model, _ = blend_model(False)
    with pytest.raises(ValueError, match=r"a blend has no single input row.*member=k, k in \[0, 4\)"):
        build_onnx(model.runtime_, "reconstruct")
    with pytest.raises(ValueError, match="this blend has no network"):
        build_onnx(bias_alone().runtime_, "reconstruct")


def test_member_exports_its_row_graphs(tmp_path):
    model, _ = blend_model(True)
    for k in range(len(model.blend_.member_params)):
        member = model.member(k)
        path = model.to_onnx(tmp_path / f"m{k}.onnx", graph="reconstruct", member=k)
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["cfn_kind"] == member.kind_ == model.blend_.member_params[k]["kind"]
        train = member.train_
        samples, inputs = (train.user, train.item) if member.kind_ == "user" else (train.item, train.user)
        rows = np.full(member.inputs_.shape, np.nan, dtype=np.float32)
        rows[samples, inputs] = train.rating
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        predictions, _ = sess.run(None, {"ratings": rows, "features": member.side_})
        grid = np.meshgrid(np.arange(rows.shape[0]), np.arange(rows.shape[1]), indexing="ij")
        users, items = grid if member.kind_ == "user" else grid[::-1]
        expected = model.member(k).predict_indices(users.ravel(), items.ravel()).reshape(rows.shape)
        np.testing.assert_allclose(predictions, expected, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- invalid inputs
def test_predict_graph_refuses_bad_indices_and_lengths():
    model, _ = blend_model(False)
    n_users, n_items = model.train_.n_users, model.train_.n_items
    sess = session(model, "predict")
    users, items = np.array([0, 1, 2], np.int64), np.array([3, 4, 5], np.int64)
    assert sess.run(None, {"users": users, "items": items})[0].shape == (3,)
    for bad in (-1, -2, n_users, np.iinfo(np.int64).min, np.iinfo(np.int64).max):
        refused(sess, {"users": np.array([0, bad, 2], np.int64), "items": items},
                f"refused: users: indices must lie in [0, {n_users})")
    for bad in (-1, n_items, n_items + 3):
        refused(sess, {"users": users, "items": np.array([bad, 4, 5], np.int64)},
                f"refused: items: indices must lie in [0, {n_items})")
    for n in (1, 2, 4):   # one item would broadcast
        refused(sess, {"users": users, "items": np.zeros(n, np.int64)},
                "refused: items: one per user (the same length as users)")


def test_recommend_graph_refuses_bad_users_exclude_and_batches():
    model, _ = blend_model(False)
    assert_user_index_recommend_refuses_bad_input(session(model, "recommend"), model.train_.n_users,
                                                  model.train_.n_items)


# ----------------------------------------------------------------------------- files and the command line
def test_to_onnx_writes_a_blend_file_ort_runs(tmp_path):
    model, test = blend_model(False)
    path = model.to_onnx(tmp_path / "blend.onnx")
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    users, items = test.user[:20].astype(np.int64), test.item[:20].astype(np.int64)
    predictions, = sess.run(None, {"users": users, "items": items})
    np.testing.assert_allclose(predictions, model.predict_indices(users, items), atol=TOLERANCE, rtol=0)


def test_cli_export_of_a_blend(tmp_path, capsys, monkeypatch):
    from cfn_fast.cli import main
    model, _ = blend_model(False)
    saved = tmp_path / "blend.npz"
    saved.write_bytes(b"stands for a saved blend")   # saving blends comes separately: load returns the model
    monkeypatch.setattr(CFN, "load", classmethod(lambda cls, path, **kw: model))
    out = tmp_path / "blend.onnx"
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--graph", "recommend", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["graph"] == "recommend" and result["member"] is None
    assert [i["name"] for i in result["inputs"]] == ["users", "exclude", "k", "min_support"]
    assert main(["export", "--model", str(saved), "--onnx", str(out)]) == 0
    described = "predict graph of a blend of the bias model and 4 network(s) and 2 factor member(s)"
    assert described in capsys.readouterr().out
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--graph", "reconstruct", "--member", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["member"] == 2 and [o["name"] for o in result["outputs"]] == ["predictions", "codes"]
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--graph", "reconstruct"]) == 2
    assert "a blend has no single input row" in capsys.readouterr().err
    assert main(["export", "--model", str(saved), "--onnx", str(out), "--member", "4"]) == 2


def test_cli_export_member_of_one_network_is_refused(tmp_path, capsys, monkeypatch):
    from cfn_fast.cli import main
    single = CFN("user", hidden=(8,), epochs=1, backend="cpu").fit(synthetic_ratings(60, 40, 1200, seed=0))
    saved = single.save(tmp_path / "u.npz")
    assert main(["export", "--model", str(saved), "--onnx", str(tmp_path / "u.onnx"), "--member", "0"]) == 2
    assert "--member K names a network of a blend; this model is a U-CFN" in capsys.readouterr().err
