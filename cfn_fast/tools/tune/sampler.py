"""Optuna's NSGA-II sampler, picklable whatever the Optuna version.

Ray Tune pickles the search algorithm (with cloudpickle when the ``Tuner`` is made, with ``pickle`` when it
saves the searcher's state), and the searcher holds the sampler.  Optuna 5.1's ``NSGAIISampler`` keeps a
``threading.Lock``, which pickling refuses (``cannot pickle '_thread.lock' object``).  Optuna's own objects with a
lock (its in-memory storage, its study) leave the lock out of their state and make a new one when unpickled; this
subclass does the same for whatever locks the sampler holds, so it works on Optuna 4 (no lock) as on 5.

Imported only when a search runs (it imports Optuna).
"""
from __future__ import annotations

import threading
from typing import Any

import optuna

__all__ = ["PicklableNSGAIISampler"]

#: The lock types a sampler may hold, by the name ``threading`` makes them with.
_LOCK_MAKERS = {type(threading.Lock()): "Lock", type(threading.RLock()): "RLock"}
_LOCKS_KEY = "__cfn_fast_locks__"


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``optuna.samplers.NSGAIISampler`` whose locks are re-created, not pickled (the lock guards a cache of
    the study's trials, rebuilt from the study: nothing of the search is lost)."""

    def __getstate__(self) -> dict[str, Any]:
        parent = getattr(super(), "__getstate__", None)
        state = dict((parent() if parent is not None else None) or self.__dict__)   # object.__getstate__ (3.11+)
        locks = {name: _LOCK_MAKERS[type(value)] for name, value in state.items() if type(value) in _LOCK_MAKERS}
        for name in locks:
            del state[name]
        state[_LOCKS_KEY] = locks
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        locks = state.pop(_LOCKS_KEY, {})
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        for name, maker in locks.items():
            setattr(self, name, getattr(threading, maker)())
