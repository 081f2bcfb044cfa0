"""The ``cfn export`` subcommand.

    cfn export --model M --onnx out.onnx [--graph predict|reconstruct|recommend]
               [--input-format dense|sparse] [--member K] [--json]

Writes the saved model as an ONNX graph (see :mod:`cfn_fast.export.onnx` for each graph's inputs and
outputs, :mod:`cfn_fast.export.onnx_blend` for a blend's); needs the ``onnx`` extra.  A blend exports its
``predict`` and ``recommend`` graphs over training indices, or with ``--member K`` its network ``K`` alone
(as ``CFN.to_onnx(member=K)``).  Prints the graph's inputs and outputs.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from cfn_fast.export import GRAPHS

from .common import MODEL_HELP, add_common_options, command
from .errors import UsageError
from .files import check_writable_outputs

__all__ = ["export"]


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a saved model as an ONNX graph (pip install 'cfn_fast[onnx]')")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--graph", choices=GRAPHS, default="predict",
                   help="predict: ratings of requested columns; reconstruct: every column and the codes; "
                        "recommend: top-k with TopK, seen entries excluded (default predict)")
    p.add_argument("--input-format", choices=("dense", "sparse"), default="dense",
                   help="rating rows as a dense NaN-padded matrix or as padded indices + values (no effect on a "
                        "blend's graphs, which take training indices)")
    p.add_argument("--member", type=int, default=None, metavar="K",
                   help="a blend's network K alone, with the row graphs of one network (default: the whole blend)")
    add_common_options(p)


@command("export", _export_parser)
def export(args: argparse.Namespace) -> dict:
    from cfn_fast.export.onnx_graph import load_onnx
    from cfn_fast.model import CFN
    check_writable_outputs({"--onnx": args.onnx}, {"--model": args.model})
    model = CFN.load(args.model, backend="numpy")  # export reads the canonical layers: no engine choice needed
    blend = model.blend_
    if args.member is not None and blend is None:
        raise UsageError(f"--member K names a network of a blend; this model is {_network(model.kind_)}: "
                         f"leave --member out")
    path = model.to_onnx(args.onnx, graph=args.graph, member=args.member, input_format=args.input_format)
    graph = load_onnx().load(str(path)).graph
    inputs, outputs = (_describe(v) for v in (graph.input, graph.output))
    if blend is None:
        what = _network(model.kind_)
    elif args.member is None:
        what = f"a blend of the bias model and {len(blend.weights)} network(s)" + \
            (f" and {int(np.count_nonzero(blend.factor_weights['pairs']))} factor member(s)"
             if np.any(blend.factor_weights["pairs"]) else "")
    else:
        what = f"network {args.member} of a blend, {_network(blend.member_params[args.member]['kind'])}"
    if not args.json:
        print(f"wrote {path} ({args.graph} graph of {what})")
        for role, values in (("input", inputs), ("output", outputs)):
            for v in values:
                print(f"  {role:6s} {v['name']:12s} {v['dtype']:7s} {v['shape']}")
    return {"command": "export", "model": str(args.model), "onnx": str(path), "graph": args.graph,
            "input_format": args.input_format, "member": args.member, "inputs": inputs, "outputs": outputs}


def _network(kind: str) -> str:
    return "a U-CFN" if kind == "user" else "an I-CFN"


def _describe(values: Any) -> list[dict]:
    import onnx
    out = []
    for v in values:
        tensor = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                    "shape": shape})
    return out
