"""Checks ``run_paper`` makes before any long work: named folders exist, requested data sets are
there, the output does not overwrite an input, and the optional packages the run needs are
installed (naming the extra to install)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from cfn_fast.fileio import check_outputs_not_inputs

from . import datasets as dsets
from .options import PaperOptions

__all__ = ["FIGURE_PARTS", "check_options"]

#: Parts that draw a PNG figure with matplotlib.
FIGURE_PARTS = ("table1", "fig3", "fig4", "fig5")


def check_options(opts: PaperOptions) -> None:
    """Raise on anything that would otherwise fail (or silently change the run) later."""
    if opts.data_dir is not None and not Path(opts.data_dir).is_dir():
        what = "is not a folder" if Path(opts.data_dir).exists() else "does not exist"
        raise FileNotFoundError(f"--data-dir {opts.data_dir} {what}")
    if opts.from_json and opts.hyperparams_dir is not None and not Path(opts.hyperparams_dir).is_dir():
        raise FileNotFoundError(f"--hyperparams-dir {opts.hyperparams_dir} does not exist (--from-json reads "
                                f"hyperparams_<dataset>.json from it)")
    if opts.datasets:
        found = dsets.discover(opts.data_dir)
        known = {spec.key for spec in dsets.KNOWN}
        absent = [d for d in opts.datasets if d in known and d not in found]
        if absent:
            where = opts.data_dir if opts.data_dir is not None else "(no --data-dir)"
            raise FileNotFoundError(f"--datasets {' '.join(absent)}: not found under {where} (looked for "
                                    + "; ".join(f"{'/'.join(s.folders)} with {' or '.join(s.files)}"
                                                for s in dsets.KNOWN if s.key in absent) + ")")
    check_outputs_not_inputs({"--out": opts.out}, {"--data-dir": opts.data_dir})
    if opts.out is not None and Path(opts.out).exists() and not Path(opts.out).is_dir():
        raise NotADirectoryError(f"--out {opts.out} is a file, not a folder")
    figure_parts = [p for p in opts.parts if p in FIGURE_PARTS]
    if figure_parts and not opts.search_only and importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            f"cfn bench paper draws its figures ({', '.join(figure_parts)}) with matplotlib, which is not "
            f"installed: pip install 'cfn_fast[bench]' (or pip install matplotlib)", name="matplotlib")
