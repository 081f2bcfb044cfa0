"""One row of the bad-input table (README "Bad input", docs/bad_inputs.md): the input, its error and message."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


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
