"""The thin training loop around an engine: lr schedule, per-epoch evaluation, history, callbacks,
early stopping and divergence detection.  The maths of one step lives in the engines.

Divergence rule (:class:`DivergenceRule`)
-----------------------------------------
Every layer ends in a tanh, so a learning rate that is far too large rarely makes the loss
infinite: the weights explode, every tanh saturates at ±1 and the loss stays *finite* but
useless (it plateaus around ``1 + x²`` per rating).  An epoch is therefore declared diverged
when any of these holds after it:

1. the epoch's loss is NaN or infinite;
2. a parameter is NaN or infinite, or its magnitude exceeds ``max_abs_param`` (default
   ``1e4``; trained CFN weights are O(1), the initial ones ``±1/√fan_in``);
3. the epoch's mean loss per known rating exceeds ``loss_factor`` (default 3) times
   ``reference_loss``: the loss, weighted by α·mask_ratio + β·(1 − mask_ratio), of the
   larger of two references measured when training starts — the *zero output* (every
   sample predicted by its own training mean) and the network as it is (for ``fit``, the
   untrained network) — floored at a mean squared error of 0.1 so that nearly constant data
   cannot make it zero.

Then :class:`TrainingDiverged` is raised naming the epoch and the reason, and the engine is
put back to the parameters of the last good epoch.

Interrupts and other exceptions
-------------------------------
Whatever stops training half-way (``KeyboardInterrupt``, an error in a callback or in the
validation scoring, an out-of-memory error) leaves the engine at the parameters of the last
epoch recorded in ``history``: an epoch whose record was not yet appended is rolled back from
the snapshot taken at the previous epoch boundary.  The exception then propagates unchanged
(with a note naming the epoch kept), so ``history``, the epoch count and the weights always
describe one state that ``save`` and ``partial_fit`` can go on from.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import scipy.sparse as sp

from ..backends.base import Engine

__all__ = ["learning_rate", "EpochRecord", "TrainingDiverged", "EarlyStopping", "DivergenceRule", "run_epochs",
           "Callback", "divergence_rule", "reference_mse", "REFERENCE_FLOOR"]

#: Floor of the mean squared centred rating the divergence rule compares with (rule 3 above).
REFERENCE_FLOOR = 0.1

log = logging.getLogger("cfn_fast")


def learning_rate(lr: float, lr_decay: float, epoch: int) -> float:
    """The paper's schedule (Torch ``optim.sgd``): ``lr_t = lr / (1 + t·decay)``, t the epoch from 1."""
    return lr / (1.0 + epoch * lr_decay)


@dataclass
class EpochRecord:
    """One line of :attr:`CFN.history_`."""

    epoch: int
    lr: float
    train_loss: float         # summed CFN loss over the epoch's mini-batches, divided by known entries
    seconds: float
    validation_rmse: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingDiverged(FloatingPointError):
    """Training diverged (see :class:`DivergenceRule`); the model keeps the parameters of the last
    good epoch.  ``epoch`` is the epoch that diverged, ``reason`` says which rule fired."""

    def __init__(self, message: str, epoch: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.epoch = epoch
        self.reason = reason


class Callback(Protocol):
    def __call__(self, record: EpochRecord) -> bool | None: ...  # return True to stop training


@dataclass
class EarlyStopping:
    """Stop when validation RMSE has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best`` the engine goes back to the best epoch's parameters."""

    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, (int, np.integer)) or self.patience < 1:
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        if not (isinstance(self.min_delta, (int, float, np.floating)) and math.isfinite(self.min_delta)
                and self.min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {self.min_delta!r}")


@dataclass(frozen=True)
class DivergenceRule:
    """When an epoch counts as diverged (module docstring).  ``reference_loss`` is the mean
    loss per known rating of the zero output; ``None`` disables rule 3."""

    reference_loss: float | None = None
    loss_factor: float = 3.0
    max_abs_param: float = 1e4

    def check(self, loss_per_rating: float, engine: Engine) -> str | None:
        """The reason the epoch diverged, or ``None``."""
        if not math.isfinite(loss_per_rating):
            return f"the loss is {loss_per_rating}"
        largest = engine.max_abs_param()
        if not math.isfinite(largest):
            return "a parameter became NaN or infinite"
        if largest > self.max_abs_param:
            return f"a parameter reached magnitude {largest:.3g} (> {self.max_abs_param:.3g}: the tanh units saturate)"
        if self.reference_loss is not None and loss_per_rating > self.loss_factor * self.reference_loss:
            return (f"the mean loss per rating {loss_per_rating:.4g} exceeds {self.loss_factor:g}x the reference "
                    f"loss {self.reference_loss:.4g} (predicting each sample's mean, or the network before "
                    f"this training)")
        return None


def divergence_rule(divergence: "DivergenceRule | str | None", loss_weight: float,
                    reference: Callable[[], float]) -> "DivergenceRule | None":
    """The rule a training runs under: ``divergence`` as given (``"auto"``: the default rule), its
    reference loss, when not set, ``loss_weight`` (α·mask_ratio + β·(1 − mask_ratio)) times
    ``reference()``, the mean squared error of :func:`reference_mse`."""
    if divergence is None:
        return None
    if isinstance(divergence, str) and divergence == "auto":
        divergence = DivergenceRule()
    if not isinstance(divergence, DivergenceRule):
        raise TypeError(f"divergence must be a DivergenceRule, 'auto' or None, got {divergence!r}")
    if divergence.reference_loss is not None:
        return divergence
    return DivergenceRule(reference_loss=loss_weight * reference(), loss_factor=divergence.loss_factor,
                          max_abs_param=divergence.max_abs_param)


def reference_mse(engine: Engine, inputs: sp.csr_matrix, side: np.ndarray | None, seed: int,
                  max_samples: int = 1000) -> float:
    """The larger of the mean squared centred rating (the zero output: each sample predicted by its mean)
    and the network's mean squared error on (up to ``max_samples``) training samples, floored at
    :data:`REFERENCE_FLOOR`."""
    if inputs.nnz == 0:
        return REFERENCE_FLOOR
    zero_output = float(np.mean(inputs.data.astype(np.float64) ** 2))
    trainable = np.flatnonzero(np.diff(inputs.indptr) > 0)
    if len(trainable) > max_samples:
        trainable = np.sort(np.random.default_rng(seed).choice(trainable, max_samples, replace=False))
    counts = np.diff(inputs.indptr)[trainable]
    rows = np.repeat(trainable, counts)
    sub = inputs[trainable]
    output = engine.predict_entries(inputs, side, rows, sub.indices)
    network = float(np.mean((np.asarray(output, dtype=np.float64) - sub.data) ** 2))
    return max(zero_output, network if np.isfinite(network) else 0.0, REFERENCE_FLOOR)


def run_epochs(engine: Engine, *, first_epoch: int, epochs: int, lr: float, lr_decay: float,
               n_known: int, evaluate: Callable[[], float] | None = None,
               early_stopping: EarlyStopping | None = None,
               callbacks: tuple[Callback, ...] = (), progress: bool = False,
               divergence: DivergenceRule | None = DivergenceRule(),
               history: list[EpochRecord] | None = None, log_level: int = logging.INFO,
               echo: bool = False, report: dict | None = None) -> list[EpochRecord]:
    """Train ``epochs`` epochs numbered from ``first_epoch``; returns one record per epoch run.

    ``history`` (if given) receives each record as soon as its epoch is done, so it holds the
    good epochs even when :class:`TrainingDiverged` is raised.  Every callback is called
    after every epoch; any returning True stops training.  ``report`` (if given) receives
    ``best_epoch`` (with early stopping), ``stopped_early`` and ``stop_reason``.
    """
    records: list[EpochRecord] = []
    report = {} if report is None else report
    report.update(best_epoch=None, stopped_early=False, stop_reason=None)
    last_good = engine.snapshot()
    best_rmse, best_layers, best_epoch, since_best = math.inf, None, None, 0
    last_epoch = first_epoch + epochs - 1
    # ``recorded``: the last epoch appended to the records; ``snapshot_epoch``: the epoch whose
    # parameters ``last_good`` holds.  They differ only between an epoch's record and its snapshot,
    # when the engine's parameters are exactly the recorded epoch's.
    recorded = snapshot_epoch = first_epoch - 1
    bar = _progress_bar(epochs, progress)
    try:
        for epoch in range(first_epoch, first_epoch + epochs):
            lr_t = learning_rate(lr, lr_decay, epoch)
            start = time.perf_counter()
            loss = engine.train_epoch(epoch, lr_t)
            seconds = time.perf_counter() - start
            per_rating = loss / max(n_known, 1)
            reason = (None if math.isfinite(per_rating) else f"the loss is {per_rating}") if divergence is None \
                else divergence.check(per_rating, engine)
            if reason is not None:
                engine.restore(last_good)
                kept = "the initial parameters are" if epoch == 1 else f"the parameters of epoch {epoch - 1} are"
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}: {reason}; {kept} kept. "
                    f"Lower lr (now {lr:g}) or raise lr_decay.", epoch=epoch, reason=reason)
            record = EpochRecord(epoch, lr_t, per_rating, seconds)
            if evaluate is not None:
                record.validation_rmse = float(evaluate())
            records.append(record)
            if history is not None:
                history.append(record)
            recorded = epoch
            line = "epoch %d lr %.4g loss %.5f%s %.2fs" % (
                epoch, lr_t, record.train_loss,
                "" if record.validation_rmse is None else f" val RMSE {record.validation_rmse:.4f}", seconds)
            log.log(log_level, line)
            if echo and not log.isEnabledFor(log_level):
                _write(line)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record.train_loss:.4f}",
                                **({} if record.validation_rmse is None
                                   else {"val_rmse": f"{record.validation_rmse:.4f}"}))
            stop = False
            for cb in callbacks:  # every callback sees every epoch
                if cb(record):
                    stop = True
                    report["stop_reason"] = "callback"
            if early_stopping is not None and record.validation_rmse is not None:
                if record.validation_rmse < best_rmse - early_stopping.min_delta:
                    best_rmse, best_layers, best_epoch, since_best = record.validation_rmse, engine.snapshot(), epoch, 0
                else:
                    since_best += 1
                    if since_best >= early_stopping.patience and not stop:
                        stop = True
                        report["stop_reason"] = "early_stopping"
            if stop:
                report["stopped_early"] = epoch < last_epoch
                break
            if epoch < last_epoch:
                last_good = None  # release the old copy before taking the new one (peak memory)
                last_good = engine.snapshot()
                snapshot_epoch = epoch
    except TrainingDiverged:
        raise
    except BaseException as exc:  # KeyboardInterrupt included: roll back to the last recorded epoch
        if recorded == snapshot_epoch and last_good is not None:
            engine.restore(last_good)
        _note(exc, f"cfn_fast: training stopped during epoch {recorded + 1}; the parameters of "
                   + (f"epoch {recorded} are kept" if recorded else "the initialisation are kept"))
        raise
    finally:
        if bar is not None:
            bar.close()
    report["best_epoch"] = best_epoch
    if early_stopping is not None and early_stopping.restore_best and best_layers is not None:
        engine.restore(best_layers)
        log.log(log_level, "restored the parameters of epoch %d (best validation RMSE %.4f)", best_epoch, best_rmse)
    return records


def _note(exc: BaseException, text: str) -> None:
    """Attach ``text`` to the exception's traceback display (Python >= 3.11)."""
    if hasattr(exc, "add_note"):
        exc.add_note(text)


def _write(line: str) -> None:
    try:
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(line, file=sys.stderr)


def _progress_bar(total: int, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="CFN epochs", unit="epoch", leave=False)
