"""A model too large for one process stays sharded (issue 23): ``CFN(shards=N, max_worker_bytes=…)`` whose whole
network exceeds the cap trains, predicts, recommends, saves and loads without the network ever joined in one
process; what needs the whole network (encode, fold_in, ONNX, pickle) says so, and ``gather()`` joins it on request.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from cfn_fast import CFN
from cfn_fast.backends import shard_base
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.engine import training_inputs
from cfn_fast.fitted.persistence import ModelFileError
from cfn_fast.sharding.parts import MANIFEST, NotGathered, ShardedLayers
from cfn_fast.sharding.plan import shards_needed

DATA = synthetic_ratings(120, 90, 2400, seed=3)
HIDDEN, CAP, EPOCHS = (32,), 24_000, 3
USERS, ITEMS = np.array([0, 5, 9, 77, 119]), np.array([1, 2, 3, 89, 40])


def test_the_cap_keeps_this_network_sharded():
    inputs = training_inputs(DATA, "item")
    assert shards_needed(inputs.n_inputs, HIDDEN, 0, CAP) == 2
    assert shards_needed(inputs.n_inputs, HIDDEN, 0, CAP * 10) == 1       # the whole network fits: gathered


@pytest.fixture(scope="module")
def fitted_pair(ray_cluster):
    """The unsharded model and the one kept sharded, trained with the whole-network paths made to fail."""
    plain = CFN("item", hidden=HIDDEN, epochs=EPOCHS, seed=2, backend="numpy").fit(DATA)
    with pytest.MonkeyPatch.context() as patch:
        _forbid_gathering(patch)
        kept = CFN("item", hidden=HIDDEN, epochs=EPOCHS, seed=2, backend="numpy", shards=2,
                   max_worker_bytes=CAP).fit(DATA)
    return plain, kept


def _forbid_gathering(patch):
    def refuse(*args, **kwargs):
        raise AssertionError("the whole network was joined in the driver")
    patch.setattr(ShardedLayers, "gather", refuse)
    patch.setattr(shard_base, "join_layers", refuse)


def test_kept_model_predicts_and_recommends_as_the_unsharded_one(fitted_pair, monkeypatch):
    plain, kept = fitted_pair
    assert isinstance(kept.layers_, ShardedLayers) and kept.layers_.shards == 2
    _forbid_gathering(monkeypatch)
    np.testing.assert_allclose(kept.predict_indices(USERS, ITEMS), plain.predict_indices(USERS, ITEMS), atol=1e-4)
    assert abs(kept.score(DATA) - plain.score(DATA)) < 1e-4
    for user in DATA.user_ids[[0, 7]]:
        (kept_items, kept_scores), (plain_items, plain_scores) = kept.recommend(user, 5), plain.recommend(user, 5)
        np.testing.assert_allclose(kept_scores, plain_scores, atol=1e-4)
        assert set(kept_items) == set(plain_items)


def test_whole_network_calls_are_refused_until_gathered(fitted_pair):
    _, kept = fitted_pair
    for call in (lambda: kept.encode(), lambda: kept.decode(np.zeros((1, HIDDEN[-1]), np.float32)),
                 lambda: kept.fold_in([DATA.user_ids[0]], [4.0])):
        with pytest.raises(NotGathered, match="kept sharded.*model.gather()"):
            call()
    pytest.importorskip("onnx")
    with pytest.raises(NotGathered, match="ONNX"):
        kept.to_onnx("unused.onnx")
    with pytest.raises(TypeError, match="does not pickle"):
        pickle.dumps(kept)


def test_gather_makes_an_ordinary_model(fitted_pair, tmp_path):
    _, kept = fitted_pair
    gathered = CFN.load(kept.save(tmp_path / "model")).gather()
    assert isinstance(gathered.layers_, list)
    np.testing.assert_allclose(gathered.predict_indices(USERS, ITEMS), kept.predict_indices(USERS, ITEMS), atol=1e-6)
    assert gathered.encode().shape == (DATA.n_items, HIDDEN[-1])
    assert pickle.loads(pickle.dumps(gathered)).predict_indices(USERS, ITEMS).shape == (len(USERS),)


def test_save_writes_a_folder_that_loads_and_predicts_sharded(fitted_pair, tmp_path, monkeypatch):
    _, kept = fitted_pair
    path = kept.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["model.npz", "network"]
    assert sorted(p.name for p in (path / "network").iterdir()) == [MANIFEST, "shard-00000.npz", "shard-00001.npz"]
    _forbid_gathering(monkeypatch)
    loaded = CFN.load(path)
    assert isinstance(loaded.layers_, ShardedLayers)
    np.testing.assert_allclose(loaded.predict_indices(USERS, ITEMS), kept.predict_indices(USERS, ITEMS), atol=1e-6)
    loaded.save(path)                                  # unchanged since loaded from there: the model file alone
    kept.save(path)                                    # over a saved model: replaced as a whole
    assert CFN.load(path).epochs_trained_ == EPOCHS


def test_save_never_overwrites_what_is_not_a_model(fitted_pair, tmp_path):
    _, kept = fitted_pair
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        kept.save(tmp_path / "file")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no saved cfn_fast model"):
        kept.save(tmp_path / "folder")
    assert (tmp_path / "file").read_text() == "mine" == (tmp_path / "folder" / "notes.txt").read_text()


def test_a_damaged_or_mismatched_folder_is_refused(fitted_pair, tmp_path):
    _, kept = fitted_pair
    path = kept.save(tmp_path / "model")
    with pytest.raises(ModelFileError, match="load the folder"):
        CFN.load(path / "model.npz")
    manifest = json.loads((path / "network" / MANIFEST).read_text())
    manifest["hidden"] = [31]
    (path / "network" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="do not match its model file"):
        CFN.load(path)
    manifest["files"][0]["sha256"] = "0" * 64
    manifest["hidden"] = list(HIDDEN)
    (path / "network" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="SHA-256"):
        CFN.load(path).predict_indices(USERS, ITEMS)


def test_partial_fit_of_a_loaded_kept_model_trains_sharded(fitted_pair, tmp_path, monkeypatch):
    plain, kept = fitted_pair
    loaded = CFN.load(kept.save(tmp_path / "model"))
    _forbid_gathering(monkeypatch)
    loaded.partial_fit(1)
    assert loaded.epochs_trained_ == EPOCHS + 1 and isinstance(loaded.layers_, ShardedLayers)
    more = CFN("item", hidden=HIDDEN, epochs=EPOCHS, seed=2, backend="numpy").fit(DATA).partial_fit(1)
    np.testing.assert_allclose(loaded.predict_indices(USERS, ITEMS), more.predict_indices(USERS, ITEMS), atol=1e-4)


def test_cli_predicts_and_recommends_from_a_saved_folder(fitted_pair, tmp_path, capsys):
    from cfn_fast.cli import main
    _, kept = fitted_pair
    path = kept.save(tmp_path / "model")
    user, item = DATA.user_ids[USERS[0]], DATA.item_ids[ITEMS[0]]
    assert main(["predict", "--model", str(path), "--user", str(user), "--item", str(item), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["predictions"][0]["rating"]
    assert predicted == pytest.approx(float(kept.predict([user], [item])[0]), abs=1e-6)
    assert main(["recommend", "--model", str(path), "--user", str(user), "-n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["item"] for row in out["recommendations"][0]["items"]] == [
        int(i) for i in kept.recommend(user, 3)[0]]


def test_early_stopping_restores_the_best_epoch_on_the_shards(ray_cluster, monkeypatch):
    """Validation scoring, snapshots and the restore of the best epoch run on the shards, as unsharded."""
    from cfn_fast import EarlyStopping, train_test_split
    train, validation = train_test_split(DATA, 0.2, seed=1)
    stop = dict(patience=1, min_delta=1.0)          # no epoch improves by 1.0: epoch 1 is restored after epoch 2
    plain = CFN("item", hidden=HIDDEN, epochs=5, seed=2, backend="numpy").fit(
        train, validation=validation, early_stopping=EarlyStopping(**stop))
    _forbid_gathering(monkeypatch)
    kept = CFN("item", hidden=HIDDEN, epochs=5, seed=2, backend="numpy", shards=2, max_worker_bytes=CAP).fit(
        train, validation=validation, early_stopping=EarlyStopping(**stop))
    assert kept.best_epoch_ == plain.best_epoch_ == 1 and kept.epochs_trained_ == plain.epochs_trained_
    assert [r.validation_rmse for r in kept.history_] == pytest.approx([r.validation_rmse for r in plain.history_],
                                                                       abs=1e-5)
    np.testing.assert_allclose(kept.predict_indices(USERS, ITEMS), plain.predict_indices(USERS, ITEMS), atol=1e-4)
