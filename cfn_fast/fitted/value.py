"""The fitted model as one value: what training produced, nothing that runs.

A :class:`Fitted` holds the training ratings (ids, scale, side information), the trained
:class:`Network` s and the training record.  Everything after ``fit`` takes it: scoring, recommending
and folding in (:mod:`cfn_fast.fitted.scoring`, :mod:`~cfn_fast.fitted.foldin`), encode / decode
(:mod:`~cfn_fast.fitted.encoding`), pickling and the model file (:mod:`~cfn_fast.fitted.state`,
:mod:`~cfn_fast.fitted.persistence`) and the ONNX export; an engine to run it on is bound by
:class:`~cfn_fast.fitted.runtime.Runtime`.

Shape for what comes next: ``networks`` is a tuple, so a fitted ensemble holds several member networks
(each with its own kind and preprocessing) beside one training set; a blend's bias model needs no new
type (a :class:`~cfn_fast.preprocessing.Preprocessing` with the bias centring holds one, fitted on the
training set).  A network's ``layers`` is any sequence of :class:`~cfn_fast.network.Layer`, so layers
held by other processes (sharded training) can stand behind it.  Today every model holds exactly one
network, reached as :attr:`Fitted.network`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.ratings import RatingSet
from ..network import Layer
from ..preprocessing import Preprocessing
from ..training.selection import KindChoice
from ..training.trainer import EpochRecord

__all__ = ["Network", "Fitted"]


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
        return tuple(int(layer.weight.shape[0]) for layer in self.layers[:-1])

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

    @property
    def network(self) -> Network:
        """The model's one network (a model of several raises: name a member)."""
        if len(self.networks) != 1:
            raise ValueError(f"this model holds {len(self.networks)} networks; name the member to use")
        return self.networks[0]

    @property
    def kind(self) -> str:
        return self.network.kind
