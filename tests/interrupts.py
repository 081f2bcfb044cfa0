"""For the tests that press Ctrl-C on a child process."""
from __future__ import annotations

import signal


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` of a child that will get SIGINT.  A shell that starts the suite in the background
    (``cmd &``) ignores SIGINT, children inherit that, and Python then installs no KeyboardInterrupt
    handler: the child would train on and the test wait forever.  Restore the terminal's default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
