"""Bad-input rows for exported ONNX graphs; tests/test_bad_input.py runs them and renders the table."""
from __future__ import annotations

from bad_input_case import Case  # tests/bad_input_case.py

CASES: list[Case] = []
