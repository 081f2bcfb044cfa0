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

__all__ = ["COMMANDS", "Command", "DefaultsHelpFormatter", "Handler", "OneLineParser", "add_common_options",
           "add_model_options", "add_scale_option", "command", "int_in", "model_from_args", "parse_ids", "plain",
           "read_ratings", "scale_note"]

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
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings or (flag and not isinstance(action, argparse._CountAction)):
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
def add_model_options(p: argparse.ArgumentParser, *, epochs: int = 20) -> None:
    """The ``model`` option group of ``cfn demo`` and ``cfn fit`` (read back by :func:`model_from_args`)."""
    from cfn_fast.settings import DEFAULTS

    def per_kind_default(name: str) -> str:
        field = name.replace("-", "_")
        return (f"{getattr(DEFAULTS['item'], field):g} for --kind item, "
                f"{getattr(DEFAULTS['user'], field):g} for user")

    helps = {"alpha": "loss weight of masked known ratings", "beta": "loss weight of visible known ratings",
             "mask-ratio": "probability of masking a known input rating", "lr": "initial learning rate",
             "lr-decay": "lr_t = lr / (1 + t * lr_decay)", "weight-decay": "L2 weight decay on every parameter",
             "batch-size": "samples per mini-batch"}
    g = p.add_argument_group("model")
    g.add_argument("--kind", choices=("auto", "item", "user"), default="auto",
                   help="I-CFN (item), U-CFN (user) or auto: kind and centring chosen on a validation part of "
                        "the training set (up to 4 extra fits)")
    g.add_argument("--centring", choices=("sample", "bias"), default=None,
                   help="centre by each sample's mean (the paper's) or by the bias model mu + b_u + b_i "
                        "(default: sample for --kind item|user, chosen for auto)")
    g.add_argument("--hidden", type=int_in(1), nargs="+", default=[600], help="hidden layer widths")
    g.add_argument("--epochs", type=int_in(0), default=epochs, help="training epochs")
    for name in ("alpha", "beta", "mask-ratio", "lr", "lr-decay", "weight-decay", "batch-size"):
        g.add_argument(f"--{name}", type=int_in(1) if name == "batch-size" else float, default=None,
                       help=f"{helps[name]} (default: {per_kind_default(name)})")
    g.add_argument("--backend", default="auto", choices=("auto", "numpy", "cpu", "cuda"),
                   help="engine; auto = cuda when a GPU is usable, else cpu")
    g.add_argument("--no-side-info", action="store_true", help="train a plain CFN (no CFN++ side information)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and masking noise")


def model_from_args(args: argparse.Namespace) -> Any:
    """The CFN the options of :func:`add_model_options` describe, validated before any data is
    loaded; a bad value is reported under its option name (``--batch-size``, not ``batch_size``)."""
    from cfn_fast.model import CFN
    model = CFN(kind=args.kind, centring=args.centring, hidden=tuple(args.hidden), epochs=args.epochs,
                alpha=args.alpha, beta=args.beta, mask_ratio=args.mask_ratio, lr=args.lr, lr_decay=args.lr_decay,
                weight_decay=args.weight_decay, batch_size=args.batch_size, backend=args.backend,
                use_side_info=not args.no_side_info, seed=args.seed,
                verbose=min(int(getattr(args, "verbose", 0)), 1))
    try:
        model.resolved_params()
    except ValueError as exc:
        text = str(exc)
        for name in ("alpha", "beta", "mask_ratio", "lr_decay", "lr", "weight_decay", "batch_size", "hidden",
                     "epochs", "seed"):
            text = re.sub(rf"(?<![\w-]){name}(?![\w])", "--" + name.replace("_", "-"), text)
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
