"""Tools built on the core of cfn_fast, installed with it: the paper reproduction harness (:mod:`.paper`),
the paper's baselines (:mod:`.baselines`), the benchmark suite and its runner (:mod:`.benchsuite`) and the
hyper-parameter search on Ray Tune (:mod:`.tune`).

Layering: these modules may import the core; the core never imports them; the command line
(:mod:`cfn_fast.cli`) may import both.  Importing this package imports none of its subpackages.
"""
