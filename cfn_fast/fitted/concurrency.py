"""One training at a time per estimator: a second concurrent ``fit`` / ``partial_fit`` raises.

Training mutates an estimator in place (its engine reuses scratch buffers from mini-batch to
mini-batch, and ``fit`` swaps the whole fitted state), so two threads training one object at
once corrupted memory.  The policy:

* *mutating* calls (``fit``, ``partial_fit``, ``StackedCFN.fit``, the baselines' ``fit``) are exclusive: a second one on
  the same object, from any thread, raises :class:`ModelBusyError` at once (no waiting: a caller
  who trains one model from two threads has a bug to be told about, not a queue);
* *reading* calls (``predict``, ``score``, ``recommend``, ``fold_in``, ``save``) run concurrently
  with each other without any lock; they raise :class:`ModelBusyError` while another thread
  trains the object (they would see half-updated weights), and a training call raises while
  reading calls are in flight.  The thread that trains may read (validation scoring, callbacks
  that predict or save a checkpoint);
* different objects never interact.

The bookkeeping lives here, keyed by ``id(obj)`` for the duration of a call (the object is alive
then), and never in the instance: estimators stay picklable and deep-copyable.  So does
:func:`object_lock`, the re-entrant lock that guards an estimator's lazily built members (its
engine, its inference caches), kept in a weak registry that forgets the object when it is collected.
"""
from __future__ import annotations

import functools
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ..backends.guard import ModelBusyError  # one class for estimators and engines (engines sit below)

__all__ = ["ModelBusyError", "exclusive", "shared", "mutating", "reading", "object_lock"]

F = TypeVar("F", bound=Callable[..., Any])

_guard = threading.Lock()
_trainer: dict[int, tuple[int, str]] = {}   # id(obj) -> (thread ident, the call) while it trains
_readers: dict[int, int] = {}               # id(obj) -> reading calls in flight from other threads


def _name(obj: Any) -> str:
    return type(obj).__name__


@contextmanager
def exclusive(obj: Any, action: str) -> Iterator[None]:
    """Hold ``obj`` for a mutating call, or raise :class:`ModelBusyError` at once."""
    key, me = id(obj), threading.get_ident()
    with _guard:
        if key in _trainer:
            thread, running = _trainer[key]
            where = "this thread" if thread == me else "another thread"
            raise ModelBusyError(
                f"this {_name(obj)} is busy: {running} is running in {where}; {action} cannot start until "
                f"it returns (train one object from one thread at a time, or train copies)")
        if _readers.get(key):
            raise ModelBusyError(
                f"this {_name(obj)} is busy: {_readers[key]} prediction call(s) are running in other "
                f"threads; {action} cannot start until they return")
        _trainer[key] = (me, action)
    try:
        yield
    finally:
        with _guard:
            _trainer.pop(key, None)


@contextmanager
def shared(obj: Any, action: str) -> Iterator[None]:
    """Mark a reading call on ``obj``; raise :class:`ModelBusyError` while another thread trains it."""
    key, me = id(obj), threading.get_ident()
    with _guard:
        trainer = _trainer.get(key)
        if trainer is not None and trainer[0] == me:
            counted = False  # the training thread itself (validation scoring, a callback)
        elif trainer is not None:
            raise ModelBusyError(
                f"this {_name(obj)} is busy: {trainer[1]} is running in another thread; {action} would "
                f"see half-trained weights (wait for it to return)")
        else:
            _readers[key] = _readers.get(key, 0) + 1
            counted = True
    try:
        yield
    finally:
        if counted:
            with _guard:
                left = _readers[key] - 1
                if left:
                    _readers[key] = left
                else:
                    del _readers[key]


def mutating(method: F) -> F:
    """Decorate a method that trains ``self`` (see :func:`exclusive`)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with exclusive(self, f"{method.__name__}()"):
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def reading(method: F) -> F:
    """Decorate a method that only reads ``self``'s fitted state (see :func:`shared`)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with shared(self, f"{method.__name__}()"):
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


_locks: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()


def object_lock(obj: object) -> threading.RLock:
    """The re-entrant lock of ``obj`` (created on first request; one per object, never shared)."""
    with _guard:
        lock = _locks.get(obj)
        if lock is None:
            lock = _locks[obj] = threading.RLock()
        return lock
