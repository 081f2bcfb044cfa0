"""Public encode / decode of a fitted :class:`~cfn_fast.CFN` (the work behind ``CFN.encode`` and ``CFN.decode``).

A CFN is an autoencoder over *samples* (users for U-CFN, items for I-CFN) whose *inputs* are the other
side.  ``encode`` maps rating rows in that input space to the last hidden layer's activations (the
codes); ``decode`` runs the output layer on codes.  Between the two sits exactly the preprocessing of
training and prediction (:mod:`cfn_fast.preprocessing`):

    rows (rating units) ──scale, centre by the row's mean──▶ network input ──encoder──▶ codes
    codes ──output layer──▶ centred unit outputs ──(+ mean, inverse scale, clip: with ``means=``)──▶ ratings

So ``codes, means = encode(rows, f, return_means=True); decode(codes, f, means=means)`` are the predictions
a fold-in of those rows gives, and ``encode()`` / ``decode(..., means=...)`` without rows reproduce
:meth:`CFN.predict` for the training samples.  A row with no rating in a model without side information
gets a NaN mean: the network has nothing to go on, and ``decode`` then gives each input's mean training
rating, the fallback of ``predict`` and ``fold_in``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import scipy.sparse as sp

from . import interop

if TYPE_CHECKING:  # pragma: no cover
    from .model import CFN

__all__ = ["encode", "decode", "centred_rows", "stream_scope"]


@contextmanager
def stream_scope(model: "CFN", stream: Any) -> Iterator[None]:
    """Run the model's engine calls on the caller's CUDA ``stream`` (cuda backend only)."""
    if stream is None:
        yield
        return
    if model.backend_ != "cuda":
        raise ValueError(f"stream= applies to the cuda backend; this model runs on {model.backend_!r} "
                         f"(pass stream=None)")
    with interop.caller_stream(stream):
        yield


def centred_rows(model: "CFN", rows: Any) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(network input CSR, per-row unit means)`` of rating rows over the model's inputs.

    ``rows``: a SciPy sparse matrix (stored entries are the known ratings, explicit zeros included) or a
    dense array (NaN marks an unknown rating), shape ``(n, n_inputs)`` or ``(n_inputs,)`` for one row, in
    rating units.  Each row is scaled and centred by its own mean, as at fold-in; a row with no ratings
    is centred by the global training mean.
    """
    pre = model.preprocessing_
    n_inputs = model.inputs_.shape[1]
    rows = interop.to_host(rows)
    if sp.issparse(rows):
        matrix = sp.csr_matrix(rows)
        if matrix.dtype.kind not in "iufb":
            raise TypeError(f"rows must hold numbers, got dtype {matrix.dtype}")
        matrix.sum_duplicates()
        matrix.sort_indices()
    else:
        try:
            dense = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"rows must be a numeric array or a scipy.sparse matrix, got {type(rows).__name__}") \
                from None
        dense = dense.reshape(1, -1) if dense.ndim == 1 else dense
        if dense.ndim != 2:
            raise ValueError(f"rows must be 1-D (one row) or 2-D, got shape {dense.shape}")
        known = ~np.isnan(dense)
        r, c = np.nonzero(known)
        matrix = sp.csr_matrix((dense[r, c], (r, c)), shape=dense.shape)
        matrix.sort_indices()
    what = "users" if model.kind_ == "item" else "items"
    if matrix.shape[1] != n_inputs:
        raise ValueError(f"rows must have {n_inputs} columns (the model's {what}, in training index order), "
                         f"got {matrix.shape[1]}")
    values = matrix.data.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("rows contain infinite values (use NaN for unknown ratings in dense rows)")
    outside = (values < pre.low) | (values > pre.high)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} rating(s) in rows outside the scale [{pre.low:g}, {pre.high:g}], "
                         f"e.g. {float(values[outside][0]):g}")
    unit = (values - pre.mid) / pre.half_range
    counts = np.diff(matrix.indptr)
    # by the rule of the training preprocessing and CFN.fold_in
    means = pre.row_means(unit, matrix.indices, counts)
    centred = pre.centre(unit, np.repeat(means, counts), matrix.indices)
    inputs = sp.csr_matrix((centred, matrix.indices.astype(np.int32), matrix.indptr.astype(np.int64)),
                           shape=matrix.shape)
    return inputs, means


def _side(model: "CFN", features: Any, n_rows: int) -> np.ndarray | None:
    from .model import _as_features
    what = "user" if model.kind_ == "user" else "item"
    if model.side_ is None:
        if features is not None:
            raise ValueError(f"this model was trained without {what} side information; pass features=None")
        return None
    if features is None:
        raise ValueError(f"this model uses {model.side_.shape[1]} {what} features: pass features= "
                         f"(an array of shape ({n_rows}, {model.side_.shape[1]}))")
    side = _as_features(features, n_rows, "features")
    if side.shape[1] != model.side_.shape[1]:
        raise ValueError(f"features must have {model.side_.shape[1]} columns (the model's {what} features), "
                         f"got {side.shape[1]}")
    return side


def _wants_device(model: "CFN", output: str, like: interop.Origin) -> bool:
    return model.backend_ == "cuda" and (output == "cupy" or (output == "like" and like.device == "cuda"))


def encode(model: "CFN", rows: Any = None, features: Any = None, *, return_means: bool = False,
           output: str = "numpy", stream: Any = None) -> Any:
    """See :meth:`cfn_fast.CFN.encode`."""
    model._check_fitted()
    interop.check_output(output)
    # everything, device->host copies of the caller's arrays included, runs on the caller's stream
    with stream_scope(model, stream), model._memory_guard("encoding"):
        codes, means = _encode(model, rows, features, output, interop.origin_of(rows))
    return (codes, means) if return_means else codes


def _encode(model: "CFN", rows: Any, features: Any, output: str, like: interop.Origin) -> tuple[Any, Any]:
    if rows is None:
        if features is not None:
            raise ValueError("features= goes with rows=; without rows the training samples' own side "
                             "information is used")
        inputs, side, means = model.inputs_, model.side_, model.preprocessing_.sample_mean
    else:
        inputs, means = centred_rows(model, rows)
        side = _side(model, features, inputs.shape[0])
    if model.side_ is None:  # nothing to predict an empty row from: mark it for decode's fallback
        means = np.where(np.diff(inputs.indptr) > 0, means, np.float32(np.nan))
    if _wants_device(model, output, like):
        codes = model.engine_.encode(inputs, side, on_device=True)
    else:
        codes = model.engine_.encode(inputs, side)
    return (interop.to_output(codes, output, like),
            interop.to_output(np.asarray(means, dtype=np.float32), output, like))


def decode(model: "CFN", codes: Any, features: Any = None, cols: Any = None, *, means: Any = None,
           output: str = "numpy", stream: Any = None) -> Any:
    """See :meth:`cfn_fast.CFN.decode`."""
    model._check_fitted()
    interop.check_output(output)
    with stream_scope(model, stream), model._memory_guard("decoding"):
        return _decode(model, codes, features, cols, means, output, interop.origin_of(codes))


def _decode(model: "CFN", codes: Any, features: Any, cols: Any, means: Any, output: str,
            like: interop.Origin) -> Any:
    from .model import _as_index
    width = model.layers_[-1].weight.shape[1]
    on_device = model.backend_ == "cuda" and interop.is_device_array(codes)
    if on_device:
        codes = interop.to_device(codes)  # a view of the caller's device memory when already float32
        xp = interop._cupy()
    else:
        codes = interop.to_host(codes)
        try:
            codes = np.asarray(codes, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"codes must be a numeric array of shape (n, {width}), got {type(codes).__name__}") \
                from None
        xp = np
    if codes.ndim != 2 or codes.shape[1] != width:
        raise ValueError(f"codes must have shape (n, {width}) (the last hidden layer's width), got {codes.shape}")
    if not bool(xp.isfinite(codes).all()):
        raise ValueError("codes contain NaN or infinite values")
    columns = None if cols is None else _as_index(cols, model.inputs_.shape[1], "output column")
    side = _side(model, features, codes.shape[0])
    if means is not None:
        means = np.asarray(interop.to_host(means), dtype=np.float64).reshape(-1)
        if means.shape != (codes.shape[0],):
            raise ValueError(f"means must hold one value per row of codes ({codes.shape[0]}), got {means.shape}")
    if model.backend_ == "cuda":
        out = model.engine_.decode(codes, side, columns, on_device=on_device or _wants_device(model, output, like))
    else:
        out = model.engine_.decode(codes, side, columns)
    if means is not None:
        xp = interop._cupy() if interop._library(out) == "cupy" else np
        out = _to_ratings(model, out, means, columns, xp)
    return interop.to_output(out, output, like)


def _to_ratings(model: "CFN", out: Any, means: np.ndarray, columns: np.ndarray | None, xp: Any) -> Any:
    """Undo centring and scaling (rating units, clipped), as predictions are made; rows whose mean is NaN
    (no rating, no side information) get each input's mean training rating, as ``predict`` does."""
    pre = model.preprocessing_
    empty = np.isnan(means)
    unit = out.astype(xp.float64) + xp.asarray(np.where(empty, 0.0, means))[:, None]
    offset = pre.input_offsets(columns)
    if offset is not None:  # a vector to the device, not a (rows x columns) grid
        unit += xp.asarray(offset)[None, :]
    ratings = xp.clip(pre.unclipped(unit), pre.low, pre.high)
    if empty.any():
        fallback = model._input_mean_rating(np.arange(model.inputs_.shape[1]) if columns is None else columns)
        ratings[xp.asarray(np.flatnonzero(empty))] = xp.asarray(fallback)[None, :]
    return ratings

