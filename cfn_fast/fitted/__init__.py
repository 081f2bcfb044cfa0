"""The fitted model as one value (:class:`Fitted`), its runtime, and every function over it: scoring,
recommending, folding in, encode / decode, pickling and the model file."""
from .runtime import DeviceOutOfMemory, NotFittedError, Runtime
from .value import Fitted, Network

__all__ = ["Fitted", "Network", "Runtime", "NotFittedError", "DeviceOutOfMemory"]
