"""Ctrl-C during a search: the first stops every trial (Tune ends the run, and the search reports what finished);
a second one raises ``KeyboardInterrupt`` at once.

Ray Tune has its own SIGINT handler, but it only logs and returns normally, so a caller cannot tell an
interrupted search from a finished one, and it stays installed after the run (a Ctrl-C during the refit is then
swallowed).  Here Tune's handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``, Ray's documented switch) and
ours asks Tune to stop through a :class:`StopOnRequest` stopper.  The handlers in place before the search are
restored after it.

Imported only when a search runs (it imports Ray Tune).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ray.tune.stopper import Stopper

__all__ = ["StopOnRequest", "ctrl_c_stops"]

#: Tokens of the stoppers asked to stop.  Tune pickles its stopper (and may copy it): a token names the request
#: wherever the stopper is; no lock or event in the stopper itself.
_REQUESTED: set[str] = set()


class StopOnRequest(Stopper):
    """A Tune stopper that stops every trial once :meth:`request` was called."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.token in _REQUESTED

    def request(self) -> None:
        _REQUESTED.add(self.token)

    @property
    def requested(self) -> bool:
        return self.token in _REQUESTED

    def forget(self) -> None:
        _REQUESTED.discard(self.token)


_TUNE_SWITCH = "TUNE_DISABLE_SIGINT_HANDLER"


@contextlib.contextmanager
def ctrl_c_stops(stopper: StopOnRequest) -> Iterator[None]:
    """While the search runs (``Tuner.fit``): the first SIGINT asks ``stopper`` to stop the run, then restores the
    previous handler, so a second SIGINT interrupts at once.  Outside the main thread no signal reaches Python:
    only Tune's switch is set.  An ignored SIGINT (a job started with ``&`` or ``nohup``) stays ignored."""
    saved_switch = os.environ.get(_TUNE_SWITCH)
    os.environ[_TUNE_SWITCH] = "1"
    in_main = threading.current_thread() is threading.main_thread()
    signals = [signal.SIGINT] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    previous = {sig: signal.getsignal(sig) for sig in signals} if in_main else {}
    interrupt = previous.get(signal.SIGINT)

    def on_ctrl_c(sig: int, frame: Any) -> None:
        stopper.request()
        signal.signal(signal.SIGINT, interrupt if interrupt is not None else signal.default_int_handler)

    if in_main and interrupt is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        if saved_switch is None:
            os.environ.pop(_TUNE_SWITCH, None)
        else:
            os.environ[_TUNE_SWITCH] = saved_switch
        for sig, handler in previous.items():     # Tune also installs a SIGUSR1 handler and leaves it behind
            if handler is not None:
                signal.signal(sig, handler)
