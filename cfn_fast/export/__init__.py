"""Exports of a fitted CFN to formats that serving engines run without Python (see :mod:`.onnx`)."""
from __future__ import annotations

__all__ = ["GRAPHS"]

#: The graphs :meth:`cfn_fast.CFN.to_onnx` can write.
GRAPHS = ("predict", "reconstruct", "recommend")
