"""The fitted model as one value: what training produced, nothing that runs.

A :class:`Fitted` holds the training ratings (ids, scale, side information), the trained
:class:`Network` s and the training record.  Everything after ``fit`` takes it: scoring, recommending
and folding in (:mod:`cfn_fast.fitted.scoring`, :mod:`~cfn_fast.fitted.foldin`), encode / decode
(:mod:`~cfn_fast.fitted.encoding`), pickling and the model file (:mod:`~cfn_fast.fitted.state`,
:mod:`~cfn_fast.fitted.persistence`) and the ONNX export; an engine to run it on is bound by
:class:`~cfn_fast.fitted.runtime.Runtime`.

A blend (``CFN(kind="blend")``, the default) holds several member networks (each with its own kind,
preprocessing and settings) beside one training set, and a :class:`Blend`: the bias model and the weights of
each member's departure from it.  A single-network model has ``blend=None`` and reaches its network as
:attr:`Fitted.network`.  A network's ``layers`` is a list of :class:`~cfn_fast.network.Layer`, or, for a network
too large for one process, a :class:`~cfn_fast.sharding.parts.ShardedLayers` that hands out one shard's part at a
time and refuses whole-network access.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.ratings import RatingSet
from ..network import Layer
from ..preprocessing import Preprocessing
from ..settings import BLEND
from ..sharding.parts import ShardedLayers
from ..training.blending import Blend
from ..training.selection import KindChoice
from ..training.trainer import EpochRecord

__all__ = ["Network", "Fitted", "Blend"]


@dataclass
class Network:
    """One trained autoencoder: its kind, the preprocessing of its values, the samples x inputs CSR it
    was trained on (centred unit ratings), the samples' side information, and its parameters."""

    kind: str
    preprocessing: Preprocessing
    inputs: sp.csr_matrix
    side: np.ndarray | None
    layers: Sequence[Layer]

    @property
    def n_inputs(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def side_dim(self) -> int:
        return 0 if self.side is None else int(self.side.shape[1])

    @property
    def hidden(self) -> tuple[int, ...]:
        if isinstance(self.layers, ShardedLayers):
            return self.layers.hidden
        return tuple(int(layer.weight.shape[0]) for layer in self.layers[:-1])

    @property
    def kept_sharded(self) -> bool:
        """Whether the network is kept sharded (too large for one process; :mod:`cfn_fast.sharding.parts`)."""
        return isinstance(self.layers, ShardedLayers)

    @property
    def sample_side(self) -> str:
        """``"user"`` for U-CFN, ``"item"`` for I-CFN: what one row of ``inputs`` is."""
        return self.kind

    @property
    def input_side(self) -> str:
        return "item" if self.kind == "user" else "user"


@dataclass
class Fitted:
    """A fitted CFN: the training set, its network(s), and the record of training."""

    train: RatingSet
    networks: tuple[Network, ...]
    history: list[EpochRecord] = field(default_factory=list)
    epochs_trained: int = 0
    best_epoch: int | None = None
    selection: KindChoice | None = None
    profile: Any = None     # a cfn_fast.profiling.Profile when trained with profile=True
    blend: Blend | None = None

    @property
    def network(self) -> Network:
        """The model's one network (a blend raises: name a member)."""
        if self.blend is not None or len(self.networks) != 1:
            raise ValueError(f"this model is a blend of a bias model and {len(self.networks)} network(s): name "
                             f"the member to use (member=k, or model.member(k); model.blend_ lists them)")
        return self.networks[0]

    @property
    def kind(self) -> str:
        return BLEND if self.blend is not None else self.network.kind
