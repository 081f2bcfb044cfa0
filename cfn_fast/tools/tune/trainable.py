"""One trial: train a CFN epoch by epoch, report the validation RMSE and checkpoint after every epoch.

A trial starts from its checkpoint when Ray hands it one: after its worker died (fault tolerance)
or when population-based training copies a better trial (exploit).  The checkpoint is the model's
own ``.npz`` (:meth:`CFN.save`; never a pickle); the settings of the trial's current config are
then applied with ``set_params``, which reaches the engine (a PBT perturbation takes effect).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfn_fast.data.ratings import RatingSet

from .extra import require
from .space import TUNED

__all__ = ["METRIC", "MODEL_FILE", "TrialSetup", "run_trial"]

MODEL_FILE = "model.npz"
METRIC = "validation_rmse"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares (sent once through Ray's object store)."""

    train: RatingSet
    validation: RatingSet
    kind: str                       # "item" / "user", or "auto" (then the config carries it)
    hidden: tuple[int, ...]
    epochs: int
    batch_size: int
    backend: str
    seed: int
    cpus: float
    epoch_hook: Callable[[int], None] | None = None   # called before each epoch (fault injection)


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable (bind ``setup`` with ``tune.with_parameters``).

    Every trial reports every epoch up to ``setup.epochs``, a diverged one included (it reports an infinite RMSE,
    without training, for the epochs left): a trial that ended early would strand synchronous PBT's population
    at the next perturbation point, and PBT replaces a diverged trial by a copy of a better one there."""
    tune = require("ray.tune")
    threads = max(1, int(setup.cpus))
    with _thread_limit(threads):
        model, resumed_from = _start(config, setup)
        where = _where()
        failure: str | None = None
        for epoch in range(resumed_from + 1, setup.epochs + 1):
            if failure is None:
                failure = _train_one_epoch(model, setup, epoch, resumed_from, threads, where)
            if failure is not None:
                tune.report({METRIC: math.inf, "epoch": epoch, "diverged": True, "error": failure,
                             "resumed_from": resumed_from, **where})
        if resumed_from >= setup.epochs:          # PBT cloned a finished model: this trial ends as its copy
            _report(model, {METRIC: float(model.score(setup.validation)), "epoch": resumed_from, "diverged": False,
                            "resumed_from": resumed_from, "threads": threads, **where})


def _train_one_epoch(model: Any, setup: TrialSetup, epoch: int, resumed_from: int, threads: int,
                     where: dict[str, Any]) -> str | None:
    """Train and report epoch ``epoch`` (with the model as checkpoint); the reason when it diverged, else None."""
    start = time.perf_counter()
    try:
        if setup.epoch_hook is not None:
            setup.epoch_hook(epoch)
        model.partial_fit(1, validation=setup.validation)
        rmse, error = float(model.history_[-1].validation_rmse), None
    except (ArithmeticError, ValueError) as exc:       # TrainingDiverged is a FloatingPointError
        rmse, error = math.inf, " ".join(str(exc).split())[:200]
    if not math.isfinite(rmse):
        return f"diverged in epoch {epoch}: {error or 'non-finite validation RMSE'}"
    _report(model, {METRIC: rmse, "epoch": epoch, "train_loss": model.history_[-1].train_loss,
                    "epoch_seconds": time.perf_counter() - start, "diverged": False,
                    "resumed_from": resumed_from, "threads": threads, "backend": model.backend_, **where})
    return None


def _report(model: Any, metrics: dict[str, Any]) -> None:
    """Report one epoch with the model as its checkpoint (the model's own .npz)."""
    tune = require("ray.tune")
    with tempfile.TemporaryDirectory(prefix="cfn_ckpt_") as folder:
        model.save(Path(folder) / MODEL_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _start(config: dict[str, Any], setup: TrialSetup):
    """(model, epochs already trained): from the trial's checkpoint when there is one, else fresh."""
    from cfn_fast.model import CFN
    tune = require("ray.tune")
    params = {name: float(config[name]) for name in TUNED if name in config}
    kind = config.get("kind", setup.kind)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            model = CFN.load(Path(folder) / MODEL_FILE, backend=setup.backend)
        if model.kind_ != kind:                              # PBT exploited a trial of the other kind
            raise ValueError(f"checkpoint of a {model.kind_} model given to a {kind} trial")
        model.set_params(**params)
        return model, model.epochs_trained_
    model = CFN(kind=kind, hidden=setup.hidden, epochs=0, batch_size=setup.batch_size, backend=setup.backend,
                use_side_info=False, seed=setup.seed, **params)
    model.fit(setup.train, validation=setup.validation)
    return model, 0


def _where() -> dict[str, Any]:
    """Which node and process run this trial (shown per trial in the result JSON)."""
    ray = require("ray")
    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid()}


class _thread_limit:
    """The trial's OpenMP (CFN CPU kernels) and BLAS threads follow its CPUs."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        os.environ["OMP_NUM_THREADS"] = str(self.threads)
        try:
            from cfn_fast.backends import cpu_backend
            cpu_backend.set_num_threads(self.threads)
        except ImportError:                                  # no compiled CPU kernels: nothing to limit
            pass
        try:
            from threadpoolctl import threadpool_limits
            self._limits = threadpool_limits(limits=self.threads)
        except ImportError:
            self._limits = None

    def __exit__(self, *exc: object) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
