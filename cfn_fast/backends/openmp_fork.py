"""OpenMP kernels in a forked process: run them on a fresh thread where the inherited thread team is dead.

GNU OpenMP (libgomp) keeps, per thread, the team of worker threads that thread's parallel regions
ran on.  ``fork`` copies that bookkeeping but not the workers, so in the child the forking thread's
next parallel region waits forever for threads that do not exist: ``multiprocessing`` with the
``fork`` start method hung in ``predict`` once the parent had run the ``cpu`` kernels.  A thread
created in the child has no team yet and builds a new one, so:

* every call into the kernels goes through :func:`run`, which records the threads that ran them;
* in a forked child whose forking thread had run them (the only thread a child starts with), that
  thread's calls run on one helper thread started in the child, with the full thread count; the
  caller waits for it (Ctrl-C included: a kernel is never interrupted half-way, as in the parent);
* every other thread, and every process that did not fork after running the kernels, calls
  directly (one set insertion per call).

Only our own kernels are tracked: a parent that ran OpenMP regions in the forking thread through
another library leaves the same trap for that library.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Callable, TypeVar

__all__ = ["run", "forked_after_kernels"]

T = TypeVar("T")

_kernel_threads: set[int] = set()      # threads of this process that ran the OpenMP kernels
_stale_thread: int | None = None       # in a forked child: the forking thread, when its team is dead
_helper: concurrent.futures.ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def run(call: Callable[[], T]) -> T:
    """``call()``, the kernels it runs included, on a thread whose OpenMP team works."""
    me = threading.get_ident()
    if me != _stale_thread:
        _kernel_threads.add(me)
        return call()
    return _on_helper_thread(call)


def forked_after_kernels() -> bool:
    """True in a forked process whose forking thread had run the kernels (its calls go to a helper thread)."""
    return _stale_thread is not None


def _on_helper_thread(call: Callable[[], T]) -> T:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cfn_fast-openmp-after-fork")
        future = _helper.submit(call)
    interrupted = False
    while True:
        try:
            concurrent.futures.wait([future])
            break
        except KeyboardInterrupt:  # the kernel runs to its end, as it would on this thread
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt
    return future.result()


def _after_fork_in_child() -> None:
    global _stale_thread, _helper, _helper_lock
    me = threading.get_ident()
    # a grandchild forked from the same thread inherits the dead team too (the helper ran the kernels)
    _stale_thread = me if me in _kernel_threads or me == _stale_thread else None
    _kernel_threads.clear()
    _helper, _helper_lock = None, threading.Lock()   # the parent's helper thread does not exist here


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
