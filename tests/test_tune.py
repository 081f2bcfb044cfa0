"""``cfn tune`` / :func:`cfn_fast.tools.tune.tune_cfn`: a tiny search on Ray (skipped without the ``tune`` extra),
and the package without Ray."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from cfn_fast.data import synthetic_ratings, train_test_split

SHAPE = (400, 250, 12_000)                  # cfn bench paper --quick's synthetic set: same name, same data
DATASET = "synthetic-400x250"
EPOCHS = 4


def test_package_and_cli_work_without_ray(tmp_path):
    """With Ray and Optuna unimportable, everything imports, ``cfn tune --help`` works and a search
    fails with one line naming the extra to install."""
    ratings = tmp_path / "r.csv"
    ratings.write_text("user,item,rating\n" + "".join(f"{u},{i},{1 + (u + i) % 5}\n"
                                                       for u in range(12) for i in range(8)))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None                      # makes `import ray` raise ImportError
        sys.modules["optuna"] = None
        import cfn_fast, cfn_fast.tools.tune, cfn_fast.cli
        from cfn_fast.cli import main
        code = main(["tune", "--ratings", {str(ratings)!r}, "--trials", "2", "--epochs", "1", "--hidden", "4",
                     "--out", {str(tmp_path / "hyperparams_r.json")!r}])
        assert code == 1, code
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules if sys.modules[m] is not None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'pip install "cfn_fast[tune]"' in done.stderr and "cfn tune: error:" in done.stderr
    assert not (tmp_path / "hyperparams_r.json").exists()


def test_cli_help_lists_the_options():
    from cfn_fast.cli import build_parser
    text = build_parser()._subparsers._group_actions[0].choices["tune"].format_help()
    for option in ("--ratings", "--kind", "--trials", "--algo", "--address", "--cpus-per-trial", "--gpus-per-trial",
                   "--out"):
        assert option in text


def test_auto_kind_searches_both_kinds_starting_from_their_defaults():
    pytest.importorskip("ray.tune", reason="the 'tune' extra (ray[tune]) is not installed")
    from cfn_fast.settings import DEFAULTS
    from cfn_fast.tools.tune.space import first_points, tune_space
    points = first_points(("item", "user"))
    for kind in ("item", "user"):
        d = DEFAULTS[kind]
        assert {"kind": kind, "lr": d.lr, "lr_decay": d.lr_decay, "weight_decay": d.weight_decay, "alpha": d.alpha,
                "beta": d.beta, "mask_ratio": d.mask_ratio} in points
    assert len(points) == len({tuple(sorted(p.items())) for p in points})      # each tried once
    space = tune_space(("item", "user"))
    assert set(space) == {"kind", "lr", "lr_decay", "weight_decay", "alpha", "beta", "mask_ratio"}
    assert set(tune_space(("item",))) == set(space) - {"kind"}


@pytest.mark.parametrize("bad, message", [
    ({"algo": "grid"}, "algo must be one of random, nsga2, pbt"), ({"kind": "both"}, "kind must be"),
    ({"trials": 0}, "trials must be an integer >= 1"), ({"algo": "pbt", "trials": 1}, "pbt needs a population"),
    ({"gpus_per_trial": 1.5}, "gpus_per_trial must be"), ({"cpus_per_trial": 0}, "cpus_per_trial must be > 0")])
def test_bad_arguments_are_refused_before_ray_starts(tmp_path, bad, message):
    from cfn_fast.tools.tune import tune_cfn
    with pytest.raises(ValueError, match=message):
        tune_cfn(synthetic_ratings(30, 20, 200, seed=0), out=tmp_path / "h.json", **bad)


def test_an_existing_file_that_is_not_a_result_is_not_overwritten(tmp_path):
    from cfn_fast.tools.tune import tune_cfn
    precious = tmp_path / "hyperparams_x.json"
    precious.write_text("my notes, not JSON")
    with pytest.raises(ValueError, match="exists and is not a hyperparams JSON"):
        tune_cfn(synthetic_ratings(30, 20, 200, seed=0), out=precious)
    assert precious.read_text() == "my notes, not JSON"


# ----------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded Ray (2 CPUs) for every search of this module; tune_cfn joins a running Ray."""
    ray = pytest.importorskip("ray", reason="the 'tune' extra (ray[tune]) is not installed")
    pytest.importorskip("ray.tune", reason="the 'tune' extra (ray[tune]) is not installed")
    pytest.importorskip("optuna", reason="the 'tune' extra (optuna) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             _system_config={"worker_niceness": 0})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def killed_search(ray_cluster, tmp_path_factory):
    """A 4-trial random search (2 CPUs) in which the worker of the first trial reaching epoch 2 is
    SIGKILLed once; max_failures lets it resume from its epoch-1 checkpoint."""
    from cfn_fast.tools.tune import KillWorkerOnce, tune_cfn
    folder = tmp_path_factory.mktemp("tune")
    ratings = synthetic_ratings(*SHAPE, seed=0)
    marker = folder / "killed.txt"
    start = time.perf_counter()
    store = tune_cfn(ratings, out=folder / f"hyperparams_{DATASET}.json", kind="item", trials=4, algo="random",
                     num_cpus=2, hidden=(8,), epochs=EPOCHS, max_failures=2,
                     epoch_hook=KillWorkerOnce(str(marker), epoch=2), progress=False, log=lambda s: None)
    return {"store": store, "folder": folder, "marker": marker, "ratings": ratings,
            "seconds": time.perf_counter() - start}


def test_search_survives_a_killed_worker(killed_search):
    store, marker = killed_search["store"], killed_search["marker"]
    assert marker.exists() and "killed pid" in marker.read_text()
    trials = store["methods"]["I-CFN"]["trials"]
    assert len(trials) == 4 and store["tune"]["trials"] == 4
    assert all(t["validation_rmse"] is not None and t["epochs"] == EPOCHS for t in trials)
    retried = [t for t in trials if t["restarts"]]
    assert len(retried) == 1 and retried[0]["restarts"] == 1
    assert retried[0]["resumed_from_epoch"] == 1             # from its checkpoint, not from scratch
    killed_pid = int(marker.read_text().split()[2])
    assert retried[0]["pid"] != killed_pid                   # finished by another worker process
    assert store["tune"]["retried_trials"] == 1
    assert all(t["threads"] == 1 for t in trials)             # OpenMP threads follow --cpus-per-trial 1


def test_resumed_trial_equals_an_uninterrupted_one(killed_search):
    """Resuming from the epoch checkpoint loses nothing: the retried trial's final validation RMSE is that
    of a plain fit with its settings."""
    from cfn_fast import CFN
    from cfn_fast.data import train_validation_test_split
    retried = next(t for t in killed_search["store"]["methods"]["I-CFN"]["trials"] if t["restarts"])
    train, validation, _ = train_validation_test_split(killed_search["ratings"], 0.1, 0.1, seed=1)
    model = CFN("item", (8,), EPOCHS, use_side_info=False, batch_size=35, **retried["params"]).fit(train)
    assert model.score(validation) == pytest.approx(retried["validation_rmse"], rel=1e-6)


def test_result_is_the_paper_schema_with_an_honest_refit(killed_search):
    from cfn_fast import CFN
    from cfn_fast.tools.paper.search import load_store
    store = load_store(killed_search["folder"] / f"hyperparams_{DATASET}.json")
    entry = store["methods"]["I-CFN"]
    assert store["dataset"] == DATASET and store["format"] == 1
    assert entry["fixed"] == {"hidden": [8], "epochs": EPOCHS, "batch_size": 35, "backend": "cpu", "side_info": False}
    assert store["protocol"]["split_seed"] == 1 and store["protocol"]["validation_ratio"] == 0.1
    best = min(t["validation_rmse"] for t in entry["trials"])
    assert entry["validation_rmse"] == best
    defaults = {"lr": 0.07, "lr_decay": 0.3, "weight_decay": 0.04, "alpha": 1.0, "beta": 0.5, "mask_ratio": 0.25}
    assert defaults in [t["params"] for t in entry["trials"]]      # the defaults are always tried first
    train, test = train_test_split(killed_search["ratings"], 0.1, seed=1)
    refit = CFN("item", (8,), EPOCHS, use_side_info=False, batch_size=35, **entry["params"]).fit(train)
    assert entry["test_rmse"] == pytest.approx(refit.score(test), rel=1e-6)
    assert store["tune"]["chosen"] == "I-CFN" and store["tune"]["node_ids"]
    assert all(t["node_ip"] and t["node_id"] for t in entry["trials"])
    plot = killed_search["folder"] / store["tune"]["plot"]
    assert plot.suffix == ".png" and plot.stat().st_size > 1000
    assert not list(killed_search["folder"].glob(".cfn_tune_*"))   # Ray's checkpoints cleaned up


def test_cfn_bench_paper_from_json_reads_the_result(killed_search, tmp_path):
    """``cfn bench paper --from-json`` runs I-CFN with the tuned settings."""
    from cfn_fast.cli import main
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "report"
    code = main(["bench", "paper", "--quick", "--from-json", "--out", str(out),
                 "--hyperparams-dir", str(killed_search["folder"]),
                 "--data-dir", str(empty), "--datasets", "synthetic", "--parts", "fig3", "--quiet", "--json"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    settings = results["datasets"][DATASET]["methods"]["I-CFN"]["settings"]
    tuned = killed_search["store"]["methods"]["I-CFN"]["params"]
    assert {k: settings[k] for k in tuned} == tuned
    assert "read from" in results["meta"]["hyperparams"]


def test_pbt_changes_settings_during_training(ray_cluster, tmp_path):
    """PBT: the worst trials continue from a better trial's checkpoint (CFN.load) with perturbed settings
    (set_params reaching the engine); every trial completes its epochs."""
    from cfn_fast.tools.tune import tune_cfn
    store = tune_cfn(synthetic_ratings(*SHAPE, seed=0), out=tmp_path / "hyperparams_pbt.json", algo="pbt",
                     trials=4, num_cpus=2, hidden=(8,), epochs=6, pbt_interval=2, progress=False, log=lambda s: None)
    trials = store["methods"]["I-CFN"]["trials"]
    assert len(trials) == 4 and all(t["epochs"] == 6 and t["validation_rmse"] is not None for t in trials)
    changed = [t for t in trials if "schedule" in t]
    assert changed, "no trial was perturbed"
    for trial in changed:
        first, *later = trial["schedule"]
        assert all(step["params"] != first["params"] and step["from_epoch"] > 2 for step in later)
        assert trial["params"] == trial["schedule"][-1]["params"]
    assert store["tune"]["population"] == 4 and store["tune"]["complete"]


def test_cli_auto_kind_stores_one_entry_per_kind(ray_cluster, tmp_path):
    """``cfn tune --kind auto`` (joining the running Ray): both kinds tried, each kind's best stored and refitted."""
    from cfn_fast.cli import main
    ratings = tmp_path / "ratings.csv"
    data = synthetic_ratings(120, 80, 2500, seed=2)
    ratings.write_text("user,item,rating\n" + "".join(f"{u},{i},{r:g}\n" for u, i, r in
                                                       zip(data.user, data.item, data.rating)))
    out = tmp_path / "hyperparams_small.json"
    code = main(["tune", "--ratings", str(ratings), "--kind", "auto", "--trials", "3", "--algo", "random",
                 "--epochs", "2", "--hidden", "6", "--quiet", "--out", str(out), "--json"])
    assert code == 0
    store = json.loads(out.read_text())
    assert set(store["methods"]) == {"I-CFN", "U-CFN"} and store["dataset"] == "small"
    assert store["tune"]["chosen"] in ("I-CFN", "U-CFN")
    for entry in store["methods"].values():
        assert entry["test_rmse"] > 0 and entry["trials"]
