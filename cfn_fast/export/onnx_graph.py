"""The parts every exported ONNX graph shares (:mod:`cfn_fast.export.onnx` for one network,
:mod:`cfn_fast.export.onnx_blend` for a blend): node and initializer names, the graph's inputs and outputs,
the refusal of invalid inputs (see "Invalid inputs" in :mod:`cfn_fast.export.onnx`), clipping, TopK and the
finished, checked ``onnx.ModelProto``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..fitted.ranking import DEFAULT_MIN_SUPPORT

__all__ = ["OPSET", "IR_VERSION", "load_onnx", "GraphBuilder", "GraphParts"]

OPSET = 17
IR_VERSION = 8  # the oldest IR that carries opset 17: loads in older runtimes too


def load_onnx() -> Any:
    """The ``onnx`` package (``ImportError`` naming the extra to install)."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'cfn_fast[onnx]'") from None
    return onnx


class GraphBuilder:
    """Accumulates nodes and initializers with unique names (a thin layer over ``onnx.helper``)."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value: Any, stem: str = "const", dtype: Any = np.float32) -> str:
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, node_name: str | None = None, **attrs: Any) -> Any:
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, name=node_name, **attrs))
        return names[0] if outputs == 1 else names

    def rename(self, value: str, name: str) -> str:
        self.nodes.append(self.helper.make_node("Identity", [value], [name]))
        return name


class GraphParts:
    """One graph under construction: its builder ``g``, its declared inputs and outputs, and the pieces
    the exporters share.  ``low`` / ``high``: the rating scale the graph clips to."""

    def __init__(self, onnx: Any, low: float, high: float) -> None:
        self.onnx = onnx
        self.g = GraphBuilder(onnx)
        self.low, self.high = float(low), float(high)
        self.inputs: list = []
        self.outputs: list = []

    # ------------------------------------------------------------------ graph inputs / outputs
    def add_input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def add_output(self, value: str, name: str, elem: int, shape: list) -> None:
        self.g.rename(value, name)
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))

    # ------------------------------------------------------------------ refusing invalid inputs
    def refuse_unless(self, ok: str, value: str, rule: str) -> str:
        """``value`` itself while the boolean ``ok`` (a scalar or ``[1]``) holds; otherwise the run fails.

        ONNX has no exceptions, so the value goes through a Reshape to its own shape, or, when ``ok`` is
        false, to a shape of ``-2``s, which every runtime must refuse.  The Reshape node is named after
        ``rule``: onnxruntime's error quotes it.  Reshaping to the same shape moves no data and changes no bit,
        and everything downstream reads the checked value, so no runtime can prune the check."""
        g = self.g
        shape = g.op("Shape", value)
        invalid = g.op("Sub", g.op("Mul", shape, g.const(0, dtype=np.int64)), g.const(2, dtype=np.int64))
        return g.op("Reshape", value, g.op("Where", ok, shape, invalid), node_name=f"refused: {rule}")

    def none_of(self, flags: str) -> str:
        """Boolean scalar: no element of ``flags`` is set (true for an empty tensor too)."""
        g, T = self.g, self.onnx.TensorProto
        return g.op("Equal", g.op("ReduceSum", g.op("Cast", flags, to=T.INT64), keepdims=0),
                    g.const(0, dtype=np.int64))

    def within(self, indices: str, n: int, what: str, *, padded: bool) -> str:
        """``indices`` refused unless every entry lies in ``[0, n)`` (or is ``-1``, the padding, when
        ``padded``): -1 must not wrap around to the last entry as Gather's negative indices would."""
        g = self.g
        low = -1 if padded else 0
        outside = g.op("Or", g.op("Less", indices, g.const(low, dtype=np.int64)),
                       g.op("GreaterOrEqual", indices, g.const(n, dtype=np.int64)))
        rule = f"{what} must lie in [0, {n})" + (", or be -1 for padding" if padded else "")
        return self.refuse_unless(self.none_of(outside), indices, rule)

    def same_batch(self, value: str, other: str) -> str:
        """Boolean ``[1]``: ``value`` and ``other`` have the same first dimension (no broadcasting of 1)."""
        return self.g.op("Equal", self.batch(value), self.batch(other))

    def batch(self, value: str) -> str:
        """``[1]`` int64: the first dimension of ``value``."""
        g = self.g
        return g.op("Slice", g.op("Shape", value), g.const([0], dtype=np.int64), g.const([1], dtype=np.int64))

    def scatter_sum(self, batch: str, width: int, indices: str, updates: str) -> str:
        """Sum ``updates`` into a zero ``[batch, width]`` matrix at ``indices`` along axis 1."""
        g = self.g
        shape = g.op("Concat", batch, g.const([width], dtype=np.int64), axis=0)
        zeros = g.op("ConstantOfShape", shape, value=self.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
        return g.op("ScatterElements", zeros, indices, updates, axis=1, reduction="add")

    # ------------------------------------------------------------------ ratings, ranking
    def clip(self, rating: str) -> str:
        """``rating`` clipped to the scale."""
        return self.g.op("Clip", rating, self.g.const(self.low), self.g.const(self.high))

    def users_and_exclude(self, n_users: int, n_items: int) -> tuple[str, str]:
        """The inputs ``users`` int64 ``[B]`` (training user indices) and ``exclude`` int64 ``[B, E]`` (item
        indices not to recommend, ``-1`` padding), checked: ``(users, excluded)``, ``excluded`` the boolean
        ``[B, n_items]`` of the items each user excludes."""
        g, T = self.g, self.onnx.TensorProto
        users = self.within(self.add_input("users", T.INT64, ["batch"]), n_users, "users: indices", padded=False)
        exclude = self.add_input("exclude", T.INT64, ["batch", "excluded"])
        exclude = self.refuse_unless(self.same_batch(exclude, users), exclude,
                                     "exclude: one row per user (the same batch size as users)")
        exclude = self.within(exclude, n_items, "exclude: item indices", padded=True)
        valid = g.op("GreaterOrEqual", exclude, g.const(0, dtype=np.int64))
        safe = g.op("Where", valid, exclude, g.const(0, dtype=np.int64))
        hits = self.scatter_sum(g.op("Shape", users), n_items, safe, g.op("Cast", valid, to=T.FLOAT))
        return users, g.op("Greater", hits, g.const(0.0))

    def top_k(self, unclipped: str, excluded: str, support: np.ndarray) -> None:
        """The inputs ``k`` and ``min_support`` and the outputs ``top_indices`` / ``top_scores``: TopK on the
        unclipped scores.  Ranking by the clipped score with ties broken by the unclipped one (as
        :func:`cfn_fast.fitted.ranking.top_n`) is ranking by the unclipped score, clipping being monotone.
        Candidates with fewer than ``min_support`` training ratings (``support``) are excluded like seen ones."""
        g, T = self.g, self.onnx.TensorProto
        k = self.add_input("k", T.INT64, [1])
        min_support = self.add_input("min_support", T.INT64, [1])
        g.initializers.append(self.onnx.numpy_helper.from_array(
            np.array([DEFAULT_MIN_SUPPORT], dtype=np.int64), "min_support"))  # an overridable default
        rare = g.op("Less", g.const(np.asarray(support, dtype=np.int64)[None, :], "support", dtype=np.int64),
                    min_support)
        masked = g.op("Where", g.op("Or", excluded, rare), g.const(-np.inf), unclipped)
        values, indices = g.op("TopK", masked, k, outputs=2, axis=-1, largest=1, sorted=1)
        self.add_output(indices, "top_indices", T.INT64, ["batch", "k"])
        excluded_slot = g.op("IsInf", values, detect_negative=1, detect_positive=0)  # fewer than k candidates
        self.add_output(g.op("Where", excluded_slot, values, self.clip(values)), "top_scores", T.FLOAT, ["batch", "k"])

    # ------------------------------------------------------------------ the model
    def finished(self, graph: str, metadata: dict[str, str], doc: str) -> Any:
        """The finished model (opset :data:`OPSET`), ``metadata`` as its properties, checked."""
        helper = self.onnx.helper
        body = helper.make_graph(self.g.nodes, f"cfn_{graph}", self.inputs, self.outputs, self.g.initializers,
                                 doc_string=doc)
        proto = helper.make_model(body, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="cfn_fast", ir_version=IR_VERSION,
                                  doc_string=f"CFN {graph} graph; see cfn_fast.export.onnx for its contract")
        helper.set_model_props(proto, metadata)
        self.onnx.checker.check_model(proto)
        return proto
