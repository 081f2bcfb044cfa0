"""A blend (``CFN(kind="blend")``, the default) travels: saved and loaded (model format version 4), pickled,
deep-copied and moved to another backend, it predicts, recommends and folds in exactly as before, with the same
weights, members and factor member (the matrix factorisation).  Its file is untrusted input like any other: an
edited and re-hashed blend file is refused with a one-line ``ModelFileError`` naming the entry (tests/model_files.py
re-hashes); files of one network are written as before (versions 1-3).  Random edits of blend files never crash the
interpreter (a child process)."""
from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from children import child_env  # tests/children.py
from model_files import config_of, read_arrays, tampered, with_config  # tests/model_files.py

from cfn_fast import CFN, available_backends
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.fitted.persistence import BLEND_VERSION, READABLE_VERSIONS, ModelFileError
from cfn_fast.fitted.state import FACTOR_ENTRIES

HERE = Path(__file__).resolve().parent
BACKEND = "cpu" if "cpu" in available_backends() else "numpy"
#: The blend of these keeps two networks, I-CFN and U-CFN, with fold-in weights on both sides (networks that
#: do not beat the bias model on validation are left out: these sets are dense enough for them to), and the factor
#: member (the synthetic ratings are of low rank).
PLAIN = synthetic_ratings(300, 150, 20_000, seed=3, side_info=False)
SIDE = synthetic_ratings(300, 150, 20_000, seed=3, side_info=True)
TINY = synthetic_ratings(30, 20, 100, seed=3, side_info=False)


def _blend(data, **options) -> CFN:
    return CFN(hidden=(32,), epochs=options.pop("epochs", 10), backend=BACKEND, **options).fit(data)


@pytest.fixture(scope="module")
def blends() -> dict[str, tuple[CFN, object]]:
    """name -> (fitted blend, its data): with networks and the factor member, with side information too, the bias
    model alone (too few ratings; epochs=0)."""
    out = {"members": (_blend(PLAIN), PLAIN), "side": (_blend(SIDE), SIDE), "tiny": (_blend(TINY), TINY),
           "epochs0": (_blend(PLAIN, epochs=0), PLAIN)}
    assert len(out["members"][0].blend_.weights) == 2 and len(out["side"][0].blend_.weights) >= 1
    assert {p["kind"] for p in out["members"][0].blend_.member_params} == {"item", "user"}
    assert all(len(out[name][0].blend_.weights) == 0 for name in ("tiny", "epochs0"))
    for name in ("members", "side"):
        blend = out[name][0].blend_
        assert blend.factors and all(np.all(blend.factor_weights[use] > 0) for use in ("pairs", "user", "item"))
    assert all(out[name][0].blend_.factors == () for name in ("tiny", "epochs0"))
    return out


@pytest.fixture(scope="module")
def saved(blends, tmp_path_factory) -> Path:
    return blends["members"][0].save(tmp_path_factory.mktemp("blend") / "blend.npz")


def _fold_features(data, new: str):
    features = data.user_features if new == "user" else data.item_features
    return None if features is None else np.zeros(features.shape[1])


def _outputs(model: CFN, data) -> dict[str, np.ndarray]:
    """What a user of the model computes: pair predictions, top-10 lists, a new user and a new item folded in."""
    pairs = model.predict_indices(data.user[:3000], data.item[:3000])
    recs = model.recommend_batch(data.user_ids[:15], 10)
    user = model.fold_in(data.item_ids[:5], [4.0, 3.0, 5.0, 1.0, 2.0], _fold_features(data, "user"), new="user")
    item = model.fold_in(data.user_ids[:4], [2.0, 5.0, 4.0, 4.0], _fold_features(data, "item"), new="item")
    one = model.recommend(data.user_ids[7], 5)
    return {"pairs": pairs, "rec_ids": np.concatenate([r[0] for r in recs]),
            "rec_scores": np.concatenate([r[1] for r in recs]), "user": user.ratings, "item": item.ratings,
            "user_top": user.recommend(5)[1], "one_ids": one[0], "one_scores": one[1]}


def _assert_same(model: CFN, again: CFN, data, *, exact: bool = True) -> None:
    a, b = _outputs(model, data), _outputs(again, data)
    for name in a:
        if exact:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)    # bit for bit
        elif a[name].dtype.kind == "f":
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5, err_msg=name)
    blend, other = model.blend_, again.blend_
    np.testing.assert_array_equal(other.weights, blend.weights)
    for side in ("user", "item"):
        np.testing.assert_array_equal(other.fold_in_weights[side], blend.fold_in_weights[side])
    assert other.member_params == blend.member_params and other.report == blend.report
    for name in ("low", "high", "mean", "shrinkage", "user_offset", "item_offset"):
        np.testing.assert_array_equal(getattr(other.bias, name), getattr(blend.bias, name), err_msg=name)
    assert other.factor_weights.keys() == blend.factor_weights.keys() and len(other.factors) == len(blend.factors)
    for use in blend.factor_weights:
        np.testing.assert_array_equal(other.factor_weights[use], blend.factor_weights[use])
    for mine, theirs in zip(other.factors, blend.factors):
        assert mine is not theirs
        for name in ("user_factors", "item_factors", "reg", "low", "high"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
    assert {**again.get_params(), "backend": model.backend} == model.get_params() and again.kind_ == "blend"
    assert again.epochs_trained_ == model.epochs_trained_


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", ["members", "side", "tiny", "epochs0"])
def test_saved_blend_loads_and_predicts_exactly_as_before(blends, tmp_path, name):
    model, data = blends[name]
    path = model.save(tmp_path / "blend.npz")
    arrays = read_arrays(path)
    assert int(arrays["cfn_version"][0]) == BLEND_VERSION in READABLE_VERSIONS
    config = config_of(arrays)
    n_members = len(model.blend_.weights)
    assert config["kind"] == "blend" and len(config["members"]) == n_members and "n_layers" not in config
    assert not any(entry.startswith(("layer", "input_", "pre_")) for entry in arrays)
    assert {entry.split("_")[0] for entry in arrays if entry.startswith("member")} == \
        {f"member{k}" for k in range(n_members)}
    factors = model.blend_.factors
    if not factors:     # exactly the entries of a blend without factor members
        assert not any(entry in arrays for entry in FACTOR_ENTRIES)
    else:
        columns = sum(f.rank for f in factors)
        assert arrays["blend_user_factors"].shape == (data.n_users, columns)
        assert arrays["blend_item_factors"].shape == (data.n_items, columns)
        assert all(arrays[entry].dtype == np.float64 for entry in FACTOR_ENTRIES)
        np.testing.assert_array_equal(arrays["blend_factor_scalars"], [[f.rank, f.reg, f.low, f.high] for f in factors])
        np.testing.assert_array_equal(arrays["blend_factor_weights"], np.stack(
            [model.blend_.factor_weights[use] for use in ("pairs", "user", "item")], axis=1))
    loaded = CFN.load(path)
    assert loaded.backend_ == model.backend_
    _assert_same(model, loaded, data)
    for k in range(n_members):     # each member as a model of its own, and its codes
        np.testing.assert_array_equal(loaded.member(k).predict_indices(data.user[:500], data.item[:500]),
                                      model.member(k).predict_indices(data.user[:500], data.item[:500]))
        np.testing.assert_array_equal(loaded.encode(member=k), model.encode(member=k))


def test_a_loaded_blend_saves_the_same_file_again(saved, tmp_path):
    again = CFN.load(saved).save(tmp_path / "again.npz")
    first, second = read_arrays(saved), read_arrays(again)
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)


def test_a_blend_loads_on_another_backend(blends, saved):
    model, data = blends["members"]
    loaded = CFN.load(saved, backend="numpy")
    assert loaded.backend_ == "numpy" and loaded.backend == "numpy"
    _assert_same(model, loaded, data, exact=BACKEND == "numpy")


def test_a_blend_file_without_the_factor_member_loads(blends, saved, tmp_path):
    """A blend whose factor member earned no weight writes no factor entry: such a file loads and predicts as the
    bias model and networks alone."""
    model, data = blends["members"]
    loaded = CFN.load(tampered(saved, tmp_path / "no_factors.npz", _drop(*FACTOR_ENTRIES)))
    assert loaded.blend_.factors == () and all(len(w) == 0 for w in loaded.blend_.factor_weights.values())
    np.testing.assert_array_equal(loaded.blend_.weights, model.blend_.weights)
    users, items = data.user[:500], data.item[:500]
    without = model.blend_.bias.predict(users, items) + sum(
        w * (model.member(k).predict_indices(users, items) - model.blend_.bias.predict(users, items))
        for k, w in enumerate(model.blend_.weights))
    np.testing.assert_allclose(loaded.predict_indices(users, items), np.clip(without, 1.0, 5.0), rtol=0, atol=1e-12)
    assert not np.array_equal(loaded.predict_indices(users, items), model.predict_indices(users, items))
    again = read_arrays(loaded.save(tmp_path / "again.npz"))
    assert not any(entry in again for entry in FACTOR_ENTRIES)


def test_files_of_one_network_keep_their_versions(tmp_path):
    """Only a blend says version 4: a network's file is read by older releases as before."""
    for kind, centring, version in (("item", "sample", 1), ("user", "bias", 2)):
        path = CFN(kind, (8,), 1, backend=BACKEND, centring=centring).fit(TINY).save(tmp_path / f"{kind}.npz")
        arrays = read_arrays(path)
        assert int(arrays["cfn_version"][0]) == version
        assert not any(name.startswith(("member", "blend_")) for name in arrays)
        assert config_of(arrays)["kind"] == kind


# ----------------------------------------------------------------------------- pickling, copies, backends
COPIES = {"pickle": lambda m: pickle.loads(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)),
          "pickle-protocol-2": lambda m: pickle.loads(pickle.dumps(m, protocol=2)),
          "deepcopy": copy.deepcopy, "to_backend-same": lambda m: m.to_backend(m.backend_)}


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", ["members", "side", "tiny"])
def test_blend_copies_predict_exactly_as_the_original(blends, name, how):
    model, data = blends[name]
    copied = COPIES[how](model)
    assert copied is not model and copied.fitted_ is not model.fitted_
    _assert_same(model, copied, data)
    assert copied.blend_.weights is not model.blend_.weights


def test_blend_moves_to_numpy(blends):
    model, data = blends["members"]
    moved = model.to_backend("numpy")
    assert moved.backend_ == "numpy" and model.backend_ == BACKEND
    _assert_same(model, moved, data, exact=BACKEND == "numpy")


def test_pickled_blend_is_plain_data(blends):
    model, _ = blends["members"]
    state = model.__getstate__()
    assert all(isinstance(value, np.ndarray) for value in state["arrays"].values())
    assert state["config"]["kind"] == "blend" and len(state["config"]["members"]) == 2
    assert all(entry in state["arrays"] for entry in FACTOR_ENTRIES)
    payload = pickle.dumps(model)
    assert b"CpuEngine" not in payload and b"NumpyEngine" not in payload


# ----------------------------------------------------------------------------- tampered files
def _set(name: str, at, value):
    def edit(arrays):
        arrays[name][at] = value
    return edit


def _entry(name: str, value):
    def edit(arrays):
        arrays[name] = value(arrays[name]) if callable(value) else value
    return edit


def _drop(*prefixes: str):
    def edit(arrays):
        for name in [name for name in arrays if name.startswith(prefixes)]:
            del arrays[name]
    return edit


def _config(change):
    return lambda arrays: with_config(arrays, change)


def _member_param(k: int, **values):
    return _config(lambda c: c["members"][k]["params"].update(values))


def _bad_layer(arrays):
    arrays["member1_layer1_weight"] = arrays["member1_layer1_weight"][:-1].copy()


def _fold_in_weight_of_an_item_network(arrays):
    config = config_of(arrays)
    k = next(k for k, member in enumerate(config["members"]) if member["kind"] == "item")
    arrays["blend_fold_in_user"][k] = 0.5


def _extra_member(arrays):
    arrays["member3_input_data"] = arrays["member0_input_data"]


def _factor_rank(arrays):
    arrays["blend_item_factors"] = arrays["blend_item_factors"][:, :-1].copy()


def _no_rank(arrays):
    arrays["blend_user_factors"] = arrays["blend_user_factors"][:, :0].copy()
    arrays["blend_item_factors"] = arrays["blend_item_factors"][:, :0].copy()


def _version(n: int):
    return _entry("cfn_version", np.array([n], dtype=np.int64))


# (case, edit, message regex): one row per way a blend file can lie
CASES = [
    ("negative weight", _set("blend_weights", 1, -0.25), r"blend_weights must be >= 0 .*found -0.25"),
    ("NaN weight", _set("blend_weights", 0, np.nan), "blend_weights holds NaN or infinite values"),
    ("weights of another count", _entry("blend_weights", lambda w: w[:-1].copy()),
     r"blend_weights must have shape \(2,\), got \(1,\)"),
    ("user offset of the wrong length", _entry("blend_user_offset", lambda o: o[:-1].copy()),
     r"blend_user_offset must have shape \(300,\), got \(299,\)"),
    ("NaN item offset", _set("blend_item_offset", 3, np.nan), "blend_item_offset holds NaN or infinite values"),
    ("edited user offset", _set("blend_user_offset", 3, 1.5), "blend_user_offset does not match"),
    ("edited mean", _set("blend_scalars", 2, 4.5), r"blend_scalars\[2\] \(the mean rating\) does not match"),
    ("reversed scale in the bias model", _entry("blend_scalars", lambda s: s[[1, 0, 2, 3]].copy()),
     r"blend_scalars must start with the rating scale \[1.0, 5.0\]"),
    ("negative shrinkage", _set("blend_scalars", 3, -1.0), r"blend_scalars\[3\] .* must be >= 0"),
    ("integer offsets", _entry("blend_item_offset", lambda o: o.astype(np.int64)),
     "blend_item_offset must hold floating-point values"),
    ("fold-in weight on a network that cannot fold in a user", _fold_in_weight_of_an_item_network,
     "blend_fold_in_user must be 0 for the members that cannot fold in a new user"),
    ("member with a layer of a bad shape", _bad_layer,
     r"member 1 \(entries member1_\*\): layer1_weight must have shape \(150, 32\), got \(149, 32\)"),
    ("member without its arrays", _drop("member1_"), r"member 1 \(entries member1_\*\): entry 'input_data' is "
                                                      "missing"),
    ("member without its layer", _drop("member0_layer0_bias"), r"member 0 .*entry 'layer0_bias' is missing"),
    ("member index out of range", _set("member0_input_indices", 5, 10**6),
     r"member 0 .*input_indices must lie in \[0, "),
    ("member with an edited input", _set("member1_input_data", 0, 1.75), "member 1 .*input_data does not match"),
    ("member entries beyond config.members", _extra_member,
     r"entry 'member3_input_data' is beyond config.members \(2 member\(s\)\)"),
    ("unknown member entry", _entry("member0_notes", np.array([1.0])), "member 0 .*unknown entry 'notes'"),
    ("a network's entry outside any member", _entry("input_data", np.zeros(3, dtype=np.float32)),
     "unknown entry 'input_data'"),
    ("missing blend entry", _drop("blend_fold_in_item"), "entry 'blend_fold_in_item' is missing"),
    ("factor member without its weights", _drop("blend_factor_weights"),
     r"entry 'blend_factor_weights' is missing \(the factor member's entries .* come together or not at all\)"),
    ("factor member without its item factors", _drop("blend_item_factors"),
     r"entry 'blend_item_factors' is missing \(the factor member's entries"),
    ("factor weights alone", _drop("blend_user_factors", "blend_item_factors", "blend_factor_scalars"),
     r"entry 'blend_user_factors' is missing \(the factor member's entries"),
    ("user factors of the wrong length", _entry("blend_user_factors", lambda f: f[:-1].copy()),
     r"blend_user_factors must have shape \(300, 20\), got \(299, "),
    ("user factors as a vector", _entry("blend_user_factors", lambda f: f[:, 0].copy()),
     r"blend_user_factors must have shape \(300, 20\), got \(300,\)"),
    ("item factors of another rank", _factor_rank, r"blend_item_factors must have shape \(150, \d+\), got \(150, "),
    ("factors without columns", _no_rank, r"blend_user_factors must have shape \(300, 20\), got \(300, 0\)"),
    ("factors of rank 0", _set("blend_factor_scalars", (0, 0), 0.0),
     r"blend_factor_scalars\[0, 0\] \(the rank of factor member 0\) must be an integer >= 1, got 0"),
    ("NaN user factor", _set("blend_user_factors", (4, 2), np.nan), "blend_user_factors holds NaN or infinite"),
    ("infinite item factor", _set("blend_item_factors", (0, 0), -np.inf), "blend_item_factors holds NaN or infinite"),
    ("integer factors", _entry("blend_item_factors", lambda f: f.astype(np.int64)),
     "blend_item_factors must hold floating-point values"),
    ("zero factor penalty", _set("blend_factor_scalars", (0, 1), 0.0),
     r"blend_factor_scalars\[0, 1\] \(the penalty of factor member 0\) must be > 0, got 0"),
    ("NaN factor penalty", _set("blend_factor_scalars", (0, 1), np.nan),
     r"blend_factor_scalars must hold one finite row \[rank, reg, low, high\] per factor member"),
    ("factor member of another scale", _set("blend_factor_scalars", (0, 3), 10.0),
     r"blend_factor_scalars\[0, 2:\] must be the rating scale \[1.0, 5.0\] \(low, high\), got \[1.0, 10.0\]"),
    ("factor scalars of another width", _entry("blend_factor_scalars", lambda s: s[:, :3].copy()),
     r"blend_factor_scalars must have shape \(n, 4\), got \(1, 3\)"),
    ("a rank that does not match the factors", _set("blend_factor_scalars", (0, 0), 7.0),
     r"blend_user_factors must have shape \(300, 7\)"),
    ("negative factor weight", _set("blend_factor_weights", (0, 2), -0.5),
     r"blend_factor_weights must be finite and >= 0"),
    ("infinite factor weight", _set("blend_factor_weights", (0, 0), np.inf),
     r"blend_factor_weights must be finite and >= 0"),
    ("factor weights of another count", _entry("blend_factor_weights", lambda w: w[:, :2].copy()),
     r"blend_factor_weights must have shape \(1, 3\), got \(1, 2\)"),
    ("missing training ratings", _drop("train_rating"), "entry 'train_rating' is missing"),
    ("training user out of range", _set("train_user", 0, 300), r"train_user must lie in \[0, 300\)"),
    ("duplicate user ids", _set("user_ids", 1, 0), "user_ids must be sorted and unique"),
    ("member of another kind", _config(lambda c: c["members"][0].update(kind="user")),
     r"member 0 .*pre_sample_mean must have shape \(300,\), got \(150,\)"),
    ("member kind 'blend'", _config(lambda c: c["members"][0].update(kind="blend")),
     r"config.members\[0\].kind must be 'item' or 'user', got 'blend'"),
    ("member without fields", _config(lambda c: c["members"][1].pop("has_side")),
     r"config.members\[1\] must be an object with the fields"),
    ("members not a list", _config(lambda c: c.update(members={"0": 1})), "config.members must be a list"),
    ("member's side flag that lies", _config(lambda c: c["members"][0].update(has_side=True)),
     "member 0 .*config.has_side"),
    ("member's layer count that lies", _config(lambda c: c["members"][0].update(n_layers=3)),
     "member 0 .*entry 'layer2_weight' is missing"),
    ("member parameters of another kind", _member_param(0, kind="user"),
     "member 0 .*kind 'user' does not match the network, which has 'item'"),
    ("member parameters of another centring", _member_param(0, centring="sample"),
     "member 0 .*centring 'sample' does not match the network, which has 'bias'"),
    ("member parameters of other widths", _member_param(0, hidden=[8]),
     r"member 0 .*hidden \(8,\) does not match the network, which has \(32,\)"),
    ("bad member parameter", _member_param(1, batch_size=0), "member 1 .*batch_size must be a positive integer"),
    ("unknown member parameter", _member_param(1, depth=3), r"member 1 .*unknown parameter\(s\) \['depth'\]"),
    ("blend parameters of one network", _config(lambda c: c["params"].update(kind="item")),
     "config.params: kind 'item' does not fit the 'blend' model"),
    ("bad blend parameter", _config(lambda c: c["params"].update(lr=-1)), "config.params: lr must be"),
    ("a kind other than blend in a version-4 file", _config(lambda c: c.update(kind="item")),
     "config.kind must be 'blend' in a file of format version 4"),
    ("a blend labelled version 3", _version(3), "config.kind must be 'item' or 'user', got 'blend'"),
    ("a selection record", _config(lambda c: c.update(selection={"kind": "item"})), "config.selection must be null"),
    ("report that is not an object", _config(lambda c: c.update(blend_report=[1])),
     "config.blend_report must be a JSON object"),
    ("history beyond the epochs trained", _config(lambda c: c["history"].append({"epoch": 1})),
     r"config.history\[0\] must be an object"),
]


@pytest.mark.parametrize("case, edit, message", CASES, ids=[c[0] for c in CASES])
def test_each_inconsistent_blend_entry_is_refused(saved, tmp_path, case, edit, message):
    path = tampered(saved, tmp_path / "edited.npz", edit)
    with pytest.raises(ModelFileError, match=message) as info:
        CFN.load(path)
    text = str(info.value)
    assert text.startswith(f"{path} is not a valid cfn_fast model: ") and "\n" not in text


def test_a_bias_alone_blend_file_is_checked_too(blends, tmp_path):
    """Without networks the training set and the bias model are still checked."""
    path = blends["tiny"][0].save(tmp_path / "tiny.npz")
    def pair(arrays):
        arrays["train_user"][1], arrays["train_item"][1] = arrays["train_user"][0], arrays["train_item"][0]
    for edit, message in ((pair, r"repeat the \(user, item\) index pair"),
                          (_set("blend_user_offset", 0, np.inf), "blend_user_offset holds NaN or infinite"),
                          (_entry("blend_weights", np.zeros(1)), r"blend_weights must have shape \(0,\)"),
                          (_entry("blend_factor_weights", np.zeros((1, 3))),
                           r"entry 'blend_user_factors' is missing \(the factor member's entries"),
                          (_entry("member0_input_data", np.zeros(1, dtype=np.float32)),
                           r"entry 'member0_input_data' is beyond config.members \(0 member\(s\)\)")):
        with pytest.raises(ModelFileError, match=message):
            CFN.load(tampered(path, tmp_path / "edited.npz", edit))


def test_rehashing_alone_is_no_edit(saved, tmp_path, blends):
    model, data = blends["members"]
    _assert_same(model, CFN.load(tampered(saved, tmp_path / "same.npz", lambda arrays: None)), data)


# ----------------------------------------------------------------------------- random edits, in a child
_FUZZ_CHILD = """
import json, sys, warnings
from collections import Counter
from pathlib import Path
import numpy as np
from _model_file_fuzz_child import CLEAN, MUTATIONS, _pick
from model_files import read_arrays, write_rehashed
from cfn_fast import CFN
from cfn_fast.data.synthetic import synthetic_ratings
from cfn_fast.fitted.persistence import ModelFileError

folder, seed, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
data = synthetic_ratings(300, 150, 20_000, seed=3, side_info=False)
base = read_arrays(CFN(hidden=(32,), epochs=10, backend=sys.argv[4]).fit(data).save(folder / "base.npz"))
rng = np.random.default_rng(seed)
outcomes, target = Counter(), folder / "case.npz"

def blend_names(rng, arrays):
    names = sorted(name for name in arrays if name.startswith(("member", "blend_", "train_")))
    return _pick(rng, names)

def use(model):
    model.predict_indices(data.user[:50], data.item[:50])
    model.recommend(data.user_ids[0], n=3, min_support=0)
    model.fold_in(data.item_ids[:3], [5.0, 1.0, 3.0], new="user").recommend(2, min_support=0)
    model.fold_in(data.user_ids[:3], [5.0, 1.0, 3.0], new="item").predict(data.user_ids[:2])
    for k in range(len(model.blend_.weights)):
        model.encode(member=k)

for k in range(n):
    arrays = {name: value.copy() for name, value in base.items()}
    notes = []
    for mutate in [_pick(rng, MUTATIONS) for _ in range(1 + int(rng.integers(3)))]:
        try:
            if mutate.__name__ in ("set_element", "change_dtype", "change_shape", "reorder") and rng.random() < 0.7:
                name = blend_names(rng, arrays)     # aim at the blend's own entries and its members'
                shown = {name: arrays[name]}
                notes.append(mutate(rng, shown))
                arrays[name] = shown[name]
            else:
                notes.append(mutate(rng, arrays))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            notes.append(f"{mutate.__name__}: skipped ({type(exc).__name__})")
    write_rehashed(target, arrays)
    print("case", k, "; ".join(notes), flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = CFN.load(target)
            except ModelFileError:
                outcomes["refused"] += 1
                continue
            except CLEAN as exc:
                print("bad", k, "load raised", type(exc).__name__, str(exc)[:200], flush=True)
                continue
            use(model)
            outcomes["used"] += 1
    except CLEAN as exc:
        outcomes["used, then " + type(exc).__name__] += 1
    except Exception as exc:
        print("bad", k, type(exc).__name__, str(exc)[:300], flush=True)
print("summary " + json.dumps(outcomes), flush=True)
"""


def test_random_edits_of_a_blend_file_never_crash(tmp_path):
    """A few hundred mutated blend files (the mutators of tests/_model_file_fuzz_child.py, aimed mostly at the
    members' and the blend's entries), each loaded and used in ONE child: refused or working, never a crash."""
    proc = subprocess.run([sys.executable, "-c", _FUZZ_CHILD, str(tmp_path), "4", "300", BACKEND],
                          capture_output=True, text=True, timeout=300, env=child_env(), cwd=HERE)
    cases = [line for line in proc.stdout.splitlines() if line.startswith("case ")]
    assert proc.returncode == 0, f"the child ended with {proc.returncode} in {cases[-1:]}: {proc.stderr[-1500:]}"
    bad = [line for line in proc.stdout.splitlines() if line.startswith("bad ")]
    assert not bad, "\n".join(bad[:20])
    summary = json.loads(proc.stdout.splitlines()[-1][len("summary "):])
    assert len(cases) == 300 and summary.get("refused", 0) >= 100 and summary.get("used", 0) >= 10, summary
    print(f"{len(cases)} mutated blend files: {summary}")
