"""``cfn tune`` / :func:`cfn_fast.tools.tune.tune_cfn`: a tiny search on Ray (skipped without the ``tune`` extra),
and the package without Ray."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

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
    ({"gpus_per_trial": 1.5}, "gpus_per_trial must be"), ({"cpus_per_trial": 0}, "cpus_per_trial must be a finite"),
    ({"hidden": (0,)}, "hidden must be"), ({"batch_size": -3}, "batch_size must be a positive integer"),
    ({"num_cpus": 1, "cpus_per_trial": 2}, "cpus_per_trial 2 exceeds"), ({"test_ratio": 1.0}, "test_ratio must be"),
    ({"backend": "tpu"}, "backend must be one of"), ({"address": "nowhere"}, "address must be 'auto', HOST:PORT")])
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


# ----------------------------------------------------------------------------- on Ray (conftest's ray_cluster)
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


class _CrashLast:
    """Epoch hook: the last of ``of`` trials to start epoch ``epoch`` waits ``delay`` seconds (the others report
    that epoch and wait at PBT's perturbation point meanwhile), then fails with an error no retry fixes: a trial
    ending between two perturbation points, with the rest of the population waiting for it."""

    def __init__(self, folder: Path, epoch: int, of: int, delay: float) -> None:
        self.folder, self.epoch, self.of, self.delay = str(folder), epoch, of, delay

    def __call__(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        for rank in range(1, self.of + 1):
            try:
                os.close(os.open(os.path.join(self.folder, f"started-{epoch}.{rank}"),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            if rank == self.of:
                time.sleep(self.delay)
                raise RuntimeError("crash drill: a trial failing between two perturbation points")
            return


class _Hooks:
    def __init__(self, *hooks) -> None:
        self.hooks = hooks

    def __call__(self, epoch: int) -> None:
        for hook in self.hooks:
            hook(epoch)


def _within(seconds: float, search, what: str):
    """Run ``search()`` in a thread: a search that deadlocks fails the test instead of hanging the suite."""
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(result=search()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert "result" in done, f"{what} did not finish within {seconds:.0f} s (deadlocked?)"
    return done["result"]


@pytest.mark.smoke
def test_pbt_changes_settings_and_never_strands_its_population(ray_cluster, tmp_path):
    """PBT: the worst trials continue from a better trial's checkpoint (CFN.load) with perturbed settings
    (set_params reaching the engine).  A trial that diverges in epoch 3 reports every remaining epoch and is
    replaced by a copy of a better one at the next perturbation point; a trial that fails for good between two
    perturbation points, while the others wait there, does not leave them waiting forever (Ray 2.60's synchronous
    PBT did: 3 trials paused at iteration 4, the 4th ended at iteration 3)."""
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers need not import the tests
    from cfn_fast.tools.tune import DivergeOnce, tune_cfn
    hook = _Hooks(DivergeOnce(str(tmp_path / "diverged.txt"), epoch=3), _CrashLast(tmp_path, epoch=4, of=3, delay=4))
    store = _within(240, lambda: tune_cfn(
        synthetic_ratings(*SHAPE, seed=0), out=tmp_path / "hyperparams_pbt.json", algo="pbt", trials=4, num_cpus=2,
        hidden=(8,), epochs=6, pbt_interval=2, max_failures=0, epoch_hook=hook, progress=False,
        log=lambda s: None), "the PBT search")
    assert (tmp_path / "diverged.txt").exists()
    trials = store["methods"]["I-CFN"]["trials"]
    assert len(trials) == 4
    failed = [t for t in trials if t.get("error")]
    # With 2 CPUs for 4 trials the schedule varies: usually the third trial to start epoch 4 runs the crash drill
    # (it fails for good while the others wait); in some schedules a trial resumed past epoch 4 never starts it,
    # and one trial ends early (recorded as failed, the search still complete, never reported as interrupted).
    if (tmp_path / "started-4.3").exists():
        assert len(failed) == 1 and "retries" in failed[0]["error"], failed
    else:
        assert len(failed) == 1 and "ended after epoch" in failed[0]["error"], failed
    finished = [t for t in trials if t not in failed]
    assert all(t["epochs"] == 6 and t["validation_rmse"] is not None for t in finished), finished
    changed = [t for t in finished if "schedule" in t]
    assert changed, "no trial was perturbed"
    for trial in changed:
        first, *later = trial["schedule"]
        assert all(step["params"] != first["params"] and step["from_epoch"] > 2 for step in later)
        assert trial["params"] == trial["schedule"][-1]["params"]
    assert store["tune"]["population"] == 4 and store["tune"]["complete"]


@pytest.mark.parametrize("interval", [1, 2, 4, 7])
def test_pbt_keeps_every_checkpoint_a_copy_may_need(interval):
    """A PBT trial copies another's checkpoint of the perturbation point after that one went on (up to the next
    point): with 4 kept and a 4-epoch interval, 3 of 12 trials (2 CPUs, 12 epochs) failed with Ray's "checkpoint
    ... does not exist on storage anymore"."""
    from cfn_fast.tools.tune.search import checkpoints_kept
    assert checkpoints_kept("pbt", interval) >= interval + 2
    assert checkpoints_kept("random", interval) == checkpoints_kept("nsga2", interval) == 2


@pytest.mark.smoke
def test_nsga2_search_end_to_end(ray_cluster, tmp_path):
    """The default algorithm runs a whole search: Optuna's NSGA-II through Ray Tune (which pickles the searcher;
    Optuna 5.1's sampler holds a lock), generation 0 then bred generations."""
    from cfn_fast.tools.tune import tune_cfn
    store = _within(400, lambda: tune_cfn(
        synthetic_ratings(120, 80, 2500, seed=3), out=tmp_path / "hyperparams_nsga2.json", trials=6, population=2,
        hidden=(6,), epochs=2, progress=False, log=lambda s: None), "the NSGA-II search")
    assert store["tune"]["algo"] == "nsga2" and store["tune"]["population"] == 2 and store["tune"]["complete"]
    assert "optuna" in store["tune"]["versions"]
    trials = store["methods"]["I-CFN"]["trials"]
    assert len(trials) == 6 and all(t["validation_rmse"] is not None for t in trials)
    assert len({tuple(sorted(t["params"].items())) for t in trials}) == 6      # every trial its own settings
    assert store["methods"]["I-CFN"]["test_rmse"] > 0


def test_nsga2_sampler_survives_pickling():
    """What Ray does to the searcher: cloudpickle (the Tuner) and pickle (the searcher's saved state)."""
    optuna = pytest.importorskip("optuna", reason="the 'tune' extra (optuna) is not installed")
    cloudpickle = pytest.importorskip("ray.cloudpickle", reason="the 'tune' extra (ray[tune]) is not installed")
    pytest.importorskip("ray.tune", reason="the 'tune' extra (ray[tune]) is not installed")
    from ray.tune.search.optuna import OptunaSearch

    from cfn_fast.tools.tune.sampler import PicklableNSGAIISampler
    sampler = PicklableNSGAIISampler(population_size=3, seed=7)
    search = OptunaSearch(sampler=sampler, space={"lr": optuna.distributions.FloatDistribution(0.02, 0.15)},
                          metric="validation_rmse", mode="min")
    copy = pickle.loads(pickle.dumps(dict(vars(search))))["_sampler"]
    again = cloudpickle.loads(cloudpickle.dumps(search))
    for clone in (copy, pickle.loads(pickle.dumps(sampler)), again._sampler):
        assert isinstance(clone, PicklableNSGAIISampler)
        study = optuna.create_study(sampler=clone)   # each copy samples (its re-created lock included)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=4)
        assert len(study.trials) == 4


@pytest.mark.smoke
def test_cli_auto_kind_stores_one_entry_per_kind(ray_cluster, tmp_path, capfd):
    """``cfn tune --kind auto`` (joining the running Ray): both kinds tried, each kind's best stored and refitted;
    with ``--json`` stdout holds one JSON object and nothing else (Ray Tune prints its experiment table even
    when told to be quiet: on stderr)."""
    from cfn_fast.cli import main
    ratings = tmp_path / "ratings.csv"
    data = synthetic_ratings(120, 80, 2500, seed=2)
    ratings.write_text("user,item,rating\n" + "".join(f"{u},{i},{r:g}\n" for u, i, r in
                                                       zip(data.user, data.item, data.rating)))
    out = tmp_path / "hyperparams_small.json"
    code = main(["tune", "--ratings", str(ratings), "--kind", "auto", "--trials", "3", "--algo", "random",
                 "--epochs", "2", "--hidden", "6", "--quiet", "--out", str(out), "--json"])
    assert code == 0
    printed = capfd.readouterr()
    result = json.loads(printed.out)                 # the whole of stdout: one JSON object
    assert result["out"] == str(out) and result["chosen"] in ("I-CFN", "U-CFN")
    store = json.loads(out.read_text())
    assert set(store["methods"]) == {"I-CFN", "U-CFN"} and store["dataset"] == "small"
    assert store["tune"]["chosen"] in ("I-CFN", "U-CFN")
    for entry in store["methods"].values():
        assert entry["test_rmse"] > 0 and entry["trials"]
