"""One caller at a time per engine: a second concurrent training call raises :class:`ModelBusyError`.

An engine updates its parameters in place and reuses scratch buffers from call to call (the ``cpu``
engine's mini-batch tables, the ``cuda`` engine's device buffers), so two threads training one engine
corrupted memory (a segfault three runs out of three).  The rule, the estimator's
(:mod:`cfn_fast.fitted.concurrency`) applied to an engine:

* *mutating* calls (``train_epoch``, ``profiled_epoch``, ``sgd_step``, ``gradients``, ``set_layers``,
  ``restore``) are exclusive: one started while another thread is inside any call of the same engine
  raises :class:`ModelBusyError` at once (no waiting: a caller who trains one engine from two threads
  has a bug to be told about, not a queue);
* *reading* calls (``predict_entries``, ``encode``, ``decode``, ``get_layers``, ``snapshot``,
  ``max_abs_param``) run concurrently with each other; they raise while another thread is in a mutating
  call (they would see half-updated parameters);
* the thread inside a call may call the engine again (an engine's own methods call each other).

The check costs two uncontended lock acquisitions per call.  Different engines never interact.
"""
from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

__all__ = ["ModelBusyError", "BusyGuard"]


class ModelBusyError(RuntimeError):
    """The model or engine is being trained (or read) by another call; it was left untouched."""


class BusyGuard:
    """Who is inside one engine's public methods: one mutating thread, or any number of reading threads."""

    def __init__(self, what: str) -> None:
        self.what = what                          # "this cpu engine", for the messages
        self._lock = threading.Lock()
        self._trainer: int | None = None          # thread ident inside a mutating call
        self._call = ""                           # that call, for the message
        self._depth = 0
        self._readers: dict[int, int] = {}        # thread ident -> reading calls it is inside
        _guards.add(self)

    def inside(self) -> bool:
        """True when the calling thread is already inside a call of this engine."""
        me = threading.get_ident()
        return self._trainer == me or me in self._readers

    @contextmanager
    def mutating(self, call: str) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            if self._trainer not in (None, me):
                raise ModelBusyError(f"{self.what} is busy: {self._call} is running in another thread; {call} "
                                     f"cannot start until it returns (drive one engine from one thread at a time, "
                                     f"or build one engine per thread)")
            others = sum(count for thread, count in self._readers.items() if thread != me)
            if others:
                raise ModelBusyError(f"{self.what} is busy: {others} reading call(s) are running in other "
                                     f"threads; {call} cannot start until they return")
            if self._trainer is None:
                self._trainer, self._call = me, call
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._trainer, self._call = None, ""

    @contextmanager
    def reading(self, call: str) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            if self._trainer not in (None, me):
                raise ModelBusyError(f"{self.what} is busy: {self._call} is running in another thread; {call} "
                                     f"would see half-updated parameters (wait for it to return)")
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._readers[me] - 1
                if left:
                    self._readers[me] = left
                else:
                    del self._readers[me]

    def reset_after_fork(self) -> None:
        # only the forking thread lives on in the child: the calls other threads were inside are gone, and
        # the lock may have been copied while one of them held it
        me = threading.get_ident()
        self._lock = threading.Lock()
        if self._trainer != me:
            self._trainer, self._call, self._depth = None, "", 0
        self._readers = {me: self._readers[me]} if me in self._readers else {}


_guards: "weakref.WeakSet[BusyGuard]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for guard in list(_guards):
        guard.reset_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
