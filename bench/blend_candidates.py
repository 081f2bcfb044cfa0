"""Would a new network earn its place in ``CFN(quality="best")``?  Validation figures on ML-1M, never the test part.

The training part of split seed 0 (``train_test_split(ratings, 0.1, seed=0)``, side information off, as
``bench/accuracy.py``) is split again as a blend splits it (90 % / 10 %, seed ``0 + VALIDATION_SEED_OFFSET``);
every network is trained on the 90 % and its predictions of the 10 % are cached (``--cache``).  Then ``weigh``
chooses the blend on them exactly as ``fit_blend`` does (shrinkage by cross-validation, non-negative weights, the
``MAX_MEMBERS`` largest networks and the factors with a weight, weights again) for today's ``best`` candidates
and for them plus the candidates named, and prints the validation RMSE, the cross-validated one and the weights:

    python bench/blend_candidates.py baseline                             # today's best candidates (about 3 min)
    python bench/blend_candidates.py cache drop '{"dropout": 0.2, "epochs": 40, "seed": 3}'    # an I-CFN variant
    python bench/blend_candidates.py stacked deep '{"hidden": [700, 500], "seed": 4, "authors": true}'
    python bench/blend_candidates.py weigh drop,deep

``cache`` trains ``CFN("item")`` with the blend's member settings changed by the JSON; ``stacked`` a
``StackedCFN(kind="item")`` (``"authors": true``: the authors' ML-1M pre-training and fine-tuning settings).
Results: bench/README.md, "Blend candidates".
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cfn_fast import CFN, StackedCFN, train_test_split
from cfn_fast.data.movielens import load_movielens
from cfn_fast.metrics import rmse
from cfn_fast.preprocessing import BiasModel
from cfn_fast.settings import AUTHORS_ML1M_FINETUNE, AUTHORS_ML1M_PRETRAIN
from cfn_fast.training.blending import FACTOR_CANDIDATES, MAX_MEMBERS, blend_weights, candidate_params, choose_shrinkage
from cfn_fast.training.factors import Factors
from cfn_fast.training.selection import VALIDATION_FRACTION, VALIDATION_SEED_OFFSET

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-1m"


def member_name(member: dict) -> str:
    return f"{member['kind']}_{member['centring']}_h{'x'.join(map(str, member['hidden']))}_e{member['epochs']}" \
           f"_s{member['seed']}" + ("_pretrained" if "pretrain" in member else "") + \
           (f"_dropout{member['dropout']:g}" if member.get("dropout") else "")


class Experiment:
    def __init__(self, data: Path, cache: Path, backend: str) -> None:
        ratings = load_movielens(data, side_info=False)
        train, _ = train_test_split(ratings, 0.1, seed=0)
        self.part, self.valid = train_test_split(train, VALIDATION_FRACTION, seed=0 + VALIDATION_SEED_OFFSET)
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self.params = CFN(quality="best", backend=backend).get_params()
        # today's candidates: the networks before the two this study added, and the factor members
        self.networks = [member_name(m) for m in candidate_params(self.params, "best")
                         if "pretrain" not in m and not m.get("dropout")]
        self.factors = [f"factors_r{rank}_reg{reg:g}" for rank, reg in FACTOR_CANDIDATES["best"]]

    def save(self, name: str, predicted: np.ndarray, seconds: float) -> None:
        np.save(self.cache / f"{name}.npy", predicted)
        score = rmse(predicted, self.valid.rating)
        (self.cache / f"{name}.json").write_text(json.dumps({"rmse": score, "seconds": seconds}))
        print(f"{name}: validation RMSE {score:.4f} ({seconds:.1f} s)", flush=True)

    def fit(self, name: str, make) -> None:
        started = time.perf_counter()
        model = make().fit(self.part)
        self.save(name, model.predict_indices(self.valid.user, self.valid.item), time.perf_counter() - started)

    def baseline(self) -> None:
        for member in candidate_params(self.params, "best"):
            name = member_name(member)
            if name in self.networks and not (self.cache / f"{name}.npy").exists():
                self.fit(name, lambda: CFN(**member))
        bias = BiasModel.fit(self.part)
        np.save(self.cache / "bias.npy", bias.predict(self.valid.user, self.valid.item))
        for (rank, reg), name in zip(FACTOR_CANDIDATES["best"], self.factors):
            started = time.perf_counter()
            factors = Factors.fit(self.part, rank, reg, seed=0)
            self.save(name, factors.predict(bias, self.valid.user, self.valid.item), time.perf_counter() - started)

    def weigh(self, extra: list[str]) -> None:
        base = np.load(self.cache / "bias.npy")
        residual = self.valid.rating.astype(np.float64) - base
        for label, networks in (("today's best", self.networks), (f"+ {', '.join(extra)}", self.networks + extra)):
            names = networks + self.factors
            deltas = np.stack([np.load(self.cache / f"{n}.npy") for n in names], axis=1) - base[:, None]
            shrinkage, cv = choose_shrinkage(deltas, residual, seed=0)
            weights = blend_weights(deltas, residual, shrinkage)
            n = len(networks)
            ranked = [k for k in np.argsort(-weights[:n], kind="stable") if weights[k] > 0][:MAX_MEMBERS["best"]]
            keep = sorted(int(k) for k in ranked) + [k for k in range(n, len(names)) if weights[k] > 0]
            weights = blend_weights(deltas[:, keep], residual, shrinkage)
            predicted = np.clip(base + deltas[:, keep] @ weights, 1, 5)
            print(f"{label}: validation RMSE {rmse(predicted, self.valid.rating):.5f}, cross-validated "
                  f"{cv[str(shrinkage)]:.5f} (shrinkage {shrinkage})")
            print("   " + ", ".join(f"{names[k]} x{w:.3f}" for k, w in zip(keep, weights)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("baseline", "cache", "stacked", "weigh"))
    parser.add_argument("name", nargs="?", default="")
    parser.add_argument("settings", nargs="?", default="{}")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cfn_blend_candidates"))
    parser.add_argument("--backend", default="cpu")
    args = parser.parse_args()
    run = Experiment(Path(args.data), Path(args.cache), args.backend)
    settings = json.loads(args.settings)
    if args.what == "baseline":
        run.baseline()
    elif args.what == "cache":
        member = {**run.params, "kind": "item", "centring": "sample", "quality": "default", **settings}
        run.fit(args.name, lambda: CFN(**member))
    elif args.what == "stacked":
        if settings.pop("authors", False):
            settings = {**AUTHORS_ML1M_FINETUNE, "pretrain": AUTHORS_ML1M_PRETRAIN, **settings}
        run.fit(args.name, lambda: StackedCFN(kind="item", backend=args.backend, **settings))
    else:
        run.weigh([name for name in args.name.split(",") if name])


if __name__ == "__main__":
    main()
