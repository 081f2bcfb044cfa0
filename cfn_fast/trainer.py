"""The thin training loop around an engine: lr schedule, per-epoch evaluation, history, callbacks,
early stopping and divergence detection.  The maths of one step lives in the engines."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .backends.base import Engine

__all__ = ["learning_rate", "EpochRecord", "TrainingDiverged", "EarlyStopping", "run_epochs"]

log = logging.getLogger("cfn_fast")


def learning_rate(lr: float, lr_decay: float, epoch: int) -> float:
    """The paper's schedule (Torch ``optim.sgd``): ``lr_t = lr / (1 + t·decay)``, t the epoch from 1."""
    return lr / (1.0 + epoch * lr_decay)


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float         # summed CFN loss over the epoch's mini-batches, divided by known entries
    seconds: float
    validation_rmse: float | None = None
    extra: dict = field(default_factory=dict)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the model keeps the parameters of the last good epoch."""


class Callback(Protocol):
    def __call__(self, record: EpochRecord) -> bool | None: ...  # return True to stop training


@dataclass
class EarlyStopping:
    """Stop when validation RMSE has not improved for ``patience`` epochs; restore the best weights."""

    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True


def run_epochs(engine: Engine, *, first_epoch: int, epochs: int, lr: float, lr_decay: float,
               n_known: int, evaluate: Callable[[], float] | None = None,
               early_stopping: EarlyStopping | None = None,
               callbacks: tuple[Callback, ...] = (), progress: bool = False) -> list[EpochRecord]:
    """Train ``epochs`` epochs numbered from ``first_epoch``; returns one record per epoch run."""
    history: list[EpochRecord] = []
    last_good = engine.snapshot()
    best_rmse, best_layers, since_best = math.inf, None, 0
    bar = _progress_bar(epochs, progress)
    try:
        for epoch in range(first_epoch, first_epoch + epochs):
            lr_t = learning_rate(lr, lr_decay, epoch)
            start = time.perf_counter()
            loss = engine.train_epoch(epoch, lr_t)
            seconds = time.perf_counter() - start
            if not math.isfinite(loss):
                engine.restore(last_good)
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (loss {loss}); the parameters of epoch {epoch - 1} "
                    f"are kept. Lower lr (now {lr}) or raise lr_decay.")
            record = EpochRecord(epoch, lr_t, loss / max(n_known, 1), seconds)
            if evaluate is not None:
                record.validation_rmse = float(evaluate())
            history.append(record)
            log.info("epoch %d lr %.4g loss %.5f%s %.2fs", epoch, lr_t, record.train_loss,
                     "" if record.validation_rmse is None else f" val RMSE {record.validation_rmse:.4f}", seconds)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record.train_loss:.4f}",
                                **({} if record.validation_rmse is None else {"val_rmse": f"{record.validation_rmse:.4f}"}))
            stop = any(bool(cb(record)) for cb in callbacks)
            needs_snapshot = early_stopping is not None or epoch < first_epoch + epochs - 1
            if early_stopping is not None and record.validation_rmse is not None:
                if record.validation_rmse < best_rmse - early_stopping.min_delta:
                    best_rmse, best_layers, since_best = record.validation_rmse, engine.snapshot(), 0
                else:
                    since_best += 1
                    stop = stop or since_best >= early_stopping.patience
            if needs_snapshot and not stop:
                last_good = engine.snapshot()
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    if early_stopping is not None and early_stopping.restore_best and best_layers is not None:
        engine.restore(best_layers)
    return history


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="CFN epochs", unit="epoch", leave=False)
