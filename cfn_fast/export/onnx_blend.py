"""ONNX export of a blend (``CFN(kind="blend")``): the bias model and its member networks in one graph.

A blend mixes I-CFN networks (a row is an item's ratings over the users) and U-CFN networks (a row is a
user's ratings over the items), so no single input row feeds it: its graphs take **training indices** and
hold, for every known user and item, what a pair needs (:mod:`cfn_fast.export.onnx` has the row graphs of
one network, which ``member=k`` exports).  For each member with a weight the graph stores

* the code (last hidden layer) of each of its training samples (users for a U-CFN, items for an I-CFN),
  with the sample's side features appended when it has some, and the output layer (weights, side weights,
  bias), so the member's output for a pair is ``tanh([W | V][input] · [code | side][sample] + b[input])``;
* the centring: each sample's mean and, for ``centring="bias"``, each input's offset; the output becomes a
  rating as :meth:`~cfn_fast.preprocessing.Preprocessing.invert` does,
  ``clip(mid + half_range · (y + mean[sample] + offset[input]))``;
* for a sample with no training ratings and no side information, the fallback of
  :func:`~cfn_fast.fitted.scoring.predict_pairs`: the input's mean training rating.

and the bias model's mean and offsets.  The factor member (:class:`~cfn_fast.training.factors.Factors`), when it
has a weight, is stored as its user and item factors (float32) and a flag per user and item, true where the row is
not all zero (found on the float64 factors): a pair of known rows is predicted ``clip(low + (p_u · q_i − 1) ·
(high − low) / 4)`` (the factors' 1..5 scale mapped onto the rating scale), any other pair by the bias model, as
:meth:`~cfn_fast.training.factors.Factors.predict` does.  The blend is then
``clip(bias + Σ_k w_k · (member_k − bias) + w_f · (factors − bias))`` with ``bias = clip(μ + b_u + b_i)``
(:meth:`cfn_fast.training.blending.Blend.combine`).  A blend without networks (the bias model alone) exports
the bias model.  New users and items (fold-in) are not in the graph.

Graphs
------
``"predict"``    ``users`` int64 ``[N]`` and ``items`` int64 ``[N]`` (training indices, pairwise) →
    ``predictions`` float32 ``[N]``: :meth:`CFN.predict_indices`'s values.
``"recommend"``  ``users`` int64 ``[B]``, ``exclude`` int64 ``[B, E]`` (item indices not to recommend, e.g. each
    user's seen items, padded with ``-1``), ``k`` int64 ``[1]`` and the optional ``min_support`` int64 ``[1]``
    → ``top_indices`` int64 ``[B, k]`` and ``top_scores`` float32 ``[B, k]``, as :meth:`CFN.recommend_batch`
    (ties by the unclipped blended score, then the lower index).
``"reconstruct"`` is refused (``ValueError``): a blend has no single row to reconstruct; export one of its
    networks with ``member=k``.

``input_format`` has no effect (no rating rows come in).  Invalid indices are refused as in the row graphs
(:mod:`cfn_fast.export.onnx`, "Invalid inputs"): ``users`` in ``[0, n_users)``, ``items`` in ``[0, n_items)``
with one item per user, ``exclude`` in ``[0, n_items)`` or ``-1`` with one row per user.  The metadata holds
``cfn_kind`` ``"blend"``, the ``scale``, the ``members`` (kind, centring, hidden, side features, weight), the
``factors`` (``{"rank", "weight"}``, or ``null`` when the blend has no factor member with a weight), and the
``user_ids`` / ``item_ids`` of the training indices.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fitted.encoding import encode
from ..fitted.runtime import Runtime
from ..fitted.scoring import input_mean_rating
from ..training.factors import FACTOR_SCALE, Factors
from .onnx_graph import GraphParts

__all__ = ["BlendExporter", "MemberTables", "FactorTables"]


@dataclass(frozen=True)
class MemberTables:
    """What the graph stores of one member network, by training index (samples: users for a U-CFN, items
    for an I-CFN; inputs: the other side).  ``name`` prefixes its initializers' names."""

    name: str
    kind: str
    codes: np.ndarray               # [n_samples, H(+S)] the last hidden layer, side features appended
    weight: np.ndarray              # [n_inputs, H(+S)] the output layer [W | V]
    bias: np.ndarray                # [n_inputs]
    sample_mean: np.ndarray         # [n_samples] unit value added back (the centring)
    input_offset: np.ndarray | None  # [n_inputs] unit offsets of centring="bias", else None
    cold: np.ndarray | None         # [n_samples] samples predicted by the fallback; None when there are none
    input_means: np.ndarray         # [n_inputs] the fallback: each input's mean training rating
    mid: float
    half_range: float

    @classmethod
    def of(cls, rt: Runtime, name: str) -> "MemberTables":
        """The tables of a single-network runtime (a blend's member)."""
        net = rt.network
        pre, last = net.preprocessing, net.layers[-1]
        codes = np.asarray(encode(rt), dtype=np.float32)
        weight = np.asarray(last.weight, dtype=np.float32)
        if net.side is not None:
            codes = np.concatenate([codes, np.asarray(net.side, dtype=np.float32)], axis=1)
            weight = np.concatenate([weight, np.asarray(last.side_weight, dtype=np.float32)], axis=1)
        cold = (pre.sample_count == 0) if net.side is None else np.zeros(len(pre.sample_count), dtype=bool)
        return cls(name, net.kind, codes, weight, np.asarray(last.bias, dtype=np.float32),
                   np.asarray(pre.sample_mean, dtype=np.float32),
                   None if pre.input_offset is None else np.asarray(pre.input_offset, dtype=np.float32),
                   cold if cold.any() else None,
                   input_mean_rating(rt, np.arange(net.n_inputs)).astype(np.float32), pre.mid, pre.half_range)


@dataclass(frozen=True)
class FactorTables:
    """What the graph stores of the factor member: its factors and which rows are known (not all zero), and the
    map of its 1..5 scale onto the ratings, ``rating = low + (value − ref_low) · step``, clipped by the graph."""

    key: str                        # names its tables in the graph (factors0, factors1, ...)
    user_factors: np.ndarray        # [n_users, rank]
    item_factors: np.ndarray        # [n_items, rank]
    user_known: np.ndarray          # [n_users] bool
    item_known: np.ndarray          # [n_items] bool
    low: float
    ref_low: float
    step: float

    @classmethod
    def of(cls, factors: Factors, key: str) -> "FactorTables":
        ref_low, ref_high = FACTOR_SCALE
        low, high = float(factors.low), float(factors.high)
        return cls(key, np.asarray(factors.user_factors, dtype=np.float32),
                   np.asarray(factors.item_factors, dtype=np.float32),
                   np.asarray(factors.user_factors).any(axis=1), np.asarray(factors.item_factors).any(axis=1),
                   low, float(ref_low), (high - low) / (ref_high - ref_low))


class BlendExporter(GraphParts):
    """Builds one graph for a fitted blend (see the module notes)."""

    def __init__(self, rt: Runtime, onnx: Any) -> None:
        self.rt = rt
        self.train = rt.fitted.train
        self.blend = rt.fitted.blend
        self.model_bias = self.blend.bias
        super().__init__(onnx, self.model_bias.low, self.model_bias.high)
        self.n_users, self.n_items = int(self.train.n_users), int(self.train.n_items)
        self.consts: dict[str, str] = {}  # one initializer per table, however many times the graph reads it

    def model_proto(self, graph: str) -> Any:
        if graph == "reconstruct":
            n = len(self.rt.members)
            how = f"export one of its {n} network(s) alone with member=k, k in [0, {n}), or the blend's 'predict' " \
                  f"or 'recommend' graph" if n else \
                "this blend has no network (the bias model alone): export its 'predict' or 'recommend' graph"
            raise ValueError(f"graph 'reconstruct' completes one network's input rows, and a blend has no single "
                             f"input row (its I-CFN rows are items over users, its U-CFN rows users over items): {how}")
        members = [(float(w), MemberTables.of(member, f"member{k}"))
                   for k, (w, member) in enumerate(zip(self.blend.weights, self.rt.members)) if w]
        factors = [(float(w), FactorTables.of(f, f"factors{j}"))
                   for j, (w, f) in enumerate(zip(self.blend.factor_weights["pairs"], self.blend.factors)) if w]
        getattr(self, graph)(members, factors)
        return self.finished(graph, self._metadata(graph), __doc__.split("\n\n")[0])

    # ------------------------------------------------------------------ the graphs
    def predict(self, members: list[tuple[float, MemberTables]], factors: list[tuple[float, FactorTables]]) -> None:
        g, T = self.g, self.onnx.TensorProto
        users = self.within(self.add_input("users", T.INT64, ["pairs"]), self.n_users, "users: indices",
                            padded=False)
        items = self.add_input("items", T.INT64, ["pairs"])
        items = self.refuse_unless(self.same_batch(items, users), items,
                                   "items: one per user (the same length as users)")
        items = self.within(items, self.n_items, "items: indices", padded=False)
        bias = self.model_bias
        base = self.clip(g.op("Add", g.op("Add", g.const(bias.mean), self._gather("user_offset", bias.user_offset,
                                                                                    users)),
                              self._gather("item_offset", bias.item_offset, items)))
        ratings = [(w, self._pair_ratings(m, *((users, items) if m.kind == "user" else (items, users))))
                   for w, m in members]
        ratings += [(w, self._factor_pairs(f, base, users, items)) for w, f in factors]
        self.add_output(self.clip(self._blended(base, ratings)), "predictions", T.FLOAT, ["pairs"])

    def recommend(self, members: list[tuple[float, MemberTables]],
                  factors: list[tuple[float, FactorTables]]) -> None:
        g = self.g
        users, excluded = self.users_and_exclude(self.n_users, self.n_items)
        bias = self.model_bias
        user_offset = self._column(self._gather("user_offset", bias.user_offset, users))       # [B, 1]
        base = self.clip(g.op("Add", g.op("Add", g.const(bias.mean), user_offset),
                              g.const(bias.item_offset[None, :], "item_offset_row")))           # [B, n_items]
        ratings = [(w, self._user_cfn_scores(m, users) if m.kind == "user" else self._item_cfn_scores(m, users))
                   for w, m in members]
        ratings += [(w, self._factor_scores(f, base, users)) for w, f in factors]
        self.top_k(self._blended(base, ratings), excluded, np.bincount(self.train.item, minlength=self.n_items))

    # ------------------------------------------------------------------ pieces
    def _blended(self, base: str, ratings: list[tuple[float, str]]) -> str:
        """``base + Σ_k w_k (member_k − base)``, unclipped (the terms in the order of ``Blend.combine``)."""
        g, total = self.g, base
        for weight, rating in ratings:
            total = g.op("Add", total, g.op("Mul", g.const(weight), g.op("Sub", rating, base)))
        return total

    def _table(self, name: str, value: np.ndarray, dtype: Any = np.float32) -> str:
        """The initializer of a stored table, ``name`` unique per table (one copy however often it is read)."""
        if name not in self.consts:
            self.consts[name] = self.g.const(value, name, dtype=dtype)
        return self.consts[name]

    def _gather(self, name: str, value: np.ndarray, indices: str, dtype: Any = np.float32) -> str:
        return self.g.op("Gather", self._table(name, value, dtype), indices, axis=0)

    def _column(self, value: str) -> str:
        """``[B]`` as ``[B, 1]``."""
        return self.g.op("Unsqueeze", value, self.g.const([1], dtype=np.int64))

    def _rating(self, m: MemberTables, out: str, offsets: str) -> str:
        """The member's clipped rating: :meth:`~cfn_fast.preprocessing.Preprocessing.invert` of ``out``."""
        g = self.g
        return self.clip(g.op("Add", g.const(m.mid), g.op("Mul", g.const(m.half_range), g.op("Add", out, offsets))))

    def _pair_ratings(self, m: MemberTables, samples: str, inputs: str) -> str:
        """``[N]``: the member's ratings of (sample, input) pairs."""
        g, key = self.g, m.name
        codes = self._gather(f"{key}_codes", m.codes, samples)                       # [N, H(+S)]
        weight = self._gather(f"{key}_W", m.weight, inputs)                          # [N, H(+S)]
        z = g.op("ReduceSum", g.op("Mul", codes, weight), g.const([1], dtype=np.int64), keepdims=0)
        z = g.op("Add", z, self._gather(f"{key}_b", m.bias, inputs))
        offsets = self._gather(f"{key}_mean", m.sample_mean, samples)
        if m.input_offset is not None:
            offsets = g.op("Add", offsets, self._gather(f"{key}_offset", m.input_offset, inputs))
        rating = self._rating(m, g.op("Tanh", z), offsets)
        if m.cold is None:
            return rating
        return g.op("Where", self._gather(f"{key}_cold", m.cold, samples, bool),
                    self._gather(f"{key}_input_mean", m.input_means, inputs), rating)

    def _user_cfn_scores(self, m: MemberTables, users: str) -> str:
        """``[B, n_items]``: a U-CFN member's ratings of every item by ``users`` (its samples)."""
        g, key = self.g, m.name
        z = g.op("Gemm", self._gather(f"{key}_codes", m.codes, users), self._table(f"{key}_W", m.weight),
                 self._table(f"{key}_b", m.bias), transB=1)
        offsets = self._column(self._gather(f"{key}_mean", m.sample_mean, users))       # [B, 1]
        if m.input_offset is not None:
            offsets = g.op("Add", offsets, g.const(m.input_offset[None, :], f"{key}_offset_row"))
        rating = self._rating(m, g.op("Tanh", z), offsets)
        if m.cold is None:
            return rating
        return g.op("Where", self._column(self._gather(f"{key}_cold", m.cold, users, bool)),
                    g.const(m.input_means[None, :], f"{key}_input_mean_row"), rating)

    def _item_cfn_scores(self, m: MemberTables, users: str) -> str:
        """``[B, n_items]``: an I-CFN member's ratings of every item (its samples) by ``users`` (its inputs)."""
        g, key = self.g, m.name
        z = g.op("Gemm", self._gather(f"{key}_W", m.weight, users), self._table(f"{key}_codes", m.codes), transB=1)
        z = g.op("Add", z, self._column(self._gather(f"{key}_b", m.bias, users)))
        offsets = g.const(m.sample_mean[None, :], f"{key}_mean_row")                     # [1, n_items]
        if m.input_offset is not None:
            offsets = g.op("Add", offsets, self._column(self._gather(f"{key}_offset", m.input_offset, users)))
        rating = self._rating(m, g.op("Tanh", z), offsets)
        if m.cold is None:
            return rating
        return g.op("Where", g.const(m.cold[None, :], f"{key}_cold_row", dtype=bool),
                    self._column(self._gather(f"{key}_input_mean", m.input_means, users)), rating)

    def _factor_rating(self, f: FactorTables, value: str) -> str:
        """A value of the factors' scale as a clipped rating (:meth:`~cfn_fast.training.factors.Factors.to_rating`)."""
        g = self.g
        return self.clip(g.op("Add", g.const(f.low), g.op("Mul", g.op("Sub", value, g.const(f.ref_low)),
                                                          g.const(f.step))))

    def _factor_pairs(self, f: FactorTables, base: str, users: str, items: str) -> str:
        """``[N]``: the factor member's ratings of (user, item) pairs, the bias model's ``base`` where a row is
        unknown (:meth:`~cfn_fast.training.factors.Factors.predict`)."""
        g = self.g
        products = g.op("Mul", self._gather(f"{f.key}_user", f.user_factors, users),
                        self._gather(f"{f.key}_item", f.item_factors, items))                   # [N, rank]
        value = g.op("ReduceSum", products, g.const([1], dtype=np.int64), keepdims=0)
        known = g.op("And", self._gather(f"{f.key}_user_known", f.user_known, users, bool),
                     self._gather(f"{f.key}_item_known", f.item_known, items, bool))
        return g.op("Where", known, self._factor_rating(f, value), base)

    def _factor_scores(self, f: FactorTables, base: str, users: str) -> str:
        """``[B, n_items]``: the factor member's ratings of every item by ``users``
        (:meth:`~cfn_fast.training.factors.Factors.user_scores`)."""
        g = self.g
        value = g.op("Gemm", self._gather(f"{f.key}_user", f.user_factors, users),
                     self._table(f"{f.key}_item", f.item_factors), transB=1)                   # [B, n_items]
        known = g.op("And", self._column(self._gather(f"{f.key}_user_known", f.user_known, users, bool)),
                     g.const(f.item_known[None, :], f"{f.key}_item_known_row", dtype=bool))
        return g.op("Where", known, self._factor_rating(f, value), base)

    def _metadata(self, graph: str) -> dict[str, str]:
        train, blend = self.train, self.blend
        members = [{"kind": member.network.kind, "centring": member.network.preprocessing.centring,
                    "hidden": list(member.network.hidden), "side_dim": member.network.side_dim, "weight": float(w)}
                   for w, member in zip(blend.weights, self.rt.members)]
        factors = [{"rank": f.rank, "weight": float(w)} for w, f in zip(blend.factor_weights["pairs"], blend.factors)
                   if w]
        return {"cfn_kind": "blend", "graph": graph, "scale": json.dumps([self.low, self.high]),
                "members": json.dumps(members), "factors": json.dumps(factors),
                "n_users": str(self.n_users), "n_items": str(self.n_items),
                "user_ids": json.dumps(train.user_ids.tolist()), "item_ids": json.dumps(train.item_ids.tolist())}
