"""The ``cfn`` command line, called in-process through ``cfn_fast.cli.main``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cfn_fast import CFN, available_backends, synthetic_ratings
from cfn_fast.cli import main


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    payload = json.loads(out) if code == 0 and "--json" in argv else None
    return code, payload, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    r = synthetic_ratings(200, 100, 3000, seed=0)
    ratings = tmp / "ratings.npz"
    np.savez(ratings, user=r.user_ids[r.user].astype(np.int32), item=r.item_ids[r.item].astype(np.int32),
             rating=r.rating)
    side_model = tmp / "side.npz"
    CFN("user", (8,), 1, backend="numpy").fit(r).save(side_model)
    item_model = tmp / "item_side.npz"
    CFN("item", (8,), 1, backend="numpy").fit(r).save(item_model)
    return {"dir": tmp, "ratings": ratings, "data": r, "side_model": side_model, "item_model": item_model}


@pytest.fixture(scope="module")
def model(files):
    path = files["dir"] / "model.npz"
    code = main(["fit", "--ratings", str(files["ratings"]), "--kind", "user", "--hidden", "8", "--epochs", "2",
                 "--backend", "numpy", "--save", str(path), "--json"])
    assert code == 0
    return path


def test_fit_save(capsys, files, tmp_path):
    path = tmp_path / "m.npz"
    code, out, _ = run(capsys, "fit", "--ratings", str(files["ratings"]), "--kind", "item", "--hidden", "8",
                       "--epochs", "2", "--backend", "numpy", "--validation-ratio", "0.1", "--save", str(path),
                       "--json")
    assert code == 0 and out["saved"] == str(path) and path.is_file()
    assert out["epochs"] == 2 and 0 < out["test_rmse"] < 2 and out["validation_rmse"] is not None
    loaded = CFN.load(path)
    assert loaded.kind == "item" and loaded.epochs_trained_ == 2


def test_fit_with_bfloat16_storage_saves_it(capsys, files, tmp_path):
    path = tmp_path / "bf16.npz"
    code, out, _ = run(capsys, "fit", "--ratings", str(files["ratings"]), "--kind", "item", "--hidden", "8",
                       "--epochs", "1", "--backend", "numpy", "--dtype", "bfloat16", "--save", str(path), "--json")
    assert code == 0 and 0 < out["test_rmse"] < 2
    loaded = CFN.load(path)
    assert loaded.dtype == "bfloat16" and loaded.engine_.config.dtype == "bfloat16"
    code = main(["fit", "--ratings", str(files["ratings"]), "--hidden", "8", "--dtype", "float16"])
    assert code == 2 and "--dtype" in _one_line_error(capsys.readouterr().err, "fit")
    code = main(["fit", "--ratings", str(files["ratings"]), "--hidden", "8", "--dtype", "bfloat16",
                 "--backend", "cuda"])
    assert code == 2 and "bfloat16 weight storage is not on cuda yet" in _one_line_error(capsys.readouterr().err,
                                                                                          "fit")


def test_eval(capsys, files, model):
    code, out, _ = run(capsys, "eval", "--model", str(model), "--ratings", str(files["ratings"]), "--json")
    assert code == 0 and out["n_ratings"] == 3000
    from cfn_fast import load_ratings
    assert out["rmse"] == pytest.approx(CFN.load(model).score(load_ratings(files["ratings"])))


def test_predict(capsys, model):
    code, out, _ = run(capsys, "predict", "--model", str(model), "--user", "1", "2", "--item", "3", "4", "--json")
    assert code == 0
    expected = CFN.load(model).predict([1, 2], [3, 4])
    assert [p["rating"] for p in out["predictions"]] == pytest.approx(expected.tolist())


def test_recommend_json_matches_api(capsys, model):
    code, out, _ = run(capsys, "recommend", "--model", str(model), "--user", "1", "7", "-n", "5", "--json")
    assert code == 0 and out["exclude_seen"] is True
    m = CFN.load(model)
    for entry, user in zip(out["recommendations"], (1, 7)):
        ids, scores = m.recommend(user, 5)
        assert entry["user"] == user
        assert [e["item"] for e in entry["items"]] == ids.tolist()
        assert [e["score"] for e in entry["items"]] == pytest.approx(scores.tolist())


def test_recommend_text_output(capsys, model):
    code = main(["recommend", "--model", str(model), "--user", "1", "-n", "3"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 3
    assert [line.split("\t")[:2] for line in out] == [["1", "1"], ["1", "2"], ["1", "3"]]


def test_fold_in_user(capsys, files, model):
    csv = files["dir"] / "new_user.csv"
    csv.write_text("item,rating\n3,5\n4,1\n10,4\n")
    code, out, _ = run(capsys, "fold-in", "--model", str(model), "--new", "user", "--ratings-of-new", str(csv),
                       "-n", "4", "--predict", "5", "6", "--json")
    assert code == 0 and out["new"] == "user" and out["n_ratings"] == 3
    fold = CFN.load(model).fold_in([3, 4, 10], [5.0, 1.0, 4.0])
    ids, scores = fold.recommend(4)
    assert [e["item"] for e in out["recommendations"]] == ids.tolist()
    assert [e["rating"] for e in out["predictions"]] == pytest.approx(fold.predict([5, 6]).tolist())


def test_fold_in_with_features(capsys, files):
    data = files["data"]
    csv = files["dir"] / "plain.csv"
    csv.write_text("3,5\n4,2\n")
    feats = [str(v) for v in data.user_features[0]]
    code, out, _ = run(capsys, "fold-in", "--model", str(files["side_model"]), "--new", "user",
                       "--ratings-of-new", str(csv), "--features", *feats, "--json")
    assert code == 0 and len(out["recommendations"]) == 10
    ffile = files["dir"] / "features.txt"
    ffile.write_text(",".join(feats))
    code, out2, _ = run(capsys, "fold-in", "--model", str(files["side_model"]), "--new", "user",
                        "--ratings-of-new", str(csv), "--features", str(ffile), "--json")
    assert code == 0 and out2["recommendations"] == out["recommendations"]
    code, _, err = run(capsys, "fold-in", "--model", str(files["side_model"]), "--new", "user",
                       "--ratings-of-new", str(csv))
    assert code == 2 and "pass --features with 12 numbers" in err and "features=" not in err


def test_fold_in_new_item_for_item_cfn(capsys, files):
    csv = files["dir"] / "new_item.csv"
    csv.write_text("user,rating\n1,5\n2,4\n")
    feats = [str(v) for v in files["data"].item_features[0]]
    code, out, _ = run(capsys, "fold-in", "--model", str(files["item_model"]), "--new", "item",
                       "--ratings-of-new", str(csv), "--features", *feats, "-n", "3", "--json")
    assert code == 0 and out["new"] == "item" and "user" in out["recommendations"][0]


def test_demo(capsys):
    code, out, _ = run(capsys, "demo", "--epochs", "2", "--users", "200", "--items", "100", "--n-ratings", "4000",
                       "--hidden", "16", "--backend", "numpy", "--json")
    assert code == 0 and out["epochs"] == 2 and out["kind"] == "blend" and out["validation_rmse_per_epoch"] == []
    assert np.isfinite(out["test_rmse"]) and out["blend"]["how"] == "validation set given to fit"
    code, out, _ = run(capsys, "demo", "--epochs", "2", "--users", "200", "--items", "100", "--n-ratings", "4000",
                       "--hidden", "16", "--backend", "numpy", "--kind", "item", "--json")
    assert code == 0 and out["epochs"] == 2 and len(out["validation_rmse_per_epoch"]) == 2


# ----------------------------------------------------------------------------- bad input: exit codes, one line
def _one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cfn {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["recommend", "--user", "999"], "unknown user id"),
    (["recommend", "--user", "abc"], "ids must be integers"),
    (["recommend", "--user", "1", "-n", "-1"], "-n must be >= 0"),
    (["predict", "--user", "1", "2", "--item", "3"], "they must pair up"),
    (["predict", "--user", "1", "--item", "99999"], "unknown item id"),
])
def test_bad_ids_exit_2(capsys, model, argv, needle):
    code = main([argv[0], "--model", str(model), *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and needle in _one_line_error(err, argv[0])


def test_bad_model_files_exit_2(capsys, model, tmp_path):
    code = main(["recommend", "--model", str(tmp_path / "missing.npz"), "--user", "1"])
    assert code == 2 and "no model file at" in _one_line_error(capsys.readouterr().err, "recommend")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(model.read_bytes()[:500])
    code = main(["eval", "--model", str(cut), "--ratings", str(cut)])
    assert code == 2 and "truncated or corrupted" in _one_line_error(capsys.readouterr().err, "eval")


@pytest.mark.parametrize("content, needle", [
    ("3,5\n4,oops\n", "rating 'oops' is not a number"),
    ("3,5,1\n", "expected 'id,rating'"),
    ("3,9\n", "outside the scale"),
    ("99999,4\n", "unknown item id"),
    ("3,4\n3,5\n", "more than once"),
])
def test_bad_fold_in_files_exit_2(capsys, model, tmp_path, content, needle):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    code = main(["fold-in", "--model", str(model), "--new", "user", "--ratings-of-new", str(csv)])
    assert code == 2 and needle in _one_line_error(capsys.readouterr().err, "fold-in")


def test_missing_fold_in_file_exit_2(capsys, model, tmp_path):
    code = main(["fold-in", "--model", str(model), "--new", "user", "--ratings-of-new", str(tmp_path / "none.csv")])
    assert code == 2 and "no ratings file" in _one_line_error(capsys.readouterr().err, "fold-in")


def test_new_user_into_item_cfn_exit_2(capsys, files):
    csv = files["dir"] / "new_user_for_icfn.csv"
    csv.write_text("1,5\n")
    code = main(["fold-in", "--model", str(files["item_model"]), "--ratings-of-new", str(csv), "--new", "user"])
    err = _one_line_error(capsys.readouterr().err, "fold-in")
    assert code == 2 and "an I-CFN cannot fold in a new user" in err and "needs retraining" in err


def test_bad_hyper_parameter_exit_2(capsys, files):
    code = main(["fit", "--ratings", str(files["ratings"]), "--hidden", "8", "--epochs", "1", "--lr", "-1",
                 "--backend", "numpy"])
    assert code == 2 and "lr must be a finite number > 0" in _one_line_error(capsys.readouterr().err, "fit")


def test_divergence_exit_1(capsys, files):
    code = main(["fit", "--ratings", str(files["ratings"]), "--kind", "user", "--hidden", "8", "--epochs", "2",
                 "--lr", "1e6", "--weight-decay", "0", "--backend", "numpy"])
    assert code == 1 and "training diverged at epoch 1" in _one_line_error(capsys.readouterr().err, "fit")


def test_gpu_absent_exit_1(capsys, files):
    if "cuda" in available_backends():
        pytest.skip("a CUDA GPU is present")
    code = main(["demo", "--epochs", "1", "--users", "200", "--items", "100", "--n-ratings", "4000", "--hidden", "8",
                 "--backend", "cuda"])
    assert code == 1 and "backend 'cuda' is unavailable" in _one_line_error(capsys.readouterr().err, "demo")
