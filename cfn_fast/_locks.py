"""One re-entrant lock per live object, kept outside the object.

A lock cannot be pickled or deep-copied, and an estimator must stay plain data (it travels to
workers); so the lock that guards an estimator's lazily built members (its engine, its inference
caches) lives here, in a weak registry that forgets the object when it is garbage collected.
"""
from __future__ import annotations

import threading
import weakref

__all__ = ["object_lock"]

_locks: "weakref.WeakKeyDictionary[object, threading.RLock]" = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def object_lock(obj: object) -> threading.RLock:
    """The re-entrant lock of ``obj`` (created on first request; one per object, never shared)."""
    with _registry_lock:
        lock = _locks.get(obj)
        if lock is None:
            lock = _locks[obj] = threading.RLock()
        return lock
