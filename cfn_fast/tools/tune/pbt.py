"""Synchronous population-based training that cannot strand its population.

Ray's synchronous PBT pauses each trial at a perturbation point until every live trial has reached it; the last
one to arrive runs the exploit/explore step and releases the others.  When a trial ends *between* two points
(an error after its retries, a trainable that returns early), nobody arrives any more: the paused trials wait
forever (seen with Ray 2.60: three trials paused at iteration 4, the fourth terminated at iteration 3).

Ray also keeps a trial that failed for good (status ERROR) among the controller's *live* trials, so synchronous
PBT waits for it at every later perturbation point, even when every other trial has arrived.

Three guards:

* CFN's trainable (:mod:`.trainable`) reports every epoch of every trial, a diverged one included, so no trial
  ends early for that reason;
* :class:`UnstrandedPBT` shows PBT the live trials without the finished ones, so the last trial to arrive at a
  perturbation point runs the step whatever failed before;
* when the stranded state still occurs (paused trials, none that may run, none running or pending: the trial
  everybody waited for failed after they arrived), it runs, when Ray asks it for the next trial to run, the step
  the missing arrival would have run: the paused trials are compared, the worst copy the best, and they go on.

Imported only when a search runs (it imports Ray Tune).
"""
from __future__ import annotations

import logging
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

__all__ = ["UnstrandedPBT"]

LOG = logging.getLogger(__name__)


class _UnfinishedLive:
    """The controller as PBT sees it here: its live trials without the finished ones (see the module's note)."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def get_live_trials(self) -> set[Trial]:
        return {t for t in self.controller.get_live_trials() if not t.is_finished()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.controller, name)


class UnstrandedPBT(PopulationBasedTraining):
    """``PopulationBasedTraining`` (``synch=True``) that releases trials left waiting at a perturbation point."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(synch=True, **kwargs)
        self.last_results: dict[str, dict] = {}      # trial id -> its latest result, to replay the missed step
        self.replayed: set[tuple[str, Any]] = set()   # (trial id, iteration) replayed: each stranding once

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self.last_results[trial.trial_id] = result
        return super().on_trial_result(_UnfinishedLive(tune_controller), trial, result)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is None:
            waiting = self.stranded(tune_controller.get_trials())
            result = self.last_results[waiting[0].trial_id] if waiting else {}
            key = (waiting[0].trial_id, result.get("training_iteration")) if waiting else None
            if key is not None and key not in self.replayed:
                self.replayed.add(key)
                LOG.warning("PBT: %d trial(s) waited at iteration %s for a trial that ended; comparing them without "
                            "it", len(waiting), key[1])
                # The step the last arrival would have run: Ray's own, replayed with a waiting trial's result
                # (every other live trial is at the point, so it compares, exploits and moves the point on).
                super().on_trial_result(_UnfinishedLive(tune_controller), waiting[0], result)
                chosen = super().choose_trial_to_run(tune_controller)
        return chosen

    def stranded(self, trials: list[Trial]) -> list[Trial]:
        """The paused trials when nothing else can make progress (none running or pending), else []."""
        if any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            return []
        return [t for t in trials if t.status == Trial.PAUSED and t.trial_id in self.last_results]
