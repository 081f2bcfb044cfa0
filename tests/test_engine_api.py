"""The public engine API (cfn_fast.engine, docs/engine_api.md): the documentation's external training loop
is run here and must reproduce CFN.fit bit for bit on cpu and numpy; the documented guarantees are checked."""
from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import cfn_fast
from cfn_fast import CFN, available_backends, synthetic_ratings, train_test_split
from cfn_fast import engine as engine_api
from cfn_fast.engine import (
    ENGINE_API_VERSION,
    BackendUnavailable,
    TrainConfig,
    init_layers,
    learning_rate,
    make_engine,
    minibatches,
    training_inputs,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "engine_api.md"
CPU_BACKENDS = [b for b in ("numpy", "cpu") if b in available_backends()]
TRAIN, TEST = train_test_split(synthetic_ratings(160, 100, 3500, seed=4), 0.1, seed=3)


def _doc_blocks(heading: str) -> list[str]:
    text = DOC.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _same_layers(a, b) -> bool:
    return all(np.array_equal(x, y) and x.dtype == y.dtype for la, lb in zip(a, b)
               for x, y in zip(la.arrays(), lb.arrays()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_the_documented_external_loop_reproduces_fit_bit_for_bit(backend, capsys):
    code = _doc_blocks("## Example: an external training loop")[0]
    assert 'backend = "cpu"' in code
    namespace: dict = {}
    exec(compile(code.replace('backend = "cpu"', f'backend = "{backend}"'), str(DOC), "exec"), namespace)
    # the example asserts the equality itself; check again here, independently of its wording
    model, layers = namespace["model"], namespace["layers"]
    assert model.backend_ == backend == namespace["engine"].name
    assert model.epochs_trained_ == 3 and _same_layers(layers, model.layers_)
    test = namespace["test"]
    np.testing.assert_array_equal(namespace["predicted"], model.predict_indices(test.user, test.item))
    assert capsys.readouterr().out.count("epoch ") == 3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_user_kind_without_side_information_mirrors_fit(backend):
    """The same loop for a U-CFN without side information, with train_epoch instead of sgd_step."""
    config = TrainConfig(alpha=1.2, beta=0.4, mask_ratio=0.3, weight_decay=0.01, batch_size=9, seed=11)
    inputs = training_inputs(TRAIN, "user", use_side_info=False)
    engine = make_engine(backend, init_layers(inputs.n_inputs, (10,), 0, 11), config, inputs.samples)
    for epoch in (1, 2):
        engine.train_epoch(epoch, learning_rate(0.07, 0.3, epoch))
    model = CFN("user", (10,), 2, lr=0.07, lr_decay=0.3, alpha=1.2, beta=0.4, mask_ratio=0.3, weight_decay=0.01,
                batch_size=9, seed=11, use_side_info=False, backend=backend).fit(TRAIN)
    assert _same_layers(engine.get_layers(), model.layers_)
    assert (inputs.samples != model.inputs_).nnz == 0 and model.side_ is None


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sgd_steps_over_minibatches_are_train_epoch(backend):
    inputs = training_inputs(TRAIN, "item")
    config = TrainConfig(batch_size=7, seed=2)
    layers = init_layers(inputs.n_inputs, (12, 6), inputs.side_dim, 2)
    by_epoch = make_engine(backend, layers, config, inputs.samples, inputs.side)
    by_step = make_engine(backend, layers, config, inputs.samples, inputs.side)
    for epoch in (1, 2):
        batches = minibatches(by_step, epoch)
        assert sorted(np.concatenate(batches).tolist()) == by_step.trainable.tolist()
        assert all(len(b) == 7 for b in batches[:-1])
        total = by_epoch.train_epoch(epoch, 0.05)
        assert sum(by_step.sgd_step(rows, epoch, 0.05) for rows in batches) == total
    assert _same_layers(by_epoch.get_layers(), by_step.get_layers())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_documented_update_from_gradients(backend):
    inputs = training_inputs(TRAIN, "item")
    config = TrainConfig(weight_decay=0.03, batch_size=11, seed=5)
    start = init_layers(inputs.n_inputs, (12,), inputs.side_dim, 5)
    engine = make_engine(backend, start, config, inputs.samples, inputs.side)
    stepped = make_engine(backend, start, config, inputs.samples, inputs.side)
    rows, epoch, lr_t = minibatches(engine, 1)[0], 1, 0.05
    namespace = {"np": np, "engine": engine, "rows": rows, "epoch": epoch, "lr_t": lr_t, "config": config}
    before = engine.get_layers()
    exec(_doc_blocks("## Example: an external training loop")[1], namespace)
    loss = stepped.sgd_step(rows, epoch, lr_t)
    assert namespace["loss"] == pytest.approx(loss, rel=1e-6)
    if backend == "numpy":
        assert namespace["loss"] == loss and _same_layers(engine.get_layers(), stepped.get_layers())
    else:
        for a, b in zip(engine.get_layers(), stepped.get_layers()):
            for x, y in zip(a.arrays(), b.arrays()):
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert not _same_layers(before, engine.get_layers())       # it did move


def test_gradients_leave_the_parameters_alone():
    inputs = training_inputs(TRAIN, "user")
    engine = make_engine(CPU_BACKENDS[-1], init_layers(inputs.n_inputs, (8,), inputs.side_dim, 0), TrainConfig(),
                         inputs.samples, inputs.side)
    before = engine.get_layers()
    loss, grads = engine.gradients(minibatches(engine, 1)[0], 1)
    assert loss > 0 and [g.weight.shape for g in grads] == [layer.weight.shape for layer in before]
    assert _same_layers(before, engine.get_layers())


def test_training_inputs_are_what_fit_uses():
    for kind in ("user", "item"):
        model = CFN(kind, (4,), 0, backend="numpy").fit(TRAIN)
        inputs = training_inputs(TRAIN, kind)
        assert (inputs.samples != model.inputs_).nnz == 0 and inputs.samples.dtype == np.float32
        np.testing.assert_array_equal(inputs.side, model.side_)
        np.testing.assert_array_equal(inputs.preprocessing.sample_mean, model.preprocessing_.sample_mean)
    features = np.ones((TRAIN.n_items, 3))
    assert training_inputs(TRAIN, "item", features=features).side_dim == 3
    assert training_inputs(TRAIN, "item", use_side_info=False).side is None


def test_make_engine_accepts_any_sparse_matrix_and_continues_a_model():
    model = CFN("item", (6,), 2, backend=CPU_BACKENDS[-1]).fit(TRAIN)
    engine = make_engine(CPU_BACKENDS[-1], model.layers_, model.engine_.config, model.inputs_.tocoo(), model.side_)
    assert _same_layers(engine.get_layers(), model.layers_)
    p = model.resolved_params()
    engine.train_epoch(3, learning_rate(p["lr"], p["lr_decay"], 3))
    model.partial_fit(1)
    assert _same_layers(engine.get_layers(), model.layers_)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_engines_never_share_the_callers_arrays(backend):
    """make_engine and set_layers hand float32 layers over unchanged to an engine that copies them into its own
    storage (Engine.copies_layers): what the caller does with its arrays afterwards never reaches the engine;
    float64 layers are taken as float32, as before."""
    inputs = training_inputs(TRAIN, "item")
    layers = init_layers(inputs.n_inputs, (5,), inputs.side_dim, 0)
    kept = [layer.copy() for layer in layers]
    engine = make_engine(backend, layers, TrainConfig(), inputs.samples, inputs.side)
    assert engine.copies_layers
    for array in (a for layer in layers for a in layer.arrays()):
        array[...] = 7.0
    assert _same_layers(engine.get_layers(), kept)
    given = [layer.copy() for layer in kept]
    engine.set_layers(given)
    for array in (a for layer in given for a in layer.arrays()):
        array[...] = 7.0
    assert _same_layers(engine.get_layers(), kept)
    engine.set_layers([cfn_fast.network.Layer(*(None if a is None else a.astype(np.float64) for a in
                                                 (layer.weight, layer.bias, layer.side_weight))) for layer in kept])
    assert _same_layers(engine.get_layers(), kept)


def test_init_layers_draws_a_chunk_at_a_time_the_values_of_one_draw(monkeypatch):
    """init_layers: the values (and stream positions) of one float64 draw per array, then float32."""
    monkeypatch.setattr(cfn_fast.network, "UNIFORM_CHUNK", 7)
    rng = np.random.default_rng(3)
    expected = []
    for fan_in, fan_out in engine_api.layer_sizes(23, (5, 4)):
        bound = 1.0 / np.sqrt(fan_in + 2)
        expected.append(cfn_fast.network.Layer(*(rng.uniform(-bound, bound, shape).astype(np.float32)
                                                 for shape in ((fan_out, fan_in), (fan_out,), (fan_out, 2)))))
    assert _same_layers(init_layers(23, (5, 4), 2, seed=3), expected)


@pytest.mark.parametrize("call, error, message", [
    (lambda L, c, X, S: make_engine("tpu", L, c, X, S), ValueError, "unknown backend 'tpu'"),
    (lambda L, c, X, S: make_engine(3, L, c, X, S), TypeError, "backend must be one of"),
    (lambda L, c, X, S: make_engine("numpy", L, {"alpha": 1}, X, S), TypeError, "config must be"),
    (lambda L, c, X, S: make_engine("numpy", L[0], c, X, S), TypeError, "layers must be a sequence"),
    (lambda L, c, X, S: make_engine("numpy", L, c, X.toarray(), S), TypeError, "samples must be a SciPy sparse"),
    (lambda L, c, X, S: make_engine("numpy", L, c, X, S[:-1]), ValueError, r"side information must have shape"),
    (lambda L, c, X, S: make_engine("numpy", L, c, X, S * np.nan), ValueError, "NaN or infinite"),
    (lambda L, c, X, S: make_engine("numpy", L[:1], c, X, S), ValueError, "at least 2 layers"),
    (lambda L, c, X, S: make_engine("numpy", L[::-1], c, X, S), ValueError, r"layers\[0\].weight must have shape"),
    (lambda L, c, X, S: make_engine("numpy", L, c, X, None), ValueError, r"layers\[0\].side_weight must be None"),
    (lambda L, c, X, S: make_engine("numpy", L, c, X[:, :-1], S), ValueError, r"layers\[0\].weight must have shape"),
])
def test_make_engine_names_bad_arguments(call, error, message):
    inputs = training_inputs(TRAIN, "item")
    layers = init_layers(inputs.n_inputs, (5,), inputs.side_dim, 0)
    with pytest.raises(error, match=message):
        call(layers, TrainConfig(), inputs.samples, inputs.side)


def test_unavailable_backend_and_bad_training_inputs():
    inputs = training_inputs(TRAIN, "item")
    if "cuda" not in available_backends():
        with pytest.raises(BackendUnavailable, match="backend 'cuda' is unavailable"):
            make_engine("cuda", init_layers(inputs.n_inputs, (5,), inputs.side_dim), TrainConfig(), inputs.samples,
                        inputs.side)
    with pytest.raises(TypeError, match="train must be a RatingSet"):
        training_inputs(sp.csr_matrix((3, 3)), "item")
    with pytest.raises(ValueError, match="kind must be 'user' or 'item'"):
        training_inputs(TRAIN, "users")


def test_the_contract_is_versioned_and_exported():
    major, minor = (int(x) for x in ENGINE_API_VERSION.split("."))
    assert (major, minor) >= (1, 0)
    assert f"(version {ENGINE_API_VERSION})" in DOC.read_text().splitlines()[0]
    for name in engine_api.__all__:
        assert hasattr(engine_api, name), name
    assert cfn_fast.engine is engine_api


def test_readme_embedding_examples_run():
    """The README's shipping and engine-loop examples run as written (in order, sharing names)."""
    if "cpu" not in available_backends():
        pytest.skip("the README examples use the cpu backend")
    readme = (DOC.parents[1] / "README.md").read_text()
    section = readme.split("## Embedding in other engines", 1)[1]
    namespace: dict = {}
    for heading in ("### Shipping models to workers", "### Driving training from your own loop"):
        for code in re.findall(r"```python\n(.*?)```", section.split(heading, 1)[1].split("\n### ", 1)[0], re.S):
            exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["engine"].name == "cpu" and len(namespace["layers"]) == 2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_engines_refuse_pickling_with_a_clear_message(backend):
    inputs = training_inputs(TRAIN, "item")
    engine = make_engine(backend, init_layers(inputs.n_inputs, (5,), inputs.side_dim), TrainConfig(), inputs.samples,
                         inputs.side)
    for attempt in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match=f"a cfn_fast '{backend}' engine cannot be pickled: ship the fitted model"):
            attempt(engine)
