"""Input files: the same situation gets the same message in every command (cfn_fast.fileio.check_input_file)."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest

from cfn_fast import CFN, load_ratings, synthetic_ratings
from cfn_fast.cli import main

NOT_REGULAR = ("is not a regular file (a pipe, socket or device such as /dev/stdin): inputs are read from "
               "regular files only; save the data to a file and pass its path")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    r = synthetic_ratings(60, 40, 900, seed=0)
    ratings = tmp / "ratings.npz"
    np.savez(ratings, user=r.user_ids[r.user], item=r.item_ids[r.item], rating=r.rating)
    model = tmp / "model.npz"
    CFN("user", (6,), 1, backend="numpy").fit(r).save(model)
    new = tmp / "new.csv"
    new.write_text(f"{r.item_ids[0]},4\n")
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    return {"ratings": ratings, "model": model, "new": new, "fifo": fifo, "out": tmp / "out.onnx",
            "tune_out": tmp / "hp.json"}


@pytest.fixture
def no_hang():
    """A command that opened a FIFO would wait for a writer forever: fail the test instead."""
    def expire(signum, frame):
        raise TimeoutError("the command blocked reading its input")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# (command line with {X} where the special file goes, what the message calls that input)
COMMANDS = [
    ("fit --ratings {X} --epochs 1 --hidden 4 --backend numpy", "ratings file"),
    ("eval --model {model} --ratings {X}", "ratings file"),
    ("tune --ratings {X} --out {tune_out} --trials 1", "ratings file"),
    ("fold-in --model {model} --new user --ratings-of-new {X}", "ratings file"),
    ("eval --model {X} --ratings {ratings}", "model file"),
    ("predict --model {X} --user 1 --item 1", "model file"),
    ("recommend --model {X} --user 1", "model file"),
    ("fold-in --model {X} --new user --ratings-of-new {new}", "model file"),
    ("export --model {X} --onnx {out}", "model file"),
    ("fold-in --model {model} --new user --ratings-of-new {new} --features {X}", "features file"),
]


@pytest.mark.parametrize("special", ["fifo", "/dev/stdin"])
@pytest.mark.parametrize("line, what", COMMANDS, ids=[c[0].split(" --")[0] + ":" + c[1] for c in COMMANDS])
def test_every_command_refuses_a_pipe_or_stdin_with_one_message(line, what, special, files, capsys, no_hang):
    path = str(files["fifo"]) if special == "fifo" else special
    if special == "/dev/stdin" and (not os.path.exists("/dev/stdin") or stat.S_ISREG(os.stat("/dev/stdin").st_mode)):
        pytest.skip("/dev/stdin is absent, or a regular file (stdin redirected from a file: then it is read)")
    argv = line.format(X=path, **{k: str(v) for k, v in files.items()}).split()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cfn {argv[0]}: error: {what} {path!r} {NOT_REGULAR}"


@pytest.mark.parametrize("line, what", [c for c in COMMANDS if c[1] != "features file"],
                         ids=[c[0].split(" --")[0] + ":" + c[1] for c in COMMANDS if c[1] != "features file"])
def test_every_command_names_a_missing_input_the_same_way(line, what, files, capsys, tmp_path):
    missing = str(tmp_path / "missing.npz")
    argv = line.format(X=missing, **{k: str(v) for k, v in files.items()}).split()
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"cfn {argv[0]}: error: no {what} at {missing!r}"


def test_the_library_readers_share_the_rule(files, no_hang):
    fifo = str(files["fifo"])
    for read, what in ((load_ratings, "ratings file"), (CFN.load, "model file")):
        with pytest.raises(ValueError) as info:
            read(fifo)
        assert str(info.value) == f"{what} {fifo!r} {NOT_REGULAR}"
    with pytest.raises(IsADirectoryError, match=f"^ratings file {str(Path(fifo).parent)!r} is a folder, not a file"):
        load_ratings(Path(fifo).parent)
