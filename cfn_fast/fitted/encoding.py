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
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

from .. import interop
from ..data.side_info import as_feature_matrix
from ..data.sparse_input import stored_entries
from .runtime import Runtime
from .scoring import as_index, input_mean_rating

__all__ = ["encode", "decode", "centred_rows", "stream_scope"]

#: what to do about explicit zeros in sparse rows (the end of the error's sentence)
ZEROS_IN_ROWS = ("drop them with rows.eliminate_zeros(), or, if 0 is a rating, pass dense rows (NaN for an "
                 "unknown rating)")


@contextmanager
def stream_scope(rt: Runtime, stream: Any) -> Iterator[None]:
    """Run the model's engine calls on the caller's CUDA ``stream`` (engines on a CUDA device only)."""
    if stream is None:
        yield
        return
    if rt.engine.device != "cuda":
        raise ValueError(f"stream= applies to the cuda backend; this model runs on {rt.backend!r} "
                         f"(pass stream=None)")
    with interop.caller_stream(stream):
        yield


def centred_rows(rt: Runtime, rows: Any) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(network input CSR, per-row unit means)`` of rating rows over the model's inputs.

    ``rows``: a SciPy sparse matrix (stored entries are the known ratings; a (row, column) stored twice and
    explicit zeros are errors, :mod:`cfn_fast.data.sparse_input`) or a dense array (NaN marks an unknown
    rating), shape ``(n, n_inputs)`` or ``(n_inputs,)`` for one row, in rating units.  Each row is scaled and
    centred by its own mean, as at fold-in; a row with no ratings is centred by the global training mean.
    """
    pre = rt.network.preprocessing
    n_inputs = rt.network.n_inputs
    rows = interop.to_host(rows)
    if sp.issparse(rows):
        if rows.dtype.kind not in "iufb":
            raise TypeError(f"rows must hold numbers, got dtype {rows.dtype}")
        coo = stored_entries(rows, "rows", zeros_hint=ZEROS_IN_ROWS)
        matrix = sp.csr_matrix((coo.data, (coo.row, coo.col)), shape=coo.shape)  # distinct entries: none summed
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
    what = rt.network.input_side + "s"
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


def rows_side(rt: Runtime, features: Any, n_rows: int) -> np.ndarray | None:
    """Side information of ``n_rows`` rows given to encode / decode, checked against the model's."""
    net = rt.network
    what = net.sample_side
    if net.side is None:
        if features is not None:
            raise ValueError(f"this model was trained without {what} side information; pass features=None")
        return None
    if features is None:
        raise ValueError(f"this model uses {net.side_dim} {what} features: pass features= "
                         f"(an array of shape ({n_rows}, {net.side_dim}))")
    side = as_feature_matrix(features, n_rows, "features")
    if side.shape[1] != net.side_dim:
        raise ValueError(f"features must have {net.side_dim} columns (the model's {what} features), "
                         f"got {side.shape[1]}")
    return side


def _wants_device(rt: Runtime, output: str, like: interop.Origin) -> bool:
    return rt.engine.device == "cuda" and (output == "cupy" or (output == "like" and like.device == "cuda"))


def encode(rt: Runtime, rows: Any = None, features: Any = None, *, return_means: bool = False,
           output: str = "numpy", stream: Any = None) -> Any:
    """See :meth:`cfn_fast.CFN.encode`."""
    rt.require_whole("encode hands out codes of the whole network")
    interop.check_output(output)
    # everything, device->host copies of the caller's arrays included, runs on the caller's stream
    with stream_scope(rt, stream), rt.memory_guard("encoding"):
        codes, means = _encode(rt, rows, features, output, interop.origin_of(rows))
    return (codes, means) if return_means else codes


def _encode(rt: Runtime, rows: Any, features: Any, output: str, like: interop.Origin) -> tuple[Any, Any]:
    net = rt.network
    if rows is None:
        if features is not None:
            raise ValueError("features= goes with rows=; without rows the training samples' own side "
                             "information is used")
        inputs, side, means = net.inputs, net.side, net.preprocessing.sample_mean
    else:
        inputs, means = centred_rows(rt, rows)
        side = rows_side(rt, features, inputs.shape[0])
    if net.side is None:  # nothing to predict an empty row from: mark it for decode's fallback
        means = np.where(np.diff(inputs.indptr) > 0, means, np.float32(np.nan))
    if _wants_device(rt, output, like):
        codes = rt.engine.encode(inputs, side, on_device=True)
    else:
        codes = rt.engine.encode(inputs, side)
    return (interop.to_output(codes, output, like),
            interop.to_output(np.asarray(means, dtype=np.float32), output, like))


def decode(rt: Runtime, codes: Any, features: Any = None, cols: Any = None, *, means: Any = None,
           output: str = "numpy", stream: Any = None) -> Any:
    """See :meth:`cfn_fast.CFN.decode`."""
    rt.require_whole("decode runs the whole output layer")
    interop.check_output(output)
    with stream_scope(rt, stream), rt.memory_guard("decoding"):
        return _decode(rt, codes, features, cols, means, output, interop.origin_of(codes))


def _decode(rt: Runtime, codes: Any, features: Any, cols: Any, means: Any, output: str,
            like: interop.Origin) -> Any:
    net = rt.network
    width = net.layers[-1].weight.shape[1]
    on_device = rt.engine.device == "cuda" and interop.is_device_array(codes)
    if on_device:
        codes = interop.to_device(codes)  # a view of the caller's device memory when already float32
        xp = interop.cupy_module()
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
    columns = None if cols is None else as_index(cols, net.n_inputs, "output column")
    side = rows_side(rt, features, codes.shape[0])
    if means is not None:
        means = np.asarray(interop.to_host(means), dtype=np.float64).reshape(-1)
        if means.shape != (codes.shape[0],):
            raise ValueError(f"means must hold one value per row of codes ({codes.shape[0]}), got {means.shape}")
    if rt.engine.device == "cuda":
        out = rt.engine.decode(codes, side, columns, on_device=on_device or _wants_device(rt, output, like))
    else:
        out = rt.engine.decode(codes, side, columns)
    if means is not None:
        xp = interop.cupy_module() if interop.library_of(out) == "cupy" else np
        out = _to_ratings(rt, out, means, columns, xp)
    return interop.to_output(out, output, like)


def _to_ratings(rt: Runtime, out: Any, means: np.ndarray, columns: np.ndarray | None, xp: Any) -> Any:
    """Undo centring and scaling (rating units, clipped), as predictions are made; rows whose mean is NaN
    (no rating, no side information) get each input's mean training rating, as ``predict`` does."""
    pre = rt.network.preprocessing
    empty = np.isnan(means)
    offsets = xp.asarray(np.where(empty, 0.0, means))[:, None]
    input_offset = pre.input_offsets(columns)
    if input_offset is not None:  # a vector to the device, not a (rows x columns) grid
        offsets = offsets + xp.asarray(input_offset)[None, :]
    ratings = pre.invert(out, offsets, xp)[0]
    if empty.any():
        fallback = input_mean_rating(rt, np.arange(rt.network.n_inputs) if columns is None else columns)
        ratings[xp.asarray(np.flatnonzero(empty))] = xp.asarray(fallback)[None, :]
    return ratings

