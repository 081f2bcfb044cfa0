"""How the ``cfn`` command line fails: one line, a documented exit status, JSON on request.

Policy (README, "Errors and exit status"):

* every failure prints exactly one line ``cfn <command>: error: <message>`` on stderr; no
  traceback (set ``CFN_TRACEBACK=1`` to see one);
* with ``--json`` it also prints one JSON object ``{"error": ..., "type": ..., "command": ...,
  "exit_code": ...}`` on stdout, so a script always gets one JSON document; an exception that carries
  a ``result`` dict (``cfn bench suite``'s regressions: the cases and the comparison) adds it as
  ``"result"``;
* exit status 2: bad input (``ValueError``, ``KeyError``, ``TypeError``, ``IndexError``,
  ``OverflowError``, ``FileNotFoundError``, a bad option); 1: any other failure (training
  diverged, no GPU, out of memory, I/O errors, a missing optional dependency); 130: interrupted
  (Ctrl-C, ``KeyboardInterrupt``); 141: stdout closed early (``cfn recommend ... | head``).
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

__all__ = ["UsageError", "command_name", "exit_status", "message_of", "report_failure"]

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_BAD_INPUT = (ValueError, KeyError, TypeError, IndexError, OverflowError, FileNotFoundError, NotADirectoryError,
              IsADirectoryError)


class UsageError(ValueError):
    """A command-line option is missing, unknown or has a bad value (argparse's complaint)."""


def exit_status(exc: BaseException) -> int:
    from cfn_fast.model import DeviceOutOfMemory
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    if isinstance(exc, DeviceOutOfMemory):
        return EXIT_FAILURE
    if isinstance(exc, _BAD_INPUT):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def message_of(exc: BaseException, command: str) -> str:
    """The one-line message for ``exc``."""
    from cfn_fast.model import DeviceOutOfMemory
    if isinstance(exc, KeyboardInterrupt):   # one that carries a message says what was kept (cfn tune)
        detail = _one_line(str(exc))
        return f"interrupted (Ctrl-C): {detail}" if detail else \
            "interrupted (Ctrl-C); files being written were left unchanged"
    if isinstance(exc, MemoryError) and not isinstance(exc, DeviceOutOfMemory):
        return f"out of memory{_detail(exc)}: {_memory_hint(command)}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"the optional package {exc.name!r} is not installed ({_one_line(exc)})"
    text = _one_line(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc))
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return (f"internal error ({type(exc).__name__}: {text}); please report it "
                f"(CFN_TRACEBACK=1 shows the traceback)")
    if type(exc).__module__ != "builtins" and not type(exc).__module__.startswith("cfn_fast"):
        text = f"{type(exc).__name__}: {text}"  # a third-party error: its type tells where it came from
    return text or type(exc).__name__


_PROGRAMMING_ERRORS = (AssertionError, AttributeError, NameError, ZeroDivisionError, RecursionError)


def _detail(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return f" ({text})" if text else ""


def _memory_hint(command: str) -> str:
    if command in ("fit", "demo"):
        return "reduce --hidden or --batch-size, or train on less data"
    if command.startswith("bench"):
        return "use --quick, fewer --datasets or a smaller --synthetic shape"
    if command in ("recommend", "predict", "eval", "fold-in"):
        return "ask for fewer ids (or a smaller -n) per call"
    return "reduce the size of the problem"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def command_name(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv`` (``"bench paper"`` for nested ones), for messages."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return ""
    nested = words[0] == "bench" and len(words) > 1 and words[1] in ("paper", "suite")
    return " ".join(words[:2]) if nested else words[0]


def report_failure(exc: BaseException, command: str, json_mode: bool) -> int:
    """Print the failure (one line on stderr; one JSON object on stdout with ``--json``); return
    the exit status."""
    status = exit_status(exc)
    if status == EXIT_BROKEN_PIPE:
        _silence_stdout()
        return status
    message = message_of(exc, command)
    if os.environ.get("CFN_TRACEBACK"):
        traceback.print_exception(exc, file=sys.stderr)
    prefix = f"cfn {command}: error: " if command else "cfn: error: "
    try:
        print(prefix + message, file=sys.stderr, flush=True)
        if json_mode:
            payload = {"error": message, "type": type(exc).__name__, "command": command or None, "exit_code": status}
            result = getattr(exc, "result", None)
            if isinstance(result, dict):
                payload["result"] = result
            print(json.dumps(payload, default=str), flush=True)
    except BrokenPipeError:  # pragma: no cover - nobody is listening any more
        _silence_stdout()
    return status


def _silence_stdout() -> None:
    """After a broken pipe Python would complain again at exit while flushing stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout is not a real file
        pass
