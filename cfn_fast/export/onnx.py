"""ONNX export of a fitted :class:`~cfn_fast.CFN`, built with the ``onnx`` package's helpers alone (opset 17).

The whole prediction path lives in the graph: scaling to [-1, 1], centring each row by its own mean (or,
for ``centring="bias"``, by its shrunk offset and the inputs' offsets stored in the graph), the
network (side information concatenated to every layer's input), the inverse scaling and the clipping to
the rating scale.  A serving engine (ONNX Runtime, Triton, ...) feeds ratings and gets ratings.

These are the graphs of one network.  A blend (``CFN(kind="blend")``, the default) mixes I-CFN and U-CFN
networks, which read different rows: its own graphs take training indices (:mod:`cfn_fast.export.onnx_blend`),
and ``to_onnx(..., member=k)`` exports its network ``k`` with the graphs below.

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
from ..fitted.runtime import Runtime
from ..fitted.scoring import input_mean_rating
from ..preprocessing import BIAS_SHRINKAGE
from . import GRAPHS
from .onnx_blend import BlendExporter
from .onnx_graph import OPSET, GraphParts, load_onnx

__all__ = ["export_onnx", "build_onnx", "OPSET", "INPUT_FORMATS"]

INPUT_FORMATS = ("dense", "sparse")


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


class _Exporter(GraphParts):
    """Builds one graph for one fitted network (see the module notes)."""

    def __init__(self, rt: Runtime, onnx: Any) -> None:
        self.rt = rt
        self.network = rt.network
        self.train = rt.fitted.train
        self.pre = self.network.preprocessing
        super().__init__(onnx, self.pre.low, self.pre.high)
        self._offset_const: str | None = None
        self.layers = self.network.layers
        self.n_inputs = self.network.n_inputs
        self.side_dim = self.network.side_dim

    def _features(self, rows: "_Rows") -> str | None:
        if not self.side_dim:
            return None
        features = self.add_input("features", self.onnx.TensorProto.FLOAT, ["batch", self.side_dim])
        return self.refuse_unless(self.same_batch(features, rows.batch_of), features,
                                   "features: one row per row of the ratings (the same batch size)")

    # ------------------------------------------------------------------ preprocessing
    def _rows(self, input_format: str) -> "_Rows":
        """The row inputs, centred as in training: unit scale, minus the row's mean over its known entries.

        Dense rows stay ``[B, n_inputs]``; sparse rows ``[B, K]`` (see :meth:`_first_product`)."""
        g, T, pre = self.g, self.onnx.TensorProto, self.pre
        if input_format == "dense":
            ratings = self.add_input("ratings", T.FLOAT, ["batch", self.n_inputs])
            known = g.op("Not", g.op("IsNaN", ratings))
            values, indices = g.op("Where", known, ratings, g.const(0.0)), None
        else:
            given = self.add_input("indices", T.INT64, ["batch", "known"])
            raw = self.add_input("values", T.FLOAT, ["batch", "known"])
            same_shape = self.none_of(g.op("Not", g.op("Equal", g.op("Shape", raw), g.op("Shape", given))))
            raw = self.refuse_unless(same_shape, raw, "values: must have the shape of indices")
            given = self.within(given, self.n_inputs, "indices: column indices", padded=True)
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
        counts = self.scatter_sum(self.batch(indices), self.n_inputs, indices, g.op("Cast", known, to=T.FLOAT))
        return self.refuse_unless(self.none_of(g.op("Greater", counts, g.const(1.0))), indices,
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
            self.scatter_sum(self.batch(rows.indices), self.n_inputs, rows.indices, rows.centred)
        return g.op("MatMul", centred, weight_t)

    def _seen(self, rows: "_Rows") -> str:
        """Boolean ``[B, n_inputs]``: the entries known in each row."""
        g = self.g
        if rows.indices is None:
            return g.op("Greater", rows.weight, g.const(0.0))
        return g.op("Greater", self.scatter_sum(self.batch(rows.indices), self.n_inputs, rows.indices, rows.weight),
                    g.const(0.0))

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
        return self.clip(self._to_unclipped(out, mean, offset))

    def _to_unclipped(self, out: str, mean: str, offset: str | None = None) -> str:
        """Centring and scaling undone, not yet clipped to the scale (the ranking's tie-breaker);
        ``offset``: the outputs' input offsets (``centring="bias"``).  The graph form of
        :meth:`cfn_fast.preprocessing.Preprocessing.invert`, the one inversion (same terms, same order)."""
        g, pre = self.g, self.pre
        offsets = mean if offset is None else g.op("Add", mean, offset)
        unit = g.op("Add", out, offsets)
        return g.op("Add", g.const(pre.mid), g.op("Mul", g.const(pre.half_range), unit))

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
        self.add_output(rated, "predictions", T.FLOAT, ["batch", self.n_inputs])
        self.add_output(codes, "codes", T.FLOAT, ["batch", int(self.layers[-1].weight.shape[1])])

    def _full_output(self, codes: str, features: str | None) -> str:
        last = self.layers[-1]
        g = self.g
        return g.op("Tanh", g.op("Gemm", self._with_side(codes, features), g.const(self._stacked_weight(last), "W"),
                                 g.const(last.bias, "b"), transB=1))

    def predict(self, input_format: str) -> None:
        g, T = self.g, self.onnx.TensorProto
        rows = self._rows(input_format)
        features = self._features(rows)
        columns = self.add_input("columns", T.INT64, ["batch", "columns"])
        columns = self.refuse_unless(self.same_batch(columns, rows.batch_of), columns,
                                      "columns: one row per row of the ratings (the same batch size)")
        columns = self.within(columns, self.n_inputs, "columns: indices", padded=False)
        codes = self._with_side(self._encode(rows, features), features)         # [B, H(+S)]
        last = self.layers[-1]
        weight = g.op("Gather", g.const(self._stacked_weight(last), "W"), columns, axis=0)   # [B, C, H(+S)]
        z = g.op("Squeeze", g.op("MatMul", weight, g.op("Unsqueeze", codes, g.const([2], dtype=np.int64))),
                 g.const([2], dtype=np.int64))                                   # [B, C]
        z = g.op("Add", z, g.op("Gather", g.const(last.bias, "b"), columns, axis=0))
        rated = self._cold_fallback(self._to_ratings(g.op("Tanh", z), rows.mean, self._input_offset(columns)),
                                    rows.count, columns)
        self.add_output(rated, "predictions", T.FLOAT, ["batch", "columns"])

    def recommend(self, input_format: str) -> None:
        if self.network.kind == "user":
            self._recommend_user_cfn(input_format)
        else:
            self._recommend_item_cfn()

    def _recommend_user_cfn(self, input_format: str) -> None:
        rows = self._rows(input_format)
        features = self._features(rows)
        out = self._full_output(self._encode(rows, features), features)
        unclipped = self._cold_fallback(self._to_unclipped(out, rows.mean, self._input_offset(None)), rows.count)
        self.top_k(unclipped, self._seen(rows), np.bincount(self.train.item, minlength=self.n_inputs))

    def _recommend_item_cfn(self) -> None:
        """Scores of every item for the given users: the output columns ``users`` of the items' codes."""
        g, pre = self.g, self.pre
        items = np.asarray(encode(self.rt), dtype=np.float32)                    # [n_items, H]
        users, excluded = self.users_and_exclude(self.n_inputs, items.shape[0])
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
        self.top_k(rated, excluded, pre.sample_count)

    # ------------------------------------------------------------------ the model
    def model_proto(self, graph: str, input_format: str) -> Any:
        getattr(self, graph)(input_format)
        return self.finished(graph, self._metadata(graph, input_format), __doc__.split("\n\n")[0])

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
    rt.require_whole("an ONNX graph holds the whole network")
    if rt.fitted.blend is not None:
        return BlendExporter(rt, load_onnx()).model_proto(graph)
    return _Exporter(rt, load_onnx()).model_proto(graph, input_format)


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
