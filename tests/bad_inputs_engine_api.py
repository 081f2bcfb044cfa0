"""Bad-input rows for the public engine API (cfn_fast.engine); tests/test_bad_input.py runs and renders them."""
from __future__ import annotations

from bad_input_case import Case  # tests/bad_input_case.py

CASES: list[Case] = []
