"""ONNX export of a fitted :class:`~cfn_fast.CFN`, built with the ``onnx`` package's helpers alone (opset 17).

The whole prediction path lives in the graph: scaling to [-1, 1], centring each row by its own mean (or,
for ``centring="bias"``, by its shrunk offset and the inputs' offsets stored in the graph), the
network (side information concatenated to every layer's input), the inverse scaling and the clipping to
the rating scale.  A serving engine (ONNX Runtime, Triton, ...) feeds ratings and gets ratings.

Vocabulary.  A *sample* is what the autoencoder completes: a user for a U-CFN, an item for an I-CFN.  Its
*row* holds its ratings over the model's *inputs* (items for U-CFN, users for I-CFN), in **training index
order**: column ``j`` is ``model.train_.item_ids[j]`` (U-CFN) or ``model.train_.user_ids[j]`` (I-CFN); the
ids are also stored in the model's metadata (``input_ids``, JSON).  ``B`` is the batch (dynamic).

Row inputs (``predict``, ``reconstruct``, U-CFN ``recommend``), chosen by ``input_format``:

* ``"dense"``: ``ratings`` float32 ``[B, n_inputs]`` in rating units, **NaN for unknown**.
* ``"sparse"``: ``indices`` int64 ``[B, K]`` and ``values`` float32 ``[B, K]``: each row's known ratings as
  column indices and ratings, padded with index ``-1`` (padding values are ignored; an index at most once
  per row).

``features`` float32 ``[B, side_dim]``: the samples' side information, an input only when the model was
trained with side information (CFN++).  Ratings must lie on the model's scale (the graph does not check).

Graphs
------
``"reconstruct"``  → ``predictions`` float32 ``[B, n_inputs]`` (every input's predicted rating) and
    ``codes`` float32 ``[B, hidden[-1]]`` (the last hidden layer).
``"predict"``      inputs + ``columns`` int64 ``[B, C]`` (input-space indices to score for each row, the
    candidate ids) → ``predictions`` float32 ``[B, C]``.  For a U-CFN: a user's item ratings in, that user's
    predicted ratings of the requested items out; for an I-CFN: an item's ratings by the training users in,
    the requested users' predicted ratings of that item out.  A known sample fed its training row gets
    :meth:`CFN.predict`'s values; a new one gets :meth:`CFN.fold_in`'s.
``"recommend"``    ``k`` int64 ``[1]`` (≤ the number of candidates) and the optional ``min_support`` int64
    ``[1]`` (default :data:`~cfn_fast.fitted.ranking.DEFAULT_MIN_SUPPORT`: items with fewer training ratings are
    never recommended) → ``top_indices`` int64 ``[B, k]`` and ``top_scores`` float32 ``[B, k]``, best first,
    ties broken by the unclipped score then by lower index (TopK), as :meth:`CFN.recommend`.

    * U-CFN: row inputs (a user's ratings over the items); the items rated in the row are excluded; indices
      are item indices.  Rows with fewer than ``k`` unrated items end in ``-inf`` scores.
    * I-CFN (users are the inputs, so a user's scores need every item): ``users`` int64 ``[B]`` (training
      user indices) and ``exclude`` int64 ``[B, E]`` (item indices not to recommend, e.g. the user's seen
      items, padded with ``-1``) → top item indices.  The items' codes and means are stored in the graph.

A sample with no ratings in its row is centred by the global training mean; without side information
it is predicted by each input's mean training rating, as :meth:`CFN.predict` does.

Invalid inputs
--------------
Where the library raises (``IndexError`` for an index out of range), the graph refuses the run: ONNX has
no exceptions, so each index input passes through a Reshape that, for invalid input, asks for an impossible
shape.  onnxruntime then raises, and its message quotes the refusing node's name, the rule broken, e.g.
``Name:'refused: columns: indices must lie in [0, 90)'``.  Valid inputs go through unchanged (the outputs
are bit-identical to a graph without the checks).  The rules:

* ``columns``, ``users``: every entry in ``[0, n)``; ``-1`` is an error there, not padding (Gather would
  wrap it around to the last input).
* ``indices`` (sparse rows): in ``[0, n_inputs)`` or ``-1`` (padding), each column at most once per row;
  ``values`` has the shape of ``indices``.
* ``exclude``: in ``[0, n_items)`` or ``-1`` (padding).
* batch sizes: ``features`` and ``columns`` have one row per row of the ratings, ``exclude`` one row per
  user; a batch of 1 is not broadcast.

The whole run is refused, as the library refuses the whole call: there is no per-row validity output (one
that a caller could ignore and serve garbage).  A server that batches requests together (e.g. Triton's
dynamic batching) fails every request batched with a bad one, so check indices before sending them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write
from ..fitted.encoding import encode
from ..fitted.ranking import DEFAULT_MIN_SUPPORT
from ..fitted.runtime import Runtime
from ..fitted.scoring import input_mean_rating
from ..preprocessing import BIAS_SHRINKAGE
from . import GRAPHS

__all__ = ["export_onnx", "build_onnx", "OPSET", "INPUT_FORMATS"]

OPSET = 17
INPUT_FORMATS = ("dense", "sparse")
_IR_VERSION = 8  # the oldest IR that carries opset 17: loads in older runtimes too


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'cfn_fast[onnx]'") from None
    return onnx


class _Builder:
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


@dataclass(frozen=True)
class _Rows:
    """Graph values of the row inputs: ``centred`` (``[B, n_inputs]`` dense or ``[B, K]`` sparse), the sparse
    column ``indices`` (``None`` for dense rows), ``weight`` (1.0 where known), row ``mean`` and ``count``, and
    the input ``batch_of`` that gives the batch size the other inputs must match."""

    centred: str
    indices: str | None
    weight: str
    mean: str
    count: str
    batch_of: str               # the input whose first dimension is the batch (ratings or indices)
    offset: str | None = None   # per-input offsets at the rows' columns (``centring="bias"``), else None


class _Exporter:
    """Builds one graph for one fitted model (see the module notes)."""

    def __init__(self, rt: Runtime, onnx: Any) -> None:
        self.rt = rt
        self.network = rt.network
        self.train = rt.fitted.train
        self.g = _Builder(onnx)
        self.onnx = onnx
        self.pre = self.network.preprocessing
        self._offset_const: str | None = None
        self.layers = self.network.layers
        self.n_inputs = self.network.n_inputs
        self.side_dim = self.network.side_dim
        self.inputs: list = []
        self.outputs: list = []

    # ------------------------------------------------------------------ graph inputs / outputs
    def _input(self, name: str, elem: int, shape: list) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def _output(self, value: str, name: str, elem: int, shape: list) -> None:
        self.g.rename(value, name)
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem, shape))

    def _features(self, rows: "_Rows") -> str | None:
        if not self.side_dim:
            return None
        features = self._input("features", self.onnx.TensorProto.FLOAT, ["batch", self.side_dim])
        return self._refuse_unless(self._same_batch(features, rows.batch_of), features,
                                   "features: one row per row of the ratings (the same batch size)")

    # ------------------------------------------------------------------ refusing invalid inputs
    def _refuse_unless(self, ok: str, value: str, rule: str) -> str:
        """``value`` itself while the boolean ``ok`` (a scalar or ``[1]``) holds; otherwise the run fails.

        ONNX has no exceptions, so the value goes through a Reshape to its own shape, or, when ``ok`` is
        false, to a shape of ``-2``s, which every runtime must refuse.  The Reshape node is named after
        ``rule``: onnxruntime's error quotes it.  Reshaping to the same shape moves no data and changes no bit,
        and everything downstream reads the checked value, so no runtime can prune the check."""
        g = self.g
        shape = g.op("Shape", value)
        invalid = g.op("Sub", g.op("Mul", shape, g.const(0, dtype=np.int64)), g.const(2, dtype=np.int64))
        return g.op("Reshape", value, g.op("Where", ok, shape, invalid), node_name=f"refused: {rule}")

    def _none_of(self, flags: str) -> str:
        """Boolean scalar: no element of ``flags`` is set (true for an empty tensor too)."""
        g, T = self.g, self.onnx.TensorProto
        return g.op("Equal", g.op("ReduceSum", g.op("Cast", flags, to=T.INT64), keepdims=0),
                    g.const(0, dtype=np.int64))

    def _within(self, indices: str, n: int, what: str, *, padded: bool) -> str:
        """``indices`` refused unless every entry lies in ``[0, n)`` (or is ``-1``, the padding, when
        ``padded``): -1 must not wrap around to the last entry as Gather's negative indices would."""
        g = self.g
        low = -1 if padded else 0
        outside = g.op("Or", g.op("Less", indices, g.const(low, dtype=np.int64)),
                       g.op("GreaterOrEqual", indices, g.const(n, dtype=np.int64)))
        rule = f"{what} must lie in [0, {n})" + (", or be -1 for padding" if padded else "")
        return self._refuse_unless(self._none_of(outside), indices, rule)

    def _same_batch(self, value: str, other: str) -> str:
        """Boolean ``[1]``: ``value`` and ``other`` have the same first dimension (no broadcasting of 1)."""
        return self.g.op("Equal", self._batch(value), self._batch(other))

    # ------------------------------------------------------------------ preprocessing
    def _rows(self, input_format: str) -> "_Rows":
        """The row inputs, centred as in training: unit scale, minus the row's mean over its known entries.

        Dense rows stay ``[B, n_inputs]``; sparse rows ``[B, K]`` (see :meth:`_first_product`)."""
        g, T, pre = self.g, self.onnx.TensorProto, self.pre
        if input_format == "dense":
            ratings = self._input("ratings", T.FLOAT, ["batch", self.n_inputs])
            known = g.op("Not", g.op("IsNaN", ratings))
            values, indices = g.op("Where", known, ratings, g.const(0.0)), None
        else:
            given = self._input("indices", T.INT64, ["batch", "known"])
            raw = self._input("values", T.FLOAT, ["batch", "known"])
            same_shape = self._none_of(g.op("Not", g.op("Equal", g.op("Shape", raw), g.op("Shape", given))))
            raw = self._refuse_unless(same_shape, raw, "values: must have the shape of indices")
            given = self._within(given, self.n_inputs, "indices: column indices", padded=True)
            known = g.op("GreaterOrEqual", given, g.const(0, dtype=np.int64))
            indices = g.op("Where", known, given, g.const(0, dtype=np.int64))  # padding reads column 0, weight 0
            indices = self._once_per_row(indices, known)
            values = g.op("Where", known, raw, g.const(0.0))
        weight = g.op("Cast", known, to=T.FLOAT)
        unit = g.op("Mul", g.op("Div", g.op("Sub", values, g.const(pre.mid)), g.const(pre.half_range)), weight)
        axis = g.const([1], dtype=np.int64)
        count = g.op("ReduceSum", weight, axis, keepdims=1)
        total = g.op("ReduceSum", unit, axis, keepdims=1)
        batch_of = ratings if input_format == "dense" else given
        if pre.input_offset is not None:
            return self._bias_rows(unit, indices, weight, count, batch_of)
        has = g.op("Greater", count, g.const(0.0))
        mean = g.op("Where", has, g.op("Div", total, g.op("Max", count, g.const(1.0))), g.const(pre.global_mean))
        centred = g.op("Mul", g.op("Sub", unit, mean), weight)
        return _Rows(centred, indices, weight, mean, count, batch_of)

    def _once_per_row(self, indices: str, known: str) -> str:
        """``indices`` refused when a row names a column twice (the scatter would add the two ratings)."""
        g, T = self.g, self.onnx.TensorProto
        counts = self._scatter_sum(self._batch(indices), self.n_inputs, indices, g.op("Cast", known, to=T.FLOAT))
        return self._refuse_unless(self._none_of(g.op("Greater", counts, g.const(1.0))), indices,
                                   "indices: a column at most once per row")

    def _bias_rows(self, unit: str, indices: str | None, weight: str, count: str, batch_of: str) -> "_Rows":
        """``centring="bias"`` (:meth:`Preprocessing.row_means` / :meth:`Preprocessing.centre`): the row's
        shrunk offset over the inputs' offsets, and the residuals."""
        g, pre = self.g, self.pre
        offset = self._input_offset(indices)
        axis = g.const([1], dtype=np.int64)
        shifted = g.op("Mul", g.op("Sub", g.op("Sub", unit, g.const(pre.global_mean)), offset), weight)
        total = g.op("ReduceSum", shifted, axis, keepdims=1)
        mean = g.op("Add", g.const(pre.global_mean), g.op("Div", total, g.op("Add", count, g.const(BIAS_SHRINKAGE))))
        residual = g.op("Sub", g.op("Sub", unit, mean), offset)
        return _Rows(g.op("Mul", residual, weight), indices, weight, mean, count, batch_of, offset)

    def _input_offset(self, columns: str | None) -> str | None:
        """The inputs' offsets of ``centring="bias"``: ``[1, n_inputs]`` (``columns`` None) or gathered at
        ``columns``; None for the paper's centring."""
        g, pre = self.g, self.pre
        if pre.input_offset is None:
            return None
        if self._offset_const is None:  # one initializer, however many times the graph reads it
            self._offset_const = g.const(pre.input_offset.astype(np.float32), "input_offset")
        if columns is None:
            return g.op("Unsqueeze", self._offset_const, g.const([0], dtype=np.int64))
        return g.op("Gather", self._offset_const, columns, axis=0)

    def _first_product(self, rows: "_Rows") -> str:
        """``centred @ W_0ᵀ`` ``[B, hidden[0]]``.  Sparse rows are scattered into a dense ``[B, n_inputs]``
        matrix first: one dense MatMul keeps memory at O(B·n_inputs) whatever the rows' lengths (gathering
        weight rows would need O(B·K_max·hidden), ruinous for batches of long and short rows)."""
        g = self.g
        weight_t = g.const(np.ascontiguousarray(self.layers[0].weight.T), "W0T")          # [n_inputs, H1]
        centred = rows.centred if rows.indices is None else \
            self._scatter_sum(self._batch(rows.indices), self.n_inputs, rows.indices, rows.centred)
        return g.op("MatMul", centred, weight_t)

    def _batch(self, value: str) -> str:
        g = self.g
        return g.op("Slice", g.op("Shape", value), g.const([0], dtype=np.int64), g.const([1], dtype=np.int64))

    def _seen(self, rows: "_Rows") -> str:
        """Boolean ``[B, n_inputs]``: the entries known in each row."""
        g = self.g
        if rows.indices is None:
            return g.op("Greater", rows.weight, g.const(0.0))
        return g.op("Greater", self._scatter_sum(self._batch(rows.indices), self.n_inputs, rows.indices, rows.weight),
                    g.const(0.0))

    def _scatter_sum(self, batch: str, width: int, indices: str, updates: str) -> str:
        """Sum ``updates`` into a zero ``[batch, width]`` matrix at ``indices`` along axis 1."""
        g = self.g
        shape = g.op("Concat", batch, g.const([width], dtype=np.int64), axis=0)
        zeros = g.op("ConstantOfShape", shape, value=self.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
        return g.op("ScatterElements", zeros, indices, updates, axis=1, reduction="add")

    # ------------------------------------------------------------------ network
    def _with_side(self, h: str, features: str | None) -> str:
        return h if features is None else self.g.op("Concat", h, features, axis=1)

    def _stacked_weight(self, layer: Any) -> np.ndarray:
        """``[W | V]``: the layer's weight with its side weight appended (side concatenated to the input)."""
        return layer.weight if layer.side_weight is None else np.concatenate([layer.weight, layer.side_weight], 1)

    def _encode(self, rows: "_Rows", features: str | None) -> str:
        g = self.g
        first = self.layers[0]
        z = g.op("Add", self._first_product(rows), g.const(first.bias, "b"))
        if features is not None:
            z = g.op("Add", z, g.op("Gemm", features, g.const(first.side_weight, "V"), transB=1))
        h = g.op("Tanh", z)
        for layer in self.layers[1:-1]:
            h = g.op("Tanh", g.op("Gemm", self._with_side(h, features), g.const(self._stacked_weight(layer), "W"),
                                  g.const(layer.bias, "b"), transB=1))
        return h

    def _to_ratings(self, out: str, mean: str, offset: str | None = None) -> str:
        return self._clip(self._to_unclipped(out, mean, offset))

    def _to_unclipped(self, out: str, mean: str, offset: str | None = None) -> str:
        """Centring and scaling undone, not yet clipped to the scale (the ranking's tie-breaker);
        ``offset``: the outputs' input offsets (``centring="bias"``).  The graph form of
        :meth:`cfn_fast.preprocessing.Preprocessing.invert`, the one inversion (same terms, same order)."""
        g, pre = self.g, self.pre
        offsets = mean if offset is None else g.op("Add", mean, offset)
        unit = g.op("Add", out, offsets)
        return g.op("Add", g.const(pre.mid), g.op("Mul", g.const(pre.half_range), unit))

    def _clip(self, rating: str) -> str:
        return self.g.op("Clip", rating, self.g.const(self.pre.low), self.g.const(self.pre.high))

    def _input_means(self) -> np.ndarray:
        return input_mean_rating(self.rt, np.arange(self.n_inputs)).astype(np.float32)

    def _cold_fallback(self, ratings: str, count: str, columns: str | None = None) -> str:
        """Rows with no known rating and no side information: each input's mean rating (as CFN.predict);
        ``columns`` selects the inputs (all of them when ``None``)."""
        if self.side_dim:
            return ratings
        g = self.g
        if columns is None:
            means = g.const(self._input_means()[None, :], "input_mean_rating")
        else:
            means = g.op("Gather", g.const(self._input_means(), "input_mean_rating"), columns, axis=0)
        return g.op("Where", g.op("Equal", count, g.const(0.0)), means, ratings)

    # ------------------------------------------------------------------ the graphs
    def reconstruct(self, input_format: str) -> None:
        T = self.onnx.TensorProto
        rows = self._rows(input_format)
        features = self._features(rows)
        codes = self._encode(rows, features)
        out = self._full_output(codes, features)
        rated = self._cold_fallback(self._to_ratings(out, rows.mean, self._input_offset(None)), rows.count)
        self._output(rated, "predictions", T.FLOAT, ["batch", self.n_inputs])
        self._output(codes, "codes", T.FLOAT, ["batch", int(self.layers[-1].weight.shape[1])])

    def _full_output(self, codes: str, features: str | None) -> str:
        last = self.layers[-1]
        g = self.g
        return g.op("Tanh", g.op("Gemm", self._with_side(codes, features), g.const(self._stacked_weight(last), "W"),
                                 g.const(last.bias, "b"), transB=1))

    def predict(self, input_format: str) -> None:
        g, T = self.g, self.onnx.TensorProto
        rows = self._rows(input_format)
        features = self._features(rows)
        columns = self._input("columns", T.INT64, ["batch", "columns"])
        columns = self._refuse_unless(self._same_batch(columns, rows.batch_of), columns,
                                      "columns: one row per row of the ratings (the same batch size)")
        columns = self._within(columns, self.n_inputs, "columns: indices", padded=False)
        codes = self._with_side(self._encode(rows, features), features)         # [B, H(+S)]
        last = self.layers[-1]
        weight = g.op("Gather", g.const(self._stacked_weight(last), "W"), columns, axis=0)   # [B, C, H(+S)]
        z = g.op("Squeeze", g.op("MatMul", weight, g.op("Unsqueeze", codes, g.const([2], dtype=np.int64))),
                 g.const([2], dtype=np.int64))                                   # [B, C]
        z = g.op("Add", z, g.op("Gather", g.const(last.bias, "b"), columns, axis=0))
        rated = self._cold_fallback(self._to_ratings(g.op("Tanh", z), rows.mean, self._input_offset(columns)),
                                    rows.count, columns)
        self._output(rated, "predictions", T.FLOAT, ["batch", "columns"])

    def recommend(self, input_format: str) -> None:
        if self.network.kind == "user":
            self._recommend_user_cfn(input_format)
        else:
            self._recommend_item_cfn()

    def _top_k(self, unclipped: str, excluded: str, support: np.ndarray) -> None:
        """TopK on the unclipped scores: ranking by the clipped score with ties broken by the unclipped one
        (as :func:`cfn_fast.fitted.ranking.top_n`) is ranking by the unclipped score, clipping being monotone.
        Candidates with fewer than ``min_support`` training ratings are excluded like seen ones."""
        g, T = self.g, self.onnx.TensorProto
        k = self._input("k", T.INT64, [1])
        min_support = self._input("min_support", T.INT64, [1])
        self.g.initializers.append(self.onnx.numpy_helper.from_array(
            np.array([DEFAULT_MIN_SUPPORT], dtype=np.int64), "min_support"))  # an overridable default
        rare = g.op("Less", g.const(np.asarray(support, dtype=np.int64)[None, :], "support", dtype=np.int64),
                    min_support)
        masked = g.op("Where", g.op("Or", excluded, rare), g.const(-np.inf), unclipped)
        values, indices = g.op("TopK", masked, k, outputs=2, axis=-1, largest=1, sorted=1)
        self._output(indices, "top_indices", T.INT64, ["batch", "k"])
        excluded_slot = g.op("IsInf", values, detect_negative=1, detect_positive=0)  # fewer than k candidates
        self._output(g.op("Where", excluded_slot, values, self._clip(values)), "top_scores", T.FLOAT, ["batch", "k"])

    def _recommend_user_cfn(self, input_format: str) -> None:
        rows = self._rows(input_format)
        features = self._features(rows)
        out = self._full_output(self._encode(rows, features), features)
        unclipped = self._cold_fallback(self._to_unclipped(out, rows.mean, self._input_offset(None)), rows.count)
        self._top_k(unclipped, self._seen(rows), np.bincount(self.train.item, minlength=self.n_inputs))

    def _recommend_item_cfn(self) -> None:
        """Scores of every item for the given users: the output columns ``users`` of the items' codes."""
        g, T, pre = self.g, self.onnx.TensorProto, self.pre
        users = self._within(self._input("users", T.INT64, ["batch"]), self.n_inputs, "users: indices", padded=False)
        exclude = self._input("exclude", T.INT64, ["batch", "excluded"])
        exclude = self._refuse_unless(self._same_batch(exclude, users), exclude,
                                      "exclude: one row per user (the same batch size as users)")
        items = np.asarray(encode(self.rt), dtype=np.float32)                    # [n_items, H]
        exclude = self._within(exclude, items.shape[0], "exclude: item indices", padded=True)
        if self.side_dim:
            items = np.concatenate([items, self.network.side], axis=1)
        last = self.layers[-1]
        weight = g.op("Gather", g.const(self._stacked_weight(last), "W"), users, axis=0)      # [B, H(+S)]
        z = g.op("Gemm", weight, g.const(items, "item_codes"), transB=1)                      # [B, n_items]
        z = g.op("Add", z, g.op("Unsqueeze", g.op("Gather", g.const(last.bias, "b"), users, axis=0),
                                g.const([1], dtype=np.int64)))
        user_offset = self._input_offset(users)
        if user_offset is not None:
            user_offset = g.op("Unsqueeze", user_offset, g.const([1], dtype=np.int64))       # [B, 1]
        rated = self._to_unclipped(g.op("Tanh", z), g.const(pre.sample_mean[None, :], "item_mean"), user_offset)
        n_items = items.shape[0]
        cold = (pre.sample_count == 0) if self.side_dim == 0 else np.zeros(n_items, dtype=bool)
        if cold.any():
            user_means = g.op("Unsqueeze", g.op("Gather", g.const(self._input_means(), "user_mean_rating"),
                                                users, axis=0), g.const([1], dtype=np.int64))
            rated = g.op("Where", g.const(cold[None, :], "cold_item", dtype=bool), user_means, rated)
        valid = g.op("GreaterOrEqual", exclude, g.const(0, dtype=np.int64))
        safe = g.op("Where", valid, exclude, g.const(0, dtype=np.int64))
        hits = self._scatter_sum(g.op("Shape", users), n_items, safe, g.op("Cast", valid, to=T.FLOAT))
        self._top_k(rated, g.op("Greater", hits, g.const(0.0)), pre.sample_count)

    # ------------------------------------------------------------------ the model
    def model_proto(self, graph: str, input_format: str) -> Any:
        getattr(self, graph)(input_format)
        helper = self.onnx.helper
        body = helper.make_graph(self.g.nodes, f"cfn_{graph}", self.inputs, self.outputs, self.g.initializers,
                                 doc_string=__doc__.split("\n\n")[0])
        proto = helper.make_model(body, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="cfn_fast", ir_version=_IR_VERSION,
                                  doc_string=f"CFN {graph} graph; see cfn_fast.export.onnx for its contract")
        helper.set_model_props(proto, self._metadata(graph, input_format))
        self.onnx.checker.check_model(proto)
        return proto

    def _metadata(self, graph: str, input_format: str) -> dict[str, str]:
        pre, train, kind = self.pre, self.train, self.network.kind
        input_ids, sample_ids = (train.item_ids, train.user_ids) if kind == "user" else \
            (train.user_ids, train.item_ids)
        meta = {"cfn_kind": kind, "graph": graph, "input_format": input_format,
                "scale": json.dumps([pre.low, pre.high]), "n_inputs": str(self.n_inputs),
                "side_dim": str(self.side_dim),
                "hidden": json.dumps([int(layer.weight.shape[0]) for layer in self.layers[:-1]]),
                "inputs_are": "items" if kind == "user" else "users",
                "input_ids": json.dumps(input_ids.tolist())}
        if graph == "recommend" and kind == "item":
            meta["item_ids"] = json.dumps(sample_ids.tolist())
        return meta


def build_onnx(rt: Runtime, graph: str = "predict", *, input_format: str = "dense") -> Any:
    """The ``onnx.ModelProto`` of ``graph`` for a fitted model's runtime (checked with ``onnx.checker``)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {', '.join(map(repr, GRAPHS))}, got {graph!r}")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be 'dense' or 'sparse', got {input_format!r}")
    return _Exporter(rt, _onnx()).model_proto(graph, input_format)


def export_onnx(rt: Runtime, path: str | Path, graph: str = "predict", *, input_format: str = "dense") -> Path:
    """Write :func:`build_onnx`'s model to ``path`` atomically (see :mod:`cfn_fast.fileio`)."""
    proto = build_onnx(rt, graph, input_format=input_format)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; give a file name such as model.onnx")
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    with atomic_write(path) as fh:  # umask / kept mode, temporaries cleaned (cfn_fast.fileio)
        fh.write(proto.SerializeToString())
    return path
