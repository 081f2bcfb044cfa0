"""bench/paper/icfn_probe.py (the ML-1M I-CFN gap probe) runs end to end on a tiny synthetic set."""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cfn_fast.data.split import train_test_split, train_validation_test_split
from cfn_fast.data.synthetic import synthetic_ratings

PROBE = Path(__file__).resolve().parents[1] / "bench" / "paper" / "icfn_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("icfn_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STORED = {"lr": 0.07, "lr_decay": 0.3, "weight_decay": 0.04, "alpha": 1.0, "beta": 0.5, "mask_ratio": 0.25}


def test_torch_2015_initialisation_scales_the_first_layer_by_fan_out(probe):
    layers = probe.torch_2015_sparse_init(400, (25,), seed=0)
    first, second = layers
    assert first.weight.shape == (25, 400)
    assert np.abs(first.weight).max() <= 1 / math.sqrt(25)
    assert np.abs(first.weight).max() > 1 / math.sqrt(400)      # wider than the fan-in bound
    assert 0 < np.abs(first.bias).max() <= 1e-6 / math.sqrt(25)
    assert np.abs(second.weight).max() <= 1 / math.sqrt(25)     # other layers keep nn.Linear's init


def test_probe_reports_every_variant_with_finite_rmse(probe):
    ratings = synthetic_ratings(60, 40, 1200, seed=3)
    search, validation, test = train_validation_test_split(ratings, 0.1, 0.1, seed=1)
    full_train, _ = train_test_split(ratings, 0.1, seed=1)
    logged: list[str] = []
    report = probe.run_probe(search, validation, full_train, test, STORED, n_seeds=2, log=logged.append)
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == len(probe.variants(STORED))
    assert rows[0].startswith("| 1 × 600, stored settings")
    for row in rows:
        val, tst = (float(x) for x in re.findall(r"\| (\d+\.\d{4}) ", row)[:2])
        assert 0.0 < val < 4.0 and 0.0 < tst < 4.0
    assert re.search(r"seeds 0\.\.1\): \d\.\d{4} \d\.\d{4} \(sd \d\.\d{4}\)", report)
    assert logged[-1] in report
