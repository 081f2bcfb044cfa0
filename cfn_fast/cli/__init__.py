"""The ``cfn`` command line: ``demo``, ``fit``, ``eval``, ``predict`` (and more subcommands).

Every subcommand accepts ``--json`` to print one machine-readable result object on stdout.
Errors print one line on stderr (and, with ``--json``, one JSON error object on stdout) and exit
with status 2 (bad input), 1 (other failures) or 130 (interrupted); see :mod:`cfn_fast.cli.errors`.

Layout: :mod:`.common` (the registry, parser class and option helpers every subcommand shares),
:mod:`.errors` (how a failure is reported), :mod:`.files` (checks of input and output files), and
one module per group of subcommands, each registering its commands with :func:`.common.command`:
:mod:`.product` (demo, fit, eval, predict, recommend, fold-in), :mod:`.export`, :mod:`.bench`
(bench paper, bench suite) and :mod:`.tune`.  Optional packages (onnx, matplotlib, ray, optuna,
cupy) are imported only when their command runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import bench, export, product, tune
from .common import COMMANDS, OneLineParser, plain
from .errors import command_name, report_failure

__all__ = ["GROUPS", "build_parser", "main", "run"]

#: The modules of subcommands, in the order ``cfn --help`` lists their commands.
GROUPS = (product, export, bench, tune)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cfn", description="Collaborative Filtering Networks (CFN / CFN++)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="progress bar and the library's informational messages on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        for registered in COMMANDS.values():
            if registered.group == group.__name__:
                registered.add_parser(sub)
    return parser


def run(argv: list[str]) -> dict:
    """Parse ``argv`` and run the command; errors propagate as exceptions (``main`` reports them)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return COMMANDS[args.command].run(args)


def main(argv: list[str] | None = None) -> int:
    """The ``cfn`` entry point: every failure is one line (see :mod:`cfn_fast.cli.errors`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    json_mode = "--json" in argv
    try:
        result = run(argv)
        if json_mode:
            print(json.dumps(result, default=plain), flush=True)
    except SystemExit:  # --help
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every failure into one line
        return report_failure(exc, command_name(argv), json_mode)
    return 0
