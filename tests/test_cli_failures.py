"""The command line and the files it writes under adversarial use (issue 11): one-line errors and
exit codes, JSON errors, outputs that are inputs, file modes, temporary files, split files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from children import TESTS, child_env  # tests/children.py
from interrupts import sigint_as_at_a_terminal  # tests/interrupts.py

from cfn_fast import CFN, cli, load_ratings, synthetic_ratings
from cfn_fast.fileio import atomic_write, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "8", "--epochs", "2", "--backend", "numpy"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    r = synthetic_ratings(200, 100, 3000, seed=0)
    ratings = tmp / "ratings.npz"
    np.savez(ratings, user=r.user_ids[r.user].astype(np.int32), item=r.item_ids[r.item].astype(np.int32),
             rating=r.rating)
    model = tmp / "model.npz"
    assert cli.main(["fit", "--ratings", str(ratings), "--kind", "user", *SMALL, "--save", str(model)]) == 0
    return {"dir": tmp, "ratings": ratings, "model": model}


def one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cfn {command}: error: "), err
    return lines[0]


def cfn_process(*argv: str, **kw) -> subprocess.Popen:
    kw.setdefault("cwd", TESTS)   # not the checkout: "-m" puts the working directory first on the path
    return subprocess.Popen([sys.executable, "-m", "cfn_fast.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), preexec_fn=sigint_as_at_a_terminal,
                            **kw)


# ----------------------------------------------------------------------------- point 3: one line, exit codes
@pytest.mark.parametrize("engine", ["numpy", "cpu"])
@pytest.mark.parametrize("kind, running", [("item", "epoch"), ("auto", "kind auto:")])
def test_ctrl_c_during_fit_is_one_line_and_exit_130(files, engine, kind, running):
    """Interrupted while training (an explicit kind), or while --kind auto compares its candidates."""
    proc = cfn_process("fit", "--ratings", str(files["ratings"]), "--hidden", "8", "--epochs", "100000",
                       "--backend", engine, "--kind", kind)
    try:
        lines = []
        while len(lines) < 3 and not (lines and lines[-1].startswith(running)):  # up to the line that says
            lines.append(proc.stdout.readline())                                   # what is running
        assert lines[-1].startswith(running), lines
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in one_line(err, "fit") and "Traceback" not in err


def test_closed_stdout_is_quiet(files):
    proc = cfn_process("recommend", "--model", str(files["model"]), "--user", *map(str, range(1, 150)), "-n", "100")
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_memory_error_is_one_line_naming_what_to_reduce(files, capsys, monkeypatch):
    def no_memory(self, *a, **k):
        raise MemoryError()
    monkeypatch.setattr(CFN, "fit", no_memory)
    code = cli.main(["fit", "--ratings", str(files["ratings"]), "--hidden", "200000", "--backend", "numpy"])
    line = one_line(capsys.readouterr().err, "fit")
    assert code == 1 and "out of memory" in line and "--hidden" in line and "--batch-size" in line


def test_bench_paper_interrupt_is_one_line(capsys, monkeypatch, tmp_path):
    import cfn_fast.tools.paper.runner as runner

    def interrupted(opts):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run_paper", interrupted)
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 130 and "interrupted" in one_line(capsys.readouterr().err, "bench paper")


def test_unexpected_exception_is_one_line(files, capsys, monkeypatch):
    monkeypatch.setattr(CFN, "load", classmethod(lambda cls, *a, **k: 1 / 0))
    code = cli.main(["predict", "--model", str(files["model"]), "--user", "1", "--item", "1"])
    line = one_line(capsys.readouterr().err, "predict")
    assert code == 1 and "internal error (ZeroDivisionError" in line


@pytest.mark.parametrize("argv, says", [   # the model's ids are int64 (int32 ids are kept exactly as int64)
    (["predict", "--user", "3000000000", "--item", "1"], "1 unknown user id(s), e.g. [3000000000]"),
    (["predict", "--user", "1", "--item", "-99999999999999999999999"], "beyond the range of this model's int64 ids"),
    (["recommend", "--user", "3000000000"], "1 unknown user id(s), e.g. [3000000000]"),
    (["recommend", "--user", "99999999999999999999999"], "beyond the range of this model's int64 ids"),
])
def test_ids_beyond_the_id_type_are_unknown_ids(files, capsys, argv, says):
    code = cli.main([argv[0], "--model", str(files["model"]), *argv[1:]])
    line = one_line(capsys.readouterr().err, argv[0])
    assert code == 2 and "unknown" in line and says in line


def test_fold_in_id_beyond_the_id_type(files, capsys, tmp_path):
    (tmp_path / "new.csv").write_text("3000000000,4\n")
    code = cli.main(["fold-in", "--model", str(files["model"]), "--new", "user", "--ratings-of-new",
                     str(tmp_path / "new.csv")])
    assert code == 2 and "1 unknown item id(s), e.g. [3000000000]" in one_line(capsys.readouterr().err, "fold-in")


def test_bad_option_is_one_line(files, capsys):
    code = cli.main(["fit", "--ratings", str(files["ratings"]), "--epochs", "many"])
    line = one_line(capsys.readouterr().err, "fit")
    assert code == 2 and "--epochs" in line


# ----------------------------------------------------------------------------- point 13: JSON errors
@pytest.mark.parametrize("argv, status", [
    (["demo", "--users", "10", "--items", "10", "--n-ratings", "10000000"], 2),
    (["fit", "--ratings", "{missing}"], 2),
    (["fit", "--ratings", "{ratings}", "--test-ratio", "2"], 2),
    (["eval", "--model", "{model}", "--ratings", "{missing}"], 2),
    (["predict", "--model", "{model}", "--user", "999999", "--item", "1"], 2),
    (["recommend", "--model", "{missing}", "--user", "1"], 2),
    (["fold-in", "--model", "{model}", "--new", "user", "--ratings-of-new", "{missing}"], 2),
    (["bench", "paper", "--data-dir", "{missing}", "--out", "{dir}/o"], 2),
    (["fit", "--no-such-option"], 2),
    (["demo", "--backend", "cuda", "--epochs", "1", "--n-ratings", "4000", "--users", "200", "--items", "100"], 1),
])
def test_json_mode_prints_one_error_object(files, capsys, argv, status):
    if argv[0] == "demo" and "cuda" in argv:
        from cfn_fast import available_backends
        if "cuda" in available_backends():
            pytest.skip("a CUDA GPU is present")
    names = {"missing": str(files["dir"] / "missing.npz"), "ratings": str(files["ratings"]),
             "model": str(files["model"]), "dir": str(files["dir"])}
    code = cli.main([a.format(**names) for a in argv] + ["--json"])
    out, err = capsys.readouterr()
    payload = json.loads(out)  # exactly one JSON document on stdout
    assert code == status and payload["exit_code"] == status
    assert set(payload) >= {"error", "type"} and payload["error"] and payload["type"]
    assert payload["error"] in one_line(err, argv[0] if argv[0] != "bench" else "bench paper")


# ----------------------------------------------------------------------------- point 4: outputs vs inputs
def _same_file_variants(ratings: Path, tmp: Path) -> dict[str, Path]:
    sym = tmp / "link.npz"
    sym.symlink_to(ratings)
    hard = tmp / "hard.npz"
    os.link(ratings, hard)
    return {"same path": ratings, "relative spelling": ratings.parent / "." / ratings.name, "symlink": sym,
            "hard link": hard}


@pytest.mark.parametrize("variant", ["same path", "relative spelling", "symlink", "hard link"])
def test_fit_refuses_to_save_over_its_input(files, capsys, tmp_path, variant):
    ratings = tmp_path / "data.npz"
    ratings.write_bytes(files["ratings"].read_bytes())
    before = ratings.read_bytes()
    target = _same_file_variants(ratings, tmp_path)[variant]
    code = cli.main(["fit", "--ratings", str(ratings), *SMALL, "--save", str(target)])
    assert code == 2 and "is the input given by --ratings" in one_line(capsys.readouterr().err, "fit")
    assert ratings.read_bytes() == before


def test_fit_refuses_a_csv_input_as_output(files, capsys, tmp_path):
    csv = tmp_path / "data.csv"
    r = load_ratings(files["ratings"])
    csv.write_text("user,item,rating\n" + "".join(f"{u},{i},{x}\n" for u, i, x in
                                                    zip(r.user_ids[r.user], r.item_ids[r.item], r.rating)))
    before = csv.read_bytes()
    assert cli.main(["fit", "--ratings", str(csv), *SMALL, "--save", str(csv)]) == 2
    assert csv.read_bytes() == before and "is the input" in capsys.readouterr().err


def test_save_split_refuses_to_overwrite_its_input(files, capsys, tmp_path):
    ratings = tmp_path / "test.npz"  # the name --save-split would write
    ratings.write_bytes(files["ratings"].read_bytes())
    before = ratings.read_bytes()
    code = cli.main(["fit", "--ratings", str(ratings), *SMALL, "--save-split", str(tmp_path)])
    assert code == 2 and "--save-split" in one_line(capsys.readouterr().err, "fit")
    assert ratings.read_bytes() == before


def test_output_in_a_missing_folder_fails_before_training(files, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(CFN, "fit", lambda *a, **k: pytest.fail("training started"))
    code = cli.main(["fit", "--ratings", str(files["ratings"]), *SMALL, "--save", str(tmp_path / "no" / "m.npz")])
    assert code == 2 and "does not exist" in one_line(capsys.readouterr().err, "fit")


# ----------------------------------------------------------------------------- point 5: permissions
@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_model_file_follows_the_umask(files, tmp_path, umask, mask, mode):
    model = CFN.load(files["model"])
    umask(mask)
    path = model.save(tmp_path / "m.npz")
    assert path.stat().st_mode & 0o777 == mode


def test_overwritten_model_keeps_its_mode(files, tmp_path, umask):
    model = CFN.load(files["model"])
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    path.chmod(0o600)
    umask(0o022)
    model.save(path)
    assert path.stat().st_mode & 0o777 == 0o600 and CFN.load(path).epochs_trained_ == 2


def test_saving_through_a_symlink_replaces_its_target(files, tmp_path):
    real = tmp_path / "real.npz"
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    CFN.load(files["model"]).save(link)
    assert link.is_symlink() and CFN.load(real).epochs_trained_ == 2 and real.stat().st_mode & 0o777 == 0o640


def test_split_files_and_reports_follow_the_umask(files, tmp_path, umask):
    umask(0o077)
    split = tmp_path / "split"
    assert cli.main(["fit", "--ratings", str(files["ratings"]), *SMALL, "--save-split", str(split)]) == 0
    assert {p.stat().st_mode & 0o777 for p in split.iterdir()} == {0o600}
    from cfn_fast.tools.paper.report import _atomic_write
    _atomic_write(tmp_path / "report.md", "x")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------- point 6: temporary files
_SLOW_SAVE = textwrap.dedent("""
    import sys, time, numpy as np
    from cfn_fast import CFN
    model = CFN.load(sys.argv[1])
    real = np.savez
    def slow(fh, **arrays):
        real(fh, **arrays)
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
    np.savez = slow
    model.save(sys.argv[2])
""")


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_sigterm_during_save_removes_the_temporary_file(files, tmp_path):
    target = tmp_path / "m.npz"
    target.write_bytes(b"previous model")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(files["model"]), str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=TESTS)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        assert len(_temporaries(tmp_path)) == 1  # the temporary exists while writing
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # still ends as a SIGTERM would
    assert _temporaries(tmp_path) == [] and target.read_bytes() == b"previous model"


def test_next_save_removes_temporaries_of_dead_processes_only(files, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".m.npz.{dead.pid}.0123456789ab.tmp"
        busy = tmp_path / f".m.npz.{alive.pid}.0123456789ab.tmp"
        other = tmp_path / f".other.npz.{dead.pid}.0123456789ab.tmp"
        for p in (stale, busy, other):
            p.write_bytes(b"x" * 100)
        CFN.load(files["model"]).save(tmp_path / "m.npz")
        assert not stale.exists() and busy.exists() and other.exists()
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temporaries(tmp_path / "m.npz") == [busy]


def test_failed_write_leaves_no_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "f.bin") as fh:
            fh.write(b"partial")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- points 11, 17: eval and splits
def test_save_split_then_eval_scores_exactly_the_held_out_part(files, capsys, tmp_path):
    split, model = tmp_path / "split", tmp_path / "m.npz"
    code = cli.main(["fit", "--ratings", str(files["ratings"]), "--kind", "user", *SMALL, "--validation-ratio",
                     "0.1", "--save", str(model), "--save-split", str(split), "--json"])
    fitted = json.loads(capsys.readouterr().out)
    assert code == 0 and sorted(p.name for p in split.iterdir()) == ["test.npz", "train.npz", "validation.npz"]
    parts = {name: load_ratings(split / f"{name}.npz") for name in ("train", "validation", "test")}
    assert sum(p.nnz for p in parts.values()) == 3000 and parts["test"].nnz == 300
    original = load_ratings(files["ratings"])
    triples = {(u, i, r) for u, i, r in zip(original.user_ids[original.user], original.item_ids[original.item],
                                           original.rating)}
    for part in parts.values():  # ids and ratings preserved exactly
        assert {(u, i, r) for u, i, r in zip(part.user_ids[part.user], part.item_ids[part.item],
                                            part.rating)} <= triples
    code = cli.main(["eval", "--model", str(model), "--ratings", str(split / "test.npz"), "--json"])
    evaluated = json.loads(capsys.readouterr().out)
    assert code == 0 and evaluated["n_ratings"] == 300
    assert evaluated["rmse"] == pytest.approx(fitted["test_rmse"], rel=1e-6)


def test_eval_rejects_ratings_outside_the_models_scale(files, capsys, tmp_path):
    r = load_ratings(files["ratings"])
    scaled = tmp_path / "x20.npz"
    np.savez(scaled, user=r.user_ids[r.user], item=r.item_ids[r.item], rating=r.rating * 20)
    code = cli.main(["eval", "--model", str(files["model"]), "--ratings", str(scaled)])
    line = one_line(capsys.readouterr().err, "eval")
    assert code == 2 and "outside the model's scale [1, 5]" in line


def test_eval_skip_unknown_counts_what_it_skipped(files, capsys, tmp_path):
    r = load_ratings(files["ratings"])
    user, item = r.user_ids[r.user].copy(), r.item_ids[r.item].copy()
    user[:5], item[5:7] = 5000, 7000  # one unknown user in 5 ratings, one unknown item in 2
    path = tmp_path / "new.npz"
    np.savez(path, user=user, item=item, rating=r.rating)
    code = cli.main(["eval", "--model", str(files["model"]), "--ratings", str(path)])
    line = one_line(capsys.readouterr().err, "eval")
    assert code == 2 and "1 user id(s)" in line and "1 item id(s)" in line and "--skip-unknown" in line
    code = cli.main(["eval", "--model", str(files["model"]), "--ratings", str(path), "--skip-unknown", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["skipped"] == {"ratings": 7, "users": 1, "items": 1} and out["n_ratings"] == 2993
    keep = np.ones(r.nnz, dtype=bool)
    keep[:7] = False
    assert out["rmse"] == pytest.approx(CFN.load(files["model"]).score(r.subset(keep)), rel=1e-6)


# ----------------------------------------------------------------------------- points 12, 14: bench paper
def test_bench_paper_named_missing_data_dir_fails_before_work(capsys, tmp_path):
    out = tmp_path / "report"
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path / "nonexistent"), "--out", str(out)])
    assert code == 2 and "does not exist" in one_line(capsys.readouterr().err, "bench paper")
    assert not out.exists()


def test_bench_paper_named_missing_dataset_is_an_error(capsys, tmp_path):
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--datasets", "ml-1m",
                     "--out", str(tmp_path / "o")])
    assert code == 2 and "--datasets ml-1m: not found" in one_line(capsys.readouterr().err, "bench paper")


def test_bench_paper_without_matplotlib_fails_before_work(capsys, monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    started = time.perf_counter()
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    line = one_line(capsys.readouterr().err, "bench paper")
    assert code == 1 and "pip install 'cfn_fast[bench]'" in line and time.perf_counter() - started < 10
    assert not (tmp_path / "o").exists()


def test_pandas_import_error_names_an_installable_package(monkeypatch):
    from cfn_fast.data import rating_files
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError) as info:
        rating_files.require_pandas()
    assert "pip install 'pandas" in str(info.value) and "[pandas]" not in str(info.value)


# ----------------------------------------------------------------------------- points 15, 18: messages and help
def test_fold_in_needs_new_and_readme_example_says_it(files, capsys, tmp_path):
    (tmp_path / "n.csv").write_text("3,5\n")
    code = cli.main(["fold-in", "--model", str(files["model"]), "--ratings-of-new", str(tmp_path / "n.csv")])
    assert code == 2 and "--new is required" in one_line(capsys.readouterr().err, "fold-in")
    readme = (REPO / "README.md").read_text()
    examples = [line for line in readme.splitlines() if line.startswith("cfn fold-in")]
    assert examples and all("--new " in line for line in examples)


@pytest.mark.parametrize("command", ["demo", "fit", "eval", "predict", "recommend", "fold-in"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    if command in ("demo", "fit"):
        assert "(default: 20)" in text and "(default: 0.07 for --kind item, 0.09 for user)" in text
    if command == "fit":
        assert "(default: 0.1)" in text and "--split-seed SPLIT_SEED seed of the random split (default: 0)" in text
    if command in ("recommend", "fold-in"):
        assert "(default: 10)" in text


def test_verbose_shows_a_progress_bar(files, capsys):
    assert cli.main(["fit", "--ratings", str(files["ratings"]), *SMALL, "-v"]) == 0
    assert "CFN epochs" in capsys.readouterr().err


def test_demo_labels_validation_and_test_and_renames_its_count_option(capsys):
    argv = ["demo", "--epochs", "2", "--users", "200", "--items", "100", "--hidden", "8", "--backend", "numpy"]
    assert cli.main(argv + ["--n-ratings", "4000"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].startswith("kind blend: training the bias model")      # the blend is the default
    assert "test RMSE" in lines[-1] and "bias model" in lines[-1]
    assert cli.main(argv + ["--n-ratings", "4000", "--kind", "auto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("kind auto: comparing")
    assert "validation RMSE" in lines[3] and lines[3].startswith("epoch") and "test RMSE" in lines[-1]
    assert cli.main(argv + ["--ratings", "4000", "--json"]) == 0  # the deprecated spelling still works
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_ratings"] == 4000 and "deprecated" in captured.err


@pytest.mark.parametrize("argv, needle", [
    (["--split-seed", "-1"], "--split-seed must be an integer >= 0, got -1"),
    (["--batch-size", "99999999999999999999"], "argument --batch-size: must be an integer in [1, 2147483647]"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
    (["--lr", "2", "--weight-decay", "0.5"], "--lr * --weight-decay must be < 1"),
    (["--mask-ratio", "1"], "--mask-ratio must be a number in [0, 1), got 1.0"),
    (["--hidden", "0"], "argument --hidden: must be an integer in [1, 2147483647], got 0"),
    (["--test-ratio", "nan"], "--test-ratio must be in (0, 1), got nan"),
    (["--validation-ratio", "1"], "--validation-ratio must be in [0, 1), got 1.0"),
])
def test_errors_name_the_option(files, capsys, monkeypatch, argv, needle):
    monkeypatch.setattr(cli.common, "read_ratings",
                        lambda path: pytest.fail("data loaded before the options were checked"))
    code = cli.main(["fit", "--ratings", str(files["ratings"]), *argv])
    assert code == 2 and needle in one_line(capsys.readouterr().err, "fit")


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0"], "argument --seeds: must be an integer in [1, 1000], got 0"),
    (["--synthetic", "-1", "5", "5"], "argument --synthetic: must be an integer in [1, 2147483647], got -1"),
    (["--table3-budget", "-5"], "argument --table3-budget: must be a finite number of seconds > 0"),
])
def test_bench_paper_options_are_checked(capsys, tmp_path, argv, needle):
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert code == 2 and needle in one_line(capsys.readouterr().err, "bench paper")


def test_bench_paper_named_missing_hyperparams_dir_with_from_json(capsys, tmp_path):
    code = cli.main(["bench", "paper", "--quick", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--from-json", "--hyperparams-dir", str(tmp_path / "none")])
    assert code == 2 and "--hyperparams-dir" in one_line(capsys.readouterr().err, "bench paper")
    assert not (tmp_path / "o").exists()
