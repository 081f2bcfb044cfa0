"""One row of the bad-input table (README "Bad input", docs/bad_inputs.md): the input, its error and message."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Case:
    what: str          # the bad input
    example: str       # the call shown in the document
    run: Callable      # () -> object, or (tmp_path) -> object when needs_tmp
    error: type
    message: str       # exact text, or "re:<regex>"
    shown: str = ""    # example text for a regex message
    needs_tmp: bool = False

    @property
    def text(self) -> str:
        return self.shown or self.message


def stored_as_given(data, rows, cols, shape=None) -> sp.coo_matrix:
    """A COO matrix exactly as given: repeated entries and zeros stay stored."""
    return sp.coo_matrix((np.asarray(data, float), (rows, cols)), shape=shape)
