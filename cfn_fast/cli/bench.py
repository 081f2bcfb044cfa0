"""``cfn bench``: ``cfn bench paper`` (the paper's tables and figures by one command, :mod:`cfn_fast.tools.paper`)
and ``cfn bench suite`` (the pytest-benchmark suite installed with the package, :mod:`cfn_fast.tools.benchsuite`)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from cfn_fast.tools import benchsuite

from .common import command, int_in
from .files import check_writable_outputs

__all__ = ["DEFAULT_DATA_DIR", "bench", "run_paper_from_args", "run_suite_from_args"]

#: The data folder used when ``--data-dir`` is not given (and exists): the team's shared layout.
DEFAULT_DATA_DIR = "../shared/data"


def _bench_parser(sub: Any) -> None:
    """Add ``bench`` with its ``paper`` and ``suite`` subcommands to the ``cfn`` parser."""
    group = sub.add_parser("bench", help="benchmarks: the paper's tables and figures")
    bench_sub = group.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    p = bench_sub.add_parser(
        "paper", help="reproduce Tables 1-3 and Figures 3-5 of Strub et al. 2016 on the data found",
        description="Runs what the data folder allows (ML-100K, ML-1M; ML-10M/20M/Douban when their original files "
                    "are present) and writes report.md, results.json and PNG figures into --out.")
    p.add_argument("--data-dir", default=None,
                   help="folder with ml-100k/, ml-1m/ (ratings.npz + users.csv + items.csv) or original MovieLens "
                        f"folders; a named folder must exist (default: {DEFAULT_DATA_DIR} when it exists, else "
                        "synthetic data)")
    p.add_argument("--out", required=True, help="output folder (report.md, results.json, *.png)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: ML-100K if present else synthetic, 1 split, tiny models, few epochs")
    p.add_argument("--seeds", type=int_in(1, 1000), default=5, help="number of 90/10 splits (seeds 1..N) for Table 1")
    p.add_argument("--extra-seeds", type=int_in(1, 1000), default=2,
                   help="splits for Table 2 (50/50) and the linear ablation (seeds 1..K)")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "cpu", "cuda"), help="CFN backend")
    p.add_argument("--from-json", action="store_true",
                   help="use stored hyper-parameters (hyperparams_<dataset>.json) instead of searching")
    p.add_argument("--search-only", action="store_true",
                   help="run the validation search, store hyperparams_<dataset>.json and stop")
    p.add_argument("--search-methods", nargs="+", default=None,
                   help="re-search only these methods, keeping the other entries of the stored JSON")
    p.add_argument("--hyperparams-dir", default=None,
                   help="where hyperparams_<dataset>.json live (default: bench/paper; --quick: the output folder)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="restrict to these data sets (ml-100k ml-1m ml-10m ml-20m douban synthetic)")
    p.add_argument("--parts", nargs="+", default=None,
                   help="table1 table2 table3 fig3 fig4 fig5 linear (default: all)")
    p.add_argument("--search-trials", type=int_in(1), default=None, help="random-search trials per method")
    p.add_argument("--search-seed", type=int_in(0), default=0, help="seed of the random search")
    p.add_argument("--no-track-epochs", dest="track_epochs", action="store_false",
                   help="score the test set after every CFN epoch on split 1 only (Figure 5) instead of on every "
                        "split (which adds the paper-protocol 'best epoch on test' column)")
    p.add_argument("--table3-budget", type=_positive_seconds, default=None,
                   help="seconds per Table 3 cell before extrapolating (default 300; quick 60)")
    p.add_argument("--table3-datasets", nargs="+", default=None,
                   help="Table 3 rows (ml-1m ml-10m ml-20m; synthetic shape-matched stand-ins where absent)")
    p.add_argument("--fig4-methods", nargs="+", default=None, help="methods of Figure 4")
    p.add_argument("--synthetic", type=int_in(1), nargs=3, metavar=("USERS", "ITEMS", "RATINGS"), default=None,
                   help="shape of the synthetic stand-in used when no data set is found")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the summary, or {\"error\": ..., \"type\": ...})")

    # ``cfn bench suite`` under the ``cfn bench`` subcommands
    p = bench_sub.add_parser(
        "suite", help="the pytest-benchmark suite: micro and macro cases, compare runs (needs cfn_fast[bench])",
        description="Runs the benchmark suite installed with cfn_fast (pytest-benchmark; pip install "
                    "'cfn_fast[bench]') against this very cfn_fast, prints a table of the cases and, with --compare, "
                    "compares them with a stored run. pytest's progress goes to stderr.")
    p.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes)")
    p.add_argument("--slow", action="store_true", help="also the ML-10M shape on the cpu backend")
    p.add_argument("--smoke", action="store_true",
                   help="tiny synthetic data and one round per case: checks that every case runs here (seconds; "
                        "the figures mean nothing)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the cases, skipped cases and, with --compare, the "
                        "comparison; or {\"error\": ..., \"type\": ...}) instead of the tables")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write pytest-benchmark's JSON here (a baseline for --compare; `pytest-benchmark compare` "
                        "reads it); refused when FILE exists (unless --force) or is an input of the run")
    p.add_argument("--force", action="store_true",
                   help="let --out and --save-baseline replace an existing file (never the --compare baseline, nor "
                        "for --out a file of the package)")
    p.add_argument("--compare", metavar="FILE|auto", default=None,
                   help="baseline: pytest-benchmark JSON of an earlier run with the same --timer, checked before the "
                        "run; exit status 1 on a regression. 'auto': the stored baseline of this machine (same CPU "
                        "model, logical CPUs, SIMD path, --timer and --quick/--smoke mode) in --baseline-dir; when "
                        "none matches, says so and runs without comparing (a file named auto: ./auto)")
    p.add_argument("--save-baseline", action="store_true",
                   help="store this run as the baseline of this machine in --baseline-dir, under a name made of "
                        "its key; refused before the run when this machine has one there (unless --force)")
    p.add_argument("--baseline-dir", metavar="DIR", default=None,
                   help="folder of the stored baselines for --compare auto and --save-baseline (default: the "
                        "package's, cfn_fast/tools/benchsuite/baselines)")
    p.add_argument("--threshold", type=float, default=benchsuite.DEFAULT_THRESHOLD,
                   help=f"relative slow-down that counts as a regression (default {benchsuite.DEFAULT_THRESHOLD})")
    p.add_argument("--confirm", type=int_in(0, 100), default=2, help="re-runs of suspect cases before they count")
    p.add_argument("--timer", choices=sorted(benchsuite.TIMERS), default="wall",
                   help="wall (perf_counter; throughput figures) or cpu (process_time; robust on a shared machine)")
    p.add_argument("-k", dest="select", default=None, help="pytest -k expression selecting cases")
    p.add_argument("--quiet", action="store_true", help="no pytest progress on stderr")


@command("bench", _bench_parser)
def bench(args: argparse.Namespace) -> dict:
    if args.bench_command == "suite":
        return run_suite_from_args(args)
    if args.bench_command != "paper":  # pragma: no cover - argparse enforces the choice
        raise ValueError(f"unknown bench command {args.bench_command!r}")
    return run_paper_from_args(args)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def run_paper_from_args(args: argparse.Namespace) -> dict:
    from cfn_fast.tools.paper.datasets import SYNTHETIC_QUICK
    from cfn_fast.tools.paper.options import DEFAULT_FIG4, PARTS, PaperOptions
    from cfn_fast.tools.paper.runner import run_paper

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    data_dir = Path(args.data_dir) if args.data_dir is not None else \
        (Path(DEFAULT_DATA_DIR) if Path(DEFAULT_DATA_DIR).is_dir() else None)
    if args.data_dir is None:
        log(f"data: --data-dir not given, using {data_dir}" if data_dir else
            f"data: --data-dir not given and {DEFAULT_DATA_DIR} does not exist: synthetic data only")
    opts = PaperOptions(
        out=Path(args.out), data_dir=data_dir, quick=args.quick,
        n_seeds=args.seeds, extra_seeds=args.extra_seeds, backend=args.backend, from_json=args.from_json,
        search_only=args.search_only, search_methods=tuple(args.search_methods) if args.search_methods else None,
        hyperparams_dir=Path(args.hyperparams_dir) if args.hyperparams_dir else None,
        datasets=tuple(args.datasets) if args.datasets else None,
        parts=tuple(args.parts) if args.parts else PARTS, search_trials=args.search_trials,
        search_seed=args.search_seed, track_epochs=args.track_epochs, table3_budget=args.table3_budget,
        table3_datasets=tuple(args.table3_datasets) if args.table3_datasets else ("ml-1m", "ml-10m", "ml-20m"),
        fig4_methods=tuple(args.fig4_methods) if args.fig4_methods else DEFAULT_FIG4,
        synthetic_shape=tuple(args.synthetic) if args.synthetic else SYNTHETIC_QUICK,
        command="cfn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"]
        else "cfn bench paper", log=log)
    result = run_paper(opts)
    if not args.json:
        print(f"report: {result['report']} ({result['seconds']:.0f}s)")
        for key, rows in result["table1"].items():
            for name, row in rows.items():
                if row["mean"] is not None:
                    ci = "" if row["ci"] is None else f" ± {row['ci']:.4f}"
                    print(f"  {key:<10} {name:<12} {row['mean']:.4f}{ci}")
    return result


def run_suite_from_args(args: argparse.Namespace) -> dict:
    compared = None if args.compare == benchsuite.AUTO else args.compare    # auto: checked once it names a file
    check_writable_outputs({"--out": args.out}, {"--compare": compared})
    result = benchsuite.run_suite(quick=args.quick, slow=args.slow, smoke=args.smoke, out=args.out, force=args.force,
                                  baseline=args.compare, save_baseline=args.save_baseline,
                                  baseline_dir=args.baseline_dir, threshold=args.threshold, confirm=args.confirm,
                                  select=args.select, progress=not args.quiet, echo=not args.json, timer=args.timer)
    if result.get("regressions"):
        raise benchsuite.BenchmarkRegression(
            f"{len(result['regressions'])} case(s) slower than the baseline by more than "
            f"{100 * args.threshold:.0f}%: {', '.join(result['regressions'])}", result)
    return result
