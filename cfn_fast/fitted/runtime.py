"""A :class:`~cfn_fast.fitted.value.Fitted` value bound to an engine: what scoring runs on.

The engine (compiled Cython state, CUDA buffers) is built lazily from the canonical layers, once,
however many threads ask at once; the inference caches (item codes, input means, the seen matrix) are
kept beside it.  Neither is ever pickled nor saved: a model travels as its fitted value and gets a new
runtime where it lands (:func:`cfn_fast.backends.fallback_backend` says on which backend).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from .. import settings
from ..backends import resolve_backend, trains_dropout
from ..backends.base import Engine, TrainConfig
from ..engine import make_engine
from ..network import Layer
from ..sharding.engine import ShardedEngine
from ..sharding.inference import PartsEngine
from ..sharding.parts import ShardedLayers
from ..sharding.plan import ShardPlan
from .value import Fitted

__all__ = ["Runtime", "NotFittedError", "DeviceOutOfMemory"]


class NotFittedError(RuntimeError):
    """The model must be fitted before this call."""


class DeviceOutOfMemory(MemoryError, RuntimeError):
    """An engine ran out of (GPU) memory.  Raised instead of CuPy's ``OutOfMemoryError``; names the
    data size and suggests a smaller ``batch_size`` / ``hidden`` or the ``cpu`` backend."""


class Runtime:
    """``fitted`` on ``backend``, its engine built from the canonical layers with ``config``; with ``sharding``,
    a :class:`~cfn_fast.sharding.engine.ShardedEngine` that trains on that many workers."""

    def __init__(self, fitted: Fitted, backend: str, config: TrainConfig, engine: Engine | None = None,
                 members: tuple["Runtime", ...] | None = None, sharding: ShardPlan | None = None) -> None:
        self.fitted = fitted
        self.sharding = sharding
        self.backend = backend
        self.config = config
        self._engine = engine
        self._members = members   # a blend's: its members' runtimes when they are at hand (after fit)
        self._caches: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def network(self) -> Any:
        return self.fitted.network

    @property
    def members(self) -> tuple["Runtime", ...]:
        """A blend's networks, each bound to an engine of its own with its member's settings (built once);
        empty for a single network."""
        members = self._members
        if members is None:
            with self._lock:
                if self._members is None:
                    self._members = tuple(self._member(net, params) for net, params in
                                          zip(self.fitted.networks, self.fitted.blend.member_params)) \
                        if self.fitted.blend is not None else ()
                members = self._members
        return members

    def _member(self, network: Any, params: dict[str, Any]) -> "Runtime":
        resolved = settings.resolve(params, network.kind, settings.known_per_sample(network.inputs))
        backend = self.backend
        if resolved["dropout"] and not trains_dropout(backend):     # a dropout member stays off cuda, as alone
            backend = resolve_backend("auto", resolved["dtype"], resolved["dropout"])
        return Runtime(Fitted(self.fitted.train, (network,)), backend, settings.fitted_config(resolved))

    @property
    def engine(self) -> Engine:
        """The engine running the network (built on first use)."""
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    net, plan = self.network, self.sharding
                    # a network kept sharded is handed over as its parts' source, never copied whole;
                    # make_engine copies the layers (or the engine does, into its own layout)
                    layers = net.layers if net.kept_sharded or plan is None else [layer.copy() for layer in net.layers]
                    with self.memory_guard("building the engine"):
                        if plan is not None:
                            self._engine = ShardedEngine(layers, self.config, net.inputs, net.side,
                                                         shards=plan.shards, backend=self.backend,
                                                         address=plan.address)
                        elif net.kept_sharded:
                            self._engine = PartsEngine(layers, self.config, net.inputs, net.side)
                        else:
                            self._engine = make_engine(self.backend, layers, self.config, net.inputs, net.side)
                engine = self._engine
        return engine

    def built_layers(self) -> list[Layer]:
        """The engine, built now, and the parameters as it holds them: the network's own layers where it holds
        exactly their values (float32 storage, no kernelised weights, not sharded: it copied them), else its
        export (bfloat16 storage rounds them, kernelised weights are W * K, a sharded one gathers them)."""
        engine, layers = self.engine, self.network.layers
        exact = self.sharding is None and engine.config.dtype == "float32" and not engine.config.kernel_dim and \
            isinstance(layers, list) and all(isinstance(array, np.ndarray) and array.dtype == np.float32
                                             and array.flags.c_contiguous for layer in layers
                                             for array in layer.arrays())
        return layers if exact else engine.get_layers()

    @property
    def engine_built(self) -> bool:
        return self._engine is not None

    def reload_layers(self) -> list[Layer]:
        """The engine reloaded from the canonical float32 parameters it exports, and those parameters as it
        now holds them.  An engine may keep another representation: a lazy weight-decay scale (exact float32
        again once reloaded), or bfloat16, which loading rounds to nearest; its layers are then read back.
        Training is over when this is called: a sharded engine gathers the network and stops its workers."""
        engine = self.engine
        if isinstance(engine, ShardedEngine):
            engine.release()
        layers = engine.get_layers()
        if isinstance(layers, ShardedLayers):    # kept sharded: the shards stored their parts in a folder
            return layers
        engine.set_layers(layers)
        return layers if engine.config.dtype == "float32" else engine.get_layers()

    def require_whole(self, action: str) -> None:
        """Refuse ``action`` (what needs the whole network at once) on a network kept sharded, saying how to
        gather it (:class:`~cfn_fast.sharding.parts.NotGathered`)."""
        for net in self.fitted.networks:
            if net.kept_sharded:
                raise net.layers.refusal(action)

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """The cache entry ``name``, computed once under the lock."""
        value = self._caches.get(name)
        if value is None:
            with self._lock:
                value = self._caches.get(name)
                if value is None:
                    value = self._caches[name] = compute()
        return value

    def clear_caches(self) -> None:
        self._caches.clear()
        for member in self._members or ():
            member.clear_caches()

    @contextmanager
    def memory_guard(self, action: str) -> Iterator[None]:
        """Turn a backend's out-of-memory error (any exception class named ``OutOfMemoryError``, e.g.
        CuPy's) into :class:`DeviceOutOfMemory` naming the data size and what to try."""
        try:
            yield
        except Exception as exc:
            if not any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
                raise
            net = self.network
            inputs = net.inputs
            raise DeviceOutOfMemory(
                f"backend {self.backend!r} ran out of memory while {action}: {inputs.shape[0]:,} x "
                f"{inputs.shape[1]:,} rating matrix with {inputs.nnz:,} ratings, hidden {net.hidden}, "
                f"batch_size {self.config.batch_size}, {net.side_dim} side features. Try a smaller batch_size "
                f"or hidden, or backend='cpu' ({exc})") from exc
