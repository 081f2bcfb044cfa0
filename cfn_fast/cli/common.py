"""What every ``cfn`` subcommand shares: the registry, the parser class, the option helpers, ids
and output values.

A subcommand is a handler registered with :func:`command` together with the function that adds
its parser; :func:`cfn_fast.cli.build_parser` adds the parsers of every registered command, in the
order of :data:`cfn_fast.cli.GROUPS`.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = ["MODEL_HELP", "COMMANDS", "Command", "DefaultsHelpFormatter", "Handler", "OneLineParser",
           "add_common_options", "add_model_options", "add_scale_option", "command", "int_in", "model_from_args",
           "parse_ids", "plain", "read_ratings", "scale_note"]

Handler = Callable[[argparse.Namespace], dict]


@dataclass(frozen=True)
class Command:
    """A ``cfn`` subcommand: ``add_parser(subparsers)`` adds its parser; ``run(args)`` returns its result."""
    name: str
    run: Handler
    add_parser: Callable[[Any], Any]
    group: str


#: Every registered subcommand by name.
COMMANDS: dict[str, Command] = {}


#: the ``--model`` option's help, for every command that reads a saved model
MODEL_HELP = "model written by `cfn fit --save` or CFN.save (a file; a folder for a network kept sharded)"


def command(name: str, add_parser: Callable[[Any], Any]) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``cfn <name>``; ``add_parser(subparsers)`` adds its parser."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, fn, add_parser, fn.__module__)
        return fn
    return register


# ----------------------------------------------------------------------------- the parser class
class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` after an option's help, unless the help already names its default
    or there is nothing to show (``None``, a flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = action.nargs == 0  # store_true / store_false / count: the default says nothing useful
        # argparse has no public name for its "count" action: the one third-party private read here
        counts = isinstance(action, argparse._CountAction)
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings or (flag and not counts):
            return text
        return super()._get_help_string(action) or text


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are exceptions, reported on one line by
    :func:`cfn_fast.cli.errors.report_failure` (argparse itself prints the usage block and exits),
    and whose help shows every option's default (subcommand parsers are built from this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ----------------------------------------------------------------------------- option helpers
def int_in(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (argparse names the option in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``--json`` and ``-v``, which every subcommand takes."""
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the result, or {\"error\": ..., \"type\": ...})")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="progress bar and the library's informational messages on stderr")


def add_scale_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="rating scale of the data (default: the observed min and max)")


def scale_note(ratings: Any, scale: list[float] | None) -> str:
    """Which rating scale was used, and where it came from (never guessed from a file name)."""
    low, high = ratings.scale
    source = "declared with --scale" if scale else "observed min..max; declare with --scale LOW HIGH"
    return f"scale [{low:g}, {high:g}] ({source})"


# ----------------------------------------------------------------------------- the model's options
def byte_size(text: str) -> int:
    """``--max-worker-memory``: a positive number of bytes, with an optional suffix K, M, G or T (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), flags=re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes such as 500M or 2G, got {text!r}")
    return int(float(match.group(1)) * 1024 ** "_KMGT".index(match.group(2).upper() or "_"))


def add_model_options(p: argparse.ArgumentParser, *, epochs: int = 20) -> None:
    """The ``model`` option group of ``cfn demo`` and ``cfn fit``, one option per setting of
    :data:`cfn_fast.settings.SETTINGS` that has a flag (read back by :func:`model_from_args`)."""
    from cfn_fast.settings import DEFAULTS, SETTINGS

    types = {"positive int": int_in(1), "non-negative int": int_in(0), "int": int, "bytes": byte_size,
             "float": float}
    g = p.add_argument_group("model")
    for setting in SETTINGS:
        if setting.flag is None:
            continue
        cli = dict(setting.cli)
        cli.pop("flag", None)
        options: dict[str, Any] = {"dest": setting.name, "help": cli.pop("help", setting.help)}
        if setting.per_kind:
            options["help"] += (f" (default: {getattr(DEFAULTS['item'], setting.name):g} for --kind item, "
                                f"{getattr(DEFAULTS['user'], setting.name):g} for user)")
        if "action" not in cli:
            options["type"] = types[cli.pop("type")] if "type" in cli else (float if setting.per_kind else str)
            options["default"] = epochs if setting.name == "epochs" else cli.pop("default", setting.default)
        g.add_argument(setting.flag, **options, **cli)


def model_from_args(args: argparse.Namespace) -> Any:
    """The CFN the options of :func:`add_model_options` describe, validated before any data is
    loaded; a bad value is reported under its option name (``--batch-size``, not ``batch_size``)."""
    from cfn_fast.model import CFN
    from cfn_fast.settings import SETTINGS
    given = {s.name: getattr(args, s.name) for s in SETTINGS if s.flag is not None}
    model = CFN(**{**given, "hidden": tuple(given["hidden"])}, verbose=min(int(getattr(args, "verbose", 0)), 1))
    try:
        model.resolved_params()
    except ValueError as exc:
        text = str(exc)
        for s in SETTINGS:  # the settings whose option is named after them
            if s.flag == "--" + s.name.replace("_", "-"):
                text = re.sub(rf"(?<![\w-]){s.name}(?![\w])", s.flag, text)
        raise ValueError(text) from None
    return model


# ----------------------------------------------------------------------------- data, ids, output values
def read_ratings(path: str, scale: list[float] | None = None) -> Any:
    """The ratings of a file or a MovieLens folder, on the ``--scale`` given (else the observed one)."""
    from cfn_fast.data import load_movielens, load_ratings
    p = Path(path)
    declared = None if scale is None else (float(scale[0]), float(scale[1]))
    return load_movielens(p, scale=declared) if p.is_dir() else load_ratings(p, scale=declared)


def parse_ids(values: list[str], known: np.ndarray, option: str = "ids") -> np.ndarray:
    """Command-line ids arrive as strings: convert to the model's id type.  An integer beyond the
    range of that type cannot be one of the model's ids: a ``KeyError`` says so (not an
    ``OverflowError``)."""
    if known.dtype.kind in "iu":
        try:
            numbers = [int(v) for v in values]
        except ValueError as exc:
            raise ValueError(f"{option}: ids must be integers for this model: {exc}") from None
        info = np.iinfo(known.dtype)
        beyond = [n for n in numbers if not info.min <= n <= info.max]
        if beyond:
            raise KeyError(f"{option}: {len(beyond)} unknown id(s), e.g. {beyond[:3]}: beyond the range of this "
                           f"model's {known.dtype} ids ({info.min}..{info.max})")
        return np.array(numbers, dtype=known.dtype)
    return np.array(values, dtype=known.dtype)


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON can write (anything else unchanged)."""
    return value.item() if isinstance(value, np.generic) else value
