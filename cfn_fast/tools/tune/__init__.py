"""Hyper-parameter search for CFN on Ray Tune: ``cfn tune`` and :func:`tune_cfn`.

Ray starts inside the process by default (a laptop needs nothing else) or joins an existing
cluster by address.  Three algorithms: ``random``, ``nsga2`` (the paper chose its settings
with a genetic algorithm: Optuna's NSGA-II sampler through Ray Tune's Optuna integration) and
``pbt`` (population-based training through :meth:`CFN.partial_fit` and checkpoints in the
model's own ``.npz`` format).  Trials checkpoint every epoch; a trial whose worker dies is
retried from its last checkpoint.

The protocol is the paper bench's (:mod:`cfn_fast.tools.paper.search`): the validation part is carved
from the training part of a split, the chosen settings are refitted on the whole training part
and scored once on the test part, and the result is stored in the schema of
``bench/paper/hyperparams_<dataset>.json`` so ``cfn bench paper --from-json`` reads it.

Ray and Optuna are an optional extra (``pip install "cfn_fast[tune]"``); importing this package
imports neither (nor the search code) until a search starts.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ALGORITHMS", "DivergeOnce", "KillWorkerOnce", "SearchInterrupted", "TuneExtraMissing", "tune_cfn"]

_WHERE = {"tune_cfn": ".search", "ALGORITHMS": ".search", "TuneExtraMissing": ".extra", "KillWorkerOnce": ".faults",
          "DivergeOnce": ".faults", "SearchInterrupted": ".results"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
