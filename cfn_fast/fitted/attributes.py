"""The read-only fitted attributes of the estimator (scikit-learn's trailing underscore), over its one
:class:`~cfn_fast.fitted.value.Fitted` value and its :class:`~cfn_fast.fitted.runtime.Runtime`.

A mixin of :class:`cfn_fast.CFN`, which holds ``_fitted`` and ``_runtime``: before ``fit`` each attribute
raises ``AttributeError``.  On a blend (``kind="blend"``) the attributes of one network (``layers_``,
``centring_``, ``inputs_``, ...) raise a ``ValueError`` asking for a member (``model.member(k)``).
"""
from __future__ import annotations

from typing import Any

from .runtime import Runtime
from .value import Fitted

__all__ = ["FittedAttributes"]


class FittedAttributes:
    """``fitted_``, ``runtime_``, ``backend_``, ``engine_``, ``kind_``, ``blend_``, ``history_``, ... of a
    fitted model."""

    _fitted: Fitted | None
    _runtime: Runtime | None

    @property
    def fitted_(self) -> Fitted:
        """The fitted model as one value (:class:`~cfn_fast.fitted.value.Fitted`)."""
        return self._attr("fitted_")

    def _attr(self, name: str) -> Fitted:
        if self._fitted is None:
            raise AttributeError(f"{name}: this {type(self).__name__} is not fitted yet")
        return self._fitted

    @property
    def runtime_(self) -> Runtime:
        """The fitted value bound to its engine: what the functions of :mod:`cfn_fast.fitted` and
        :func:`cfn_fast.export.onnx.build_onnx` take."""
        self._attr("runtime_")
        return self._runtime

    @property
    def backend_(self) -> str:
        """The backend the model runs on."""
        self._attr("backend_")
        return self._runtime.backend

    @property
    def engine_(self) -> Any:
        """The backend engine holding the network (built on first use after load or unpickling)."""
        self._attr("engine_")
        return self._runtime.engine

    @engine_.setter
    def engine_(self, engine: Any) -> None:
        """Run the fitted network on another engine (e.g. a peer implementation in a benchmark)."""
        fitted = self._check_fitted()
        self._runtime = Runtime(fitted, self._runtime.backend, engine.config, engine=engine)

    kind_ = property(lambda self: self._attr("kind_").kind, doc="The kind trained (``kind='auto'`` resolved).")
    centring_ = property(lambda self: self._attr("centring_").network.preprocessing.centring,
                         doc="The centring trained: the fitted preprocessing's.")
    selection_ = property(lambda self: self._attr("selection_").selection,
                          doc="What ``kind='auto'`` chose (a KindChoice), else None.")
    history_ = property(lambda self: self._attr("history_").history, doc="One EpochRecord per epoch trained.")
    epochs_trained_ = property(lambda self: self._attr("epochs_trained_").epochs_trained)
    best_epoch_ = property(lambda self: self._attr("best_epoch_").best_epoch)
    profile_ = property(lambda self: self._attr("profile_").profile)
    train_ = property(lambda self: self._attr("train_").train, doc="The training RatingSet.")
    layers_ = property(lambda self: self._attr("layers_").network.layers, doc="Canonical float32 parameters.")
    preprocessing_ = property(lambda self: self._attr("preprocessing_").network.preprocessing)
    inputs_ = property(lambda self: self._attr("inputs_").network.inputs)
    side_ = property(lambda self: self._attr("side_").network.side)

    blend_ = property(lambda self: self._attr("blend_").blend,
                      doc="A blend's bias model, members' settings and weights, and how they were chosen (a "
                          "cfn_fast.training.blending.Blend); None for one network.")
