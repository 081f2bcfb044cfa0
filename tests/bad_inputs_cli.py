"""Bad-input rows for the command line; tests/test_bad_input.py runs them and renders the table."""
from __future__ import annotations

from bad_input_case import Case  # tests/bad_input_case.py

CASES: list[Case] = []


# ---------------------------------------------------------------- cfn tune (checked before Ray starts)
def _tune(*argv: str):
    """``cfn tune`` on a small rating file in the test's folder, beside a text file ``notes.txt`` (``{tmp}`` in
    ``argv`` is that folder)."""
    def run(tmp):
        from cfn_fast import cli
        lines = "".join(f"{u},{i},{1 + (u * i) % 5}\n" for u in range(30) for i in range(20) if (u + i) % 3)
        (tmp / "r.csv").write_text("user,item,rating\n" + lines)
        (tmp / "notes.txt").write_text("mine")
        return cli.run(["tune", "--ratings", f"{tmp}/r.csv", "--out", f"{tmp}/hyperparams_r.json", "--quiet",
                        *(a.format(tmp=tmp) for a in argv)])
    return run


def _usage_error():
    from cfn_fast.cli.errors import UsageError
    return UsageError


CASES += [
    Case("tune: hidden width 0", "cfn tune --ratings r.csv --out h.json --hidden 0", _tune("--hidden", "0"),
         _usage_error(), "argument --hidden: must be an integer in [1, 2147483647], got 0 (see `cfn tune --help`)",
         needs_tmp=True),
    Case("tune: negative batch size", "cfn tune --ratings r.csv --out h.json --batch-size -3",
         _tune("--batch-size", "-3"), _usage_error(),
         "argument --batch-size: must be an integer in [1, 2147483647], got -3 (see `cfn tune --help`)",
         needs_tmp=True),
    Case("tune: test ratio outside (0, 1)", "cfn tune --ratings r.csv --out h.json --test-ratio 1.5",
         _tune("--test-ratio", "1.5"), ValueError, "--test-ratio must be a number in (0, 1), got 1.5", needs_tmp=True),
    Case("tune: more CPUs per trial than the embedded Ray has",
         "cfn tune --ratings r.csv --out h.json --num-cpus 1 --cpus-per-trial 2",
         _tune("--num-cpus", "1", "--cpus-per-trial", "2"), ValueError,
         "--cpus-per-trial 2 exceeds the CPUs of the embedded Ray (--num-cpus 1): no trial could start",
         needs_tmp=True),
    Case("tune: malformed cluster address", "cfn tune --ratings r.csv --out h.json --address head-node",
         _tune("--address", "head-node"), ValueError,
         "--address must be 'auto', HOST:PORT or ray://HOST:PORT, got 'head-node'", needs_tmp=True),
    Case("tune: cluster address where nothing answers", "cfn tune --ratings r.csv --out h.json --address 127.0.0.1:1",
         _tune("--address", "127.0.0.1:1"), ConnectionError,
         "--address 127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1 (Connection refused); start one there (ray "
         "start --head --port 1) or leave --address out to start Ray inside this process", needs_tmp=True),
    Case("tune: result file in a folder that does not exist", "cfn tune --ratings r.csv --out missing/h.json",
         _tune("--out", "{tmp}/missing/h.json"), FileNotFoundError,
         r"re:--out (.*/)?missing/h\.json: folder (.*/)?missing does not exist",
         shown="--out missing/h.json: folder missing does not exist", needs_tmp=True),
    Case("tune: result file that is the rating file", "cfn tune --ratings r.csv --out r.csv",
         _tune("--out", "{tmp}/r.csv"), ValueError,
         r"re:--out (.*/)?r\.csv is the input given by --ratings \((.*/)?r\.csv\); writing it would destroy the "
         r"input: "
         r"choose another output path",
         shown="--out r.csv is the input given by --ratings (r.csv); writing it would destroy the input: choose "
               "another output path", needs_tmp=True),
    Case("tune: storage that is a file", "cfn tune --ratings r.csv --out h.json --storage notes.txt",
         _tune("--storage", "{tmp}/notes.txt"), NotADirectoryError,
         r"re:--storage (.*/)?notes\.txt is a file, not a folder",
         shown="--storage notes.txt is a file, not a folder", needs_tmp=True),
]
