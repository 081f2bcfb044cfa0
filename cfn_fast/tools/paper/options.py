"""What ``cfn bench paper`` asks of :func:`cfn_fast.tools.paper.runner.run_paper`: the parts and their options."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import datasets as dsets

__all__ = ["DEFAULT_FIG4", "PARTS", "PaperOptions"]

PARTS = ("table1", "table2", "table3", "fig3", "fig4", "fig5", "linear")
DEFAULT_FIG4 = ("I-CFN", "U-CFN", "I-AutoRec", "ALS-WR", "SVDFeature")


@dataclass
class PaperOptions:
    out: Path
    data_dir: Path | None = None
    quick: bool = False
    n_seeds: int = 5
    extra_seeds: int = 2
    backend: str = "auto"
    from_json: bool = False
    search_only: bool = False
    search_methods: tuple[str, ...] | None = None
    hyperparams_dir: Path | None = None
    datasets: tuple[str, ...] | None = None
    parts: tuple[str, ...] = PARTS
    search_trials: int | None = None
    search_seed: int = 0
    track_epochs: bool = True
    table3_budget: float | None = None
    table3_datasets: tuple[str, ...] = ("ml-1m", "ml-10m", "ml-20m")
    fig4_methods: tuple[str, ...] = DEFAULT_FIG4
    synthetic_shape: tuple[int, int, int] = dsets.SYNTHETIC_QUICK
    command: str = "cfn bench paper"
    log: Callable[[str], None] = print
