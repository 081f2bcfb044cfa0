"""The candidates ``quality="best"`` adds to a blend: an I-CFN trained with dropout and a deeper I-CFN pre-trained
layer-wise as the authors did (cfn_fast.training.blending: DROPOUT_MEMBER, PRETRAINED_MEMBER, fit_member).  A blend
holding them saves, loads, exports to ONNX and folds in as any other (small synthetic data, small networks)."""
from __future__ import annotations

import numpy as np
import pytest

import cfn_fast.training.blending as blending
from cfn_fast import CFN, StackedCFN, available_backends, train_test_split
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.settings import AUTHORS_ML1M_PRETRAIN
from cfn_fast.training.blending import DROPOUT_MEMBER, PRETRAIN, PRETRAINED_MEMBER, candidate_params, fit_member

BACKEND = "cpu" if "cpu" in available_backends() else "numpy"
TRAIN, TEST = train_test_split(synthetic_ratings(300, 150, 20_000, seed=3, side_info=False), 0.1, seed=0)
RECIPE = {"epochs": 4, "batch_size": 20, "lr": 0.05, "lr_decay": 0.2, "weight_decay": 0.03, "alpha": 1.1,
          "beta": 0.6, "mask_ratio": 0.2}
SMALL_PRETRAINED = {"kind": "item", "centring": "sample", "hidden": (24, 12, 24), "epochs": 8, "seed": 5,
                    "backend": BACKEND, "lr": 0.03, PRETRAIN: RECIPE}
SMALL_DROPOUT = {"kind": "item", "centring": "sample", "hidden": (24,), "epochs": 4, "seed": 3, "backend": BACKEND,
                 "dropout": 0.2}


def test_best_adds_a_dropout_and_a_pretrained_member():
    params = CFN(quality="best").get_params()
    best = candidate_params(params, "best")
    dropout = next(m for m in best if m.get("dropout"))
    pretrained = next(m for m in best if PRETRAIN in m)
    assert {k: dropout[k] for k in DROPOUT_MEMBER} == DROPOUT_MEMBER and dropout["epochs"] == 2 * params["epochs"]
    assert pretrained["hidden"] == PRETRAINED_MEMBER["hidden"] == (700, 500, 700)
    assert pretrained[PRETRAIN] == AUTHORS_ML1M_PRETRAIN and pretrained["epochs"] == 15
    plain = {m["seed"] for m in best if not (m.get("dropout") or PRETRAIN in m or m.get("kernel_dim"))}
    variants = [m["seed"] for m in best if m.get("dropout") or PRETRAIN in m or m.get("kernel_dim")]
    assert len(set(variants)) == len(variants) == 3 and not plain & set(variants)   # each variant its own seed
    short = next(m for m in candidate_params({**params, "epochs": 4}, "best") if PRETRAIN in m)
    assert short["epochs"] == 3 and short[PRETRAIN]["epochs"] == 2    # scaled as the blend's epochs
    assert all(PRETRAIN not in m for m in candidate_params(params, "default"))


def test_fit_member_pretrains_as_stacked_cfn():
    member = fit_member(CFN, SMALL_PRETRAINED, TRAIN, None, None, None)
    stacked = StackedCFN(kind="item", centring="sample", hidden=(24, 12), epochs=8, seed=5, backend=BACKEND,
                         lr=0.03, pretrain=RECIPE).fit(TRAIN, divergence=None)
    assert type(member) is CFN and member.hidden == (24, 12, 24) and PRETRAIN not in member.get_params()
    for mine, theirs in zip(member.layers_, stacked.model_.layers_):
        np.testing.assert_array_equal(mine.weight, theirs.weight)
    with pytest.raises(ValueError, match=r"hidden=\(h1, h2, h1\)"):
        fit_member(CFN, {**SMALL_PRETRAINED, "hidden": (24, 12)}, TRAIN, None, None, None)


@pytest.fixture(scope="module")
def blend():
    """A blend whose candidates are a small pre-trained deeper I-CFN and a small dropout I-CFN."""
    patch = pytest.MonkeyPatch()
    patch.setattr(blending, "candidate_params", lambda params, quality: [SMALL_PRETRAINED, SMALL_DROPOUT])
    try:
        model = CFN(backend=BACKEND).fit(TRAIN)     # the candidates above, one factor member
    finally:
        patch.undo()
    return model


def test_the_new_members_earn_weights_and_are_plain_networks(blend):
    params = blend.blend_.member_params
    assert [p["hidden"] for p in params] == [(24, 12, 24), (24,)] and np.all(blend.blend_.weights > 0)
    assert all(PRETRAIN not in p for p in params) and params[1]["dropout"] == 0.2
    assert blend.blend_.report["blend_rmse"] < blend.blend_.report["bias_rmse"]
    assert [len(net.layers) for net in blend.fitted_.networks] == [4, 2]


def test_a_blend_with_them_saves_loads_and_folds_in(blend, tmp_path):
    again = CFN.load(blend.save(tmp_path / "blend.npz"))
    np.testing.assert_array_equal(again.predict_indices(TEST.user, TEST.item), blend.predict_indices(TEST.user,
                                                                                                     TEST.item))
    assert again.blend_.member_params == blend.blend_.member_params
    ids = TRAIN.user_ids[:4]
    for model in (blend, again):
        item = model.fold_in(ids, [5.0, 4.0, 2.0, 3.0], new="item")
        assert np.all(np.isfinite(item.ratings))
    np.testing.assert_array_equal(again.fold_in(ids, [5.0, 4.0, 2.0, 3.0], new="item").ratings,
                                  blend.fold_in(ids, [5.0, 4.0, 2.0, 3.0], new="item").ratings)


def test_a_blend_with_them_exports_to_onnx(blend):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx_checks import session  # tests/onnx_checks.py
    users, items = TEST.user.astype(np.int64), TEST.item.astype(np.int64)
    predicted, = session(blend, "predict").run(None, {"users": users, "items": items})
    np.testing.assert_allclose(predicted, blend.predict_indices(users, items), atol=1e-4, rtol=0)


def test_a_dropout_member_of_a_blend_on_cuda_runs_where_dropout_trains(blend):
    from cfn_fast.fitted.runtime import Runtime
    members = Runtime(blend.fitted_, "cuda", blend.runtime_.config).members   # no engine is built here
    assert [m.backend for m in members] == ["cuda", "cpu"]     # the pre-trained member, then the dropout one
