"""The CFN estimator: training UX (history, callbacks, early stopping, partial_fit, progress,
logging, divergence), fallbacks for cold rows, and the out-of-memory wrapper."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import cfn_fast.engine as engine_module
from cfn_fast import CFN, EarlyStopping, TrainingDiverged, synthetic_ratings, train_test_split
from cfn_fast.backends.numpy_backend import NumpyEngine
from cfn_fast.data.ratings import RatingSet
from cfn_fast.model import DeviceOutOfMemory, NotFittedError
from cfn_fast.training.trainer import DivergenceRule, EpochRecord


@pytest.fixture(scope="module")
def split():
    return train_test_split(synthetic_ratings(300, 200, 6000, seed=0), 0.1, seed=0)


def small(kind: str = "user", epochs: int = 3, **kw) -> CFN:
    return CFN(kind, (16,), epochs, backend="numpy", **kw)


def same_layers(a, b) -> bool:
    return all(np.array_equal(x, y) for la, lb in zip(a, b) for x, y in zip(la.arrays(), lb.arrays()))


# ----------------------------------------------------------------------------- basics
@pytest.mark.parametrize("kind", ["user", "item"])
def test_fit_predict_score_history(split, kind):
    train, test = split
    m = small(kind).fit(train, validation=test)
    assert [r.epoch for r in m.history_] == [1, 2, 3]
    for r in m.history_:
        assert isinstance(r, EpochRecord) and r.seconds >= 0 and np.isfinite(r.train_loss)
        assert r.lr == pytest.approx(m.resolved_params()["lr"] / (1 + r.epoch * m.resolved_params()["lr_decay"]))
        assert r.validation_rmse is not None
        assert set(r.as_dict()) >= {"epoch", "lr", "train_loss", "validation_rmse", "seconds"}
    assert m.history_[-1].validation_rmse == m.score(test)
    pred = m.predict(test.user_ids[test.user], test.item_ids[test.item])
    assert pred.shape == (test.nnz,) and np.all((pred >= 1) & (pred <= 5))
    assert m.epochs_trained_ == 3


def test_fit_is_deterministic_and_partial_fit_continues_exactly(split):
    train, test = split
    a = small(epochs=3).fit(train)
    b = small(epochs=3).fit(train)
    assert same_layers(a.layers_, b.layers_)
    c = small(epochs=2).fit(train).partial_fit(1)
    assert c.epochs_trained_ == 3 and [r.epoch for r in c.history_] == [1, 2, 3]
    assert same_layers(a.layers_, c.layers_)
    np.testing.assert_array_equal(a.predict_indices(test.user, test.item), c.predict_indices(test.user, test.item))


def test_refit_resets_state_and_caches(split):
    train, test = split
    m = small("item").fit(train)
    m.recommend(0)
    other = synthetic_ratings(120, 80, 2000, seed=3)
    m.fit(other)
    assert m.epochs_trained_ == 3 and len(m.history_) == 3
    ids, scores = m.recommend(0, 5)
    np.testing.assert_allclose(scores, m.predict([0] * len(ids), ids), atol=1e-5)


def test_callbacks_see_every_epoch_and_can_stop(split):
    train, _ = split
    seen_a, seen_b = [], []
    m = small(epochs=5).fit(train, callbacks=[lambda r: seen_a.append(r.epoch) or r.epoch == 2,
                                              lambda r: seen_b.append(r.epoch)])
    assert seen_a == seen_b == [1, 2]
    assert m.epochs_trained_ == 2


def test_early_stopping_restores_best_weights(split):
    train, test = split
    # a large lr makes validation RMSE bounce, so early stopping triggers
    m = small("item", epochs=30, lr=1.0, lr_decay=0.0, weight_decay=0.0)
    m.fit(train, validation=test, early_stopping=EarlyStopping(patience=2))
    rmses = [r.validation_rmse for r in m.history_]
    assert len(rmses) < 30, "early stopping should have stopped training"
    best = int(np.argmin(rmses))
    assert m.best_epoch_ == m.history_[best].epoch
    assert m.history_[-1].epoch - m.best_epoch_ == 2
    assert m.score(test) == rmses[best]   # the best epoch's weights are back


def test_early_stopping_needs_validation(split):
    with pytest.raises(ValueError, match="early_stopping needs a validation set"):
        small().fit(split[0], early_stopping=EarlyStopping())


def test_partial_fit_with_new_validation(split):
    train, test = split
    m = small(epochs=1).fit(train)
    assert m.history_[0].validation_rmse is None
    m.partial_fit(1, validation=test)
    assert m.history_[-1].validation_rmse == m.score(test)


def test_partial_fit_before_fit():
    with pytest.raises(NotFittedError):
        small().partial_fit(1)


# ----------------------------------------------------------------------------- progress and logging
def test_verbose_0_is_silent(split, capsys):
    small(epochs=2, verbose=0).fit(split[0])
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_1_shows_a_tqdm_bar(split, capsys):
    small(epochs=2, verbose=1).fit(split[0])
    err = capsys.readouterr().err
    assert "CFN epochs" in err


def test_verbose_2_writes_epoch_lines_without_logging_config(split, capsys):
    small(epochs=2, verbose=2).fit(split[0])
    err = capsys.readouterr().err
    assert "epoch 1 lr" in err and "epoch 2 lr" in err


def test_logger_cfn_fast_gets_epoch_lines(split, caplog):
    with caplog.at_level(logging.DEBUG, logger="cfn_fast"):
        small(epochs=2).fit(split[0], validation=split[1])
    lines = [r.getMessage() for r in caplog.records if r.name == "cfn_fast"]
    assert any(line.startswith("epoch 2 lr") and "val RMSE" in line for line in lines)


# ----------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("kind", ["user", "item"])
def test_huge_lr_raises_training_diverged_and_keeps_initial_weights(split, kind):
    train, _ = split
    init = small(kind, epochs=0).fit(train).layers_
    m = small(kind, epochs=5, lr=1e6, weight_decay=0.0)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1: a parameter reached magnitude") as info:
        m.fit(train)
    assert info.value.epoch == 1
    assert m.epochs_trained_ == 0 and m.history_ == []
    assert same_layers(m.layers_, init)
    assert same_layers(m.engine_.get_layers(), init)


def test_divergence_in_a_later_epoch_keeps_the_last_good_epoch(split):
    train, test = split
    m = small(epochs=2).fit(train)
    good = m.layers_
    before = m.predict_indices(test.user, test.item)
    m.set_params(lr=20.0, weight_decay=0.0)
    with pytest.raises(TrainingDiverged, match="at epoch 3: the mean loss per rating .* exceeds 3x") as info:
        m.partial_fit(3)
    assert info.value.epoch == 3 and "parameters of epoch 2 are kept" in str(info.value)
    assert m.epochs_trained_ == 2 and len(m.history_) == 2
    assert same_layers(m.layers_, good)
    np.testing.assert_array_equal(m.predict_indices(test.user, test.item), before)


def test_tanh_keeps_the_loss_finite_so_the_rule_checks_more(split):
    """Documented reason for the extra rules: with divergence=None a huge lr trains 'fine'."""
    m = small(epochs=3, lr=1e6, weight_decay=0.0).fit(split[0], divergence=None)
    assert all(np.isfinite(r.train_loss) for r in m.history_)
    assert max(float(np.abs(a).max()) for layer in m.layers_ for a in layer.arrays()) > 1e4


class _NanLossEngine(NumpyEngine):
    def train_epoch(self, epoch, lr):
        loss = super().train_epoch(epoch, lr)
        return float("nan") if epoch == 2 else loss


class _NanParamEngine(NumpyEngine):
    def train_epoch(self, epoch, lr):
        loss = super().train_epoch(epoch, lr)
        if epoch == 2:
            self.layers[0].weight[0, 0] = np.inf
        return loss


@pytest.mark.parametrize("engine, reason", [(_NanLossEngine, "the loss is nan"),
                                            (_NanParamEngine, "a parameter became NaN or infinite")])
def test_non_finite_loss_or_parameters(split, monkeypatch, engine, reason):
    monkeypatch.setattr(engine_module, "engine_class", lambda name: engine)
    m = small(epochs=3)
    with pytest.raises(TrainingDiverged, match=f"at epoch 2: {reason}"):
        m.fit(split[0])
    assert m.epochs_trained_ == 1
    assert all(np.all(np.isfinite(a)) for layer in m.layers_ for a in layer.arrays())


def test_custom_divergence_rule(split):
    with pytest.raises(TrainingDiverged, match="exceeds 0.01x"):
        small().fit(split[0], divergence=DivergenceRule(loss_factor=0.01))


# ----------------------------------------------------------------------------- cold rows
@pytest.mark.parametrize("kind", ["user", "item"])
@pytest.mark.parametrize("side", [True, False])
def test_rows_without_ratings_use_fallbacks(kind, side):
    full = synthetic_ratings(120, 80, 2000, seed=1, side_info=side)
    cold_user, cold_item = 5, 7
    keep = (full.user != cold_user) & (full.item != cold_item)
    train = full.subset(keep)  # same universe: user 5 and item 7 have no ratings
    m = CFN(kind, (8,), 2, backend="numpy").fit(train)
    p = m.predict([cold_user, cold_user, 0], [cold_item, 0, cold_item])
    assert np.all(np.isfinite(p)) and np.all((p >= 1) & (p <= 5))
    if not side:  # no side information: a cold sample gets the input's mean rating
        if kind == "user":
            items = train.item == 0
            assert p[1] == pytest.approx(train.rating[items].mean(), rel=1e-6)
        else:
            users = train.user == 0
            assert p[2] == pytest.approx(train.rating[users].mean(), rel=1e-6)


# ----------------------------------------------------------------------------- out of memory
class OutOfMemoryError(Exception):
    """Stands in for cupy.cuda.memory.OutOfMemoryError (matched by class name)."""


class _OomAtInit(NumpyEngine):
    def __init__(self, *a, **kw):
        raise OutOfMemoryError("Out of memory allocating 1,234,567,890 bytes")


class _OomInTraining(NumpyEngine):
    def train_epoch(self, epoch, lr):
        raise OutOfMemoryError("Out of memory allocating 42 bytes")


@pytest.mark.parametrize("engine, action", [(_OomAtInit, "building the engine"), (_OomInTraining, "training")])
def test_out_of_memory_becomes_a_clear_error(split, monkeypatch, engine, action):
    monkeypatch.setattr(engine_module, "engine_class", lambda name: engine)
    train = split[0]
    with pytest.raises(DeviceOutOfMemory) as info:
        small().fit(train)
    msg = str(info.value)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, RuntimeError)
    assert f"ran out of memory while {action}: 300 x 200 rating matrix with {train.nnz:,} ratings" in msg
    assert "hidden (16,)" in msg and "smaller batch_size or hidden, or backend='cpu'" in msg
    assert isinstance(info.value.__cause__, OutOfMemoryError)


def test_other_engine_errors_pass_through(split, monkeypatch):
    class Boom(NumpyEngine):
        def train_epoch(self, epoch, lr):
            raise ArithmeticError("boom")
    monkeypatch.setattr(engine_module, "engine_class", lambda name: Boom)
    with pytest.raises(ArithmeticError, match="boom"):
        small().fit(split[0])


# ----------------------------------------------------------------------------- hand-built data
def test_hand_built_rating_set_is_checked_before_the_engine(split):
    train = split[0]
    dup = RatingSet(np.r_[train.user, train.user[:1]], np.r_[train.item, train.item[:1]],
                    np.r_[train.rating, train.rating[:1]], train.user_ids, train.item_ids, train.scale)
    with pytest.raises(ValueError, match="duplicate"):
        small().fit(dup)


def test_get_set_params_and_repr():
    m = small()
    assert m.set_params(lr=0.1) is m and m.get_params()["lr"] == 0.1
    assert "lr=0.1" in repr(m)
    with pytest.raises(ValueError, match="unknown parameter 'foo'"):
        m.set_params(foo=1)
