"""The paper reproduction harness: ``cfn bench paper`` (Tables 1-3, Figures 3-5, the non-linearity ablation).

>>> from cfn_fast.tools.paper import PaperOptions, run_paper       # doctest: +SKIP
>>> run_paper(PaperOptions(out=Path("out/paper"), data_dir=Path("../shared/data"), quick=True))

See :mod:`cfn_fast.tools.paper.runner` for the flow, :mod:`.experiments` for the protocol,
:mod:`.search` for the stored hyper-parameter search and :mod:`.published` for the paper's numbers.
"""
from .runner import PARTS, PaperOptions, run_paper

__all__ = ["PARTS", "PaperOptions", "run_paper"]
