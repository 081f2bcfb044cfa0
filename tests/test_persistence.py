"""CFN.save / CFN.load: one versioned .npz, no pickles, checksum, atomic writes, clear errors."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import cfn_fast.fitted.persistence as persistence
from cfn_fast import CFN, EarlyStopping, available_backends, synthetic_ratings, train_test_split
from cfn_fast.data.ratings import RatingSet
from cfn_fast.fitted.persistence import FORMAT_VERSION, ModelFileError

CPU_BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]


@pytest.fixture(scope="module")
def split():
    return train_test_split(synthetic_ratings(300, 200, 6000, seed=0), 0.1, seed=0)


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory):
    train, test = split
    m = CFN("item", (16,), 3, backend="numpy").fit(train, validation=test,
                                                   early_stopping=EarlyStopping(patience=5))
    path = tmp_path_factory.mktemp("model") / "m.npz"
    m.save(path)
    return m, path


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rewrite(path, arrays) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["user", "item"])
@pytest.mark.parametrize("side", [True, False])
def test_round_trip_predictions_bit_identical(split, tmp_path, backend, kind, side):
    train, test = split
    m = CFN(kind, (16,), 2, backend=backend, use_side_info=side).fit(train, validation=test)
    path = m.save(tmp_path / "model.npz")
    loaded = CFN.load(path)
    assert loaded.backend_ == backend
    np.testing.assert_array_equal(m.predict_indices(test.user, test.item),
                                  loaded.predict_indices(test.user, test.item))
    a, b = m.recommend(3, 10), loaded.recommend(3, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert loaded.get_params() == m.get_params()
    assert [r.as_dict() for r in loaded.history_] == [r.as_dict() for r in m.history_]
    assert loaded.epochs_trained_ == m.epochs_trained_ == 2
    assert loaded.score(test) == m.score(test)


def test_round_trip_keeps_the_weight_storage_type(split, tmp_path):
    train, test = split
    m = CFN("user", (16,), 2, backend="numpy", dtype="bfloat16").fit(train)
    path = m.save(tmp_path / "bf16.npz")
    with np.load(path, allow_pickle=False) as z:
        config = json.loads(str(z["config"][0]))
        assert z["layer0_weight"].dtype == np.float32      # the file holds float32 parameters (bfloat16 values)
    assert config["params"]["dtype"] == "bfloat16"
    loaded = CFN.load(path)
    assert loaded.dtype == "bfloat16" and loaded.get_params() == m.get_params()
    assert loaded.engine_.config.dtype == "bfloat16"
    np.testing.assert_array_equal(m.predict_indices(test.user, test.item), loaded.predict_indices(test.user, test.item))


def test_round_trip_keeps_everything(saved):
    m, path = saved
    loaded = CFN.load(path)
    assert loaded.best_epoch_ == m.best_epoch_
    for a, b in zip(m.layers_, loaded.layers_):
        for x, y in zip(a.arrays(), b.arrays()):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    t, u = m.train_, loaded.train_
    for name in ("user", "item", "rating", "user_ids", "item_ids", "user_features", "item_features"):
        np.testing.assert_array_equal(getattr(t, name), getattr(u, name))
    assert t.scale == u.scale and t.user_feature_names == u.user_feature_names
    assert (m.inputs_ != loaded.inputs_).nnz == 0
    np.testing.assert_array_equal(m.preprocessing_.sample_mean, loaded.preprocessing_.sample_mean)
    assert m.preprocessing_.global_mean == loaded.preprocessing_.global_mean


def test_string_ids_round_trip(split, tmp_path):
    train = split[0]
    named = RatingSet.from_arrays(np.char.add("user-", train.user_ids[train.user].astype(str)),
                                  np.char.add("item-", train.item_ids[train.item].astype(str)),
                                  train.rating, scale=train.scale)
    m = CFN("user", (8,), 1, backend="numpy").fit(named)
    loaded = CFN.load(m.save(tmp_path / "named.npz"))
    assert loaded.train_.user_ids.dtype == object   # Python strings, never a fixed-width copy
    np.testing.assert_array_equal(loaded.predict(["user-3", "user-4"], ["item-1", "item-2"]),
                                  m.predict(["user-3", "user-4"], ["item-1", "item-2"]))


def test_file_has_no_pickles_and_is_versioned(saved):
    _, path = saved
    arrays = _arrays(path)   # allow_pickle=False would raise on any object array
    assert all(a.dtype.kind in "biufU" for a in arrays.values())
    assert arrays["cfn_format"].tolist() == ["cfn_fast-model"]
    # the paper's centring needs nothing of format 2: such a file stays version 1, readable by older releases
    assert int(arrays["cfn_version"][0]) == 1 < FORMAT_VERSION
    config = json.loads(str(arrays["config"][0]))
    assert config["params"]["kind"] == "item" and config["version"] == 1
    assert len(arrays["checksum"][0]) == 64


def test_partial_fit_after_load_continues_exactly(split, tmp_path):
    train, test = split
    straight = CFN("user", (8,), 3, backend="numpy").fit(train)
    first = CFN("user", (8,), 2, backend="numpy").fit(train)
    resumed = CFN.load(first.save(tmp_path / "two.npz")).partial_fit(1)
    assert resumed.epochs_trained_ == 3
    np.testing.assert_array_equal(straight.predict_indices(test.user, test.item),
                                  resumed.predict_indices(test.user, test.item))


def test_load_on_another_backend(saved):
    m, path = saved
    loaded = CFN.load(path, backend="numpy")
    assert loaded.backend_ == "numpy" and loaded.backend == "numpy"


def test_saved_backend_unavailable_falls_back(split, tmp_path, caplog):
    if "cuda" in available_backends():
        pytest.skip("needs a machine without CUDA")
    m = CFN("user", (8,), 1, backend="numpy").fit(split[0])
    m.backend = "cuda"            # as if trained on a GPU
    path = m.save(tmp_path / "gpu.npz")
    loaded = CFN.load(path)
    assert loaded.backend_ in available_backends()
    assert "backend 'cuda' is unavailable" in caplog.text and "now runs on" in caplog.text  # one fall-back policy
    with pytest.raises(Exception, match="backend 'cuda' is unavailable"):
        CFN.load(path, backend="cuda")


@pytest.mark.gpu
def test_gpu_model_loads_on_cpu_and_back(split, tmp_path):
    if "cuda" not in available_backends():
        pytest.skip("no CUDA GPU / CuPy on this machine")
    train, test = split
    m = CFN("item", (16,), 2, backend="cuda").fit(train)
    path = m.save(tmp_path / "gpu.npz")
    cpu = CFN.load(path, backend="numpy")
    np.testing.assert_allclose(cpu.predict_indices(test.user, test.item), m.predict_indices(test.user, test.item),
                               atol=1e-4)
    again = CFN.load(cpu.save(tmp_path / "cpu.npz"), backend="cuda")
    np.testing.assert_allclose(again.predict_indices(test.user, test.item), m.predict_indices(test.user, test.item),
                               atol=1e-4)


# ----------------------------------------------------------------------------- atomic writes
def test_save_is_atomic(saved, tmp_path, monkeypatch):
    m, _ = saved
    path = tmp_path / "m.npz"
    m.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(persistence.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before          # the old file is intact
    assert os.listdir(tmp_path) == ["m.npz"]    # no temporary file left behind


def test_save_writes_exactly_the_given_name(saved, tmp_path):
    m, _ = saved
    out = m.save(tmp_path / "model.cfn")
    assert out == tmp_path / "model.cfn" and out.is_file()
    assert CFN.load(out).epochs_trained_ == m.epochs_trained_


def test_save_errors(saved, tmp_path):
    m, _ = saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(tmp_path / "missing-dir" / "m.npz")
    from cfn_fast.model import NotFittedError
    with pytest.raises(NotFittedError):
        CFN().save(tmp_path / "x.npz")


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file at"):
        CFN.load(tmp_path / "nope.npz")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.npz"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="is truncated or corrupted"):
        CFN.load(cut)


def test_flipped_byte_is_detected(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="truncated or corrupted|checksum"):
        CFN.load(bad)


def test_tampered_weights_fail_the_checksum(saved, tmp_path):
    _, path = saved
    arrays = _arrays(path)
    arrays["layer0_weight"] = arrays["layer0_weight"] + np.float32(0.01)
    bad = tmp_path / "tampered.npz"
    _rewrite(bad, arrays)           # a valid zip with stale checksum
    with pytest.raises(ModelFileError, match="failed its SHA-256 checksum"):
        CFN.load(bad)


def test_wrong_format_version(saved, tmp_path):
    _, path = saved
    arrays = _arrays(path)
    arrays["cfn_version"] = np.array([99])
    bad = tmp_path / "v99.npz"
    _rewrite(bad, arrays)
    with pytest.raises(ModelFileError,
                       match="has cfn_fast model format version 99; this cfn_fast .* reads versions 1, 2, 3"):
        CFN.load(bad)


def test_not_a_cfn_npz(tmp_path):
    other = tmp_path / "ratings.npz"
    np.savez(other, user=np.arange(3), item=np.arange(3), rating=np.ones(3))
    with pytest.raises(ModelFileError, match="is an .npz file but not a cfn_fast model"):
        CFN.load(other)
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(ModelFileError, match="not an .npz"):
        CFN.load(npy)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        CFN.load(text)


def test_pickled_entries_are_refused(saved, tmp_path):
    _, path = saved
    arrays = _arrays(path)
    arrays["config"] = np.array([{"evil": 1}], dtype=object)
    bad = tmp_path / "pickle.npz"
    with open(bad, "wb") as fh:
        np.savez(fh, **arrays)          # np.savez pickles object arrays
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        CFN.load(bad)


def test_zip_member_crc(saved):
    _, path = saved
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
