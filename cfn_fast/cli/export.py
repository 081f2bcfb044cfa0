"""The ``cfn export`` subcommand.

    cfn export --model M --onnx out.onnx [--graph predict|reconstruct|recommend]
               [--input-format dense|sparse] [--json]

Writes the saved model's network as an ONNX graph (see :mod:`cfn_fast.export.onnx` for each graph's
inputs and outputs); needs the ``onnx`` extra.  Prints the graph's inputs and outputs.
"""
from __future__ import annotations

import argparse
from typing import Any

from cfn_fast.export import GRAPHS

from .common import add_common_options, command
from .files import check_writable_outputs

__all__ = ["export"]


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a saved model as an ONNX graph (pip install 'cfn_fast[onnx]')")
    p.add_argument("--model", required=True, help="model file written by `cfn fit --save` or CFN.save")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--graph", choices=GRAPHS, default="predict",
                   help="predict: ratings of requested columns; reconstruct: every column and the codes; "
                        "recommend: top-k with TopK, seen entries excluded (default predict)")
    p.add_argument("--input-format", choices=("dense", "sparse"), default="dense",
                   help="rating rows as a dense NaN-padded matrix or as padded indices + values")
    add_common_options(p)


@command("export", _export_parser)
def export(args: argparse.Namespace) -> dict:
    from cfn_fast.export.onnx import build_onnx, export_onnx
    from cfn_fast.model import CFN
    check_writable_outputs({"--onnx": args.onnx}, {"--model": args.model})
    model = CFN.load(args.model, backend="numpy")  # export reads the canonical layers: no engine choice needed
    path = export_onnx(model.runtime_, args.onnx, graph=args.graph, input_format=args.input_format)
    graph = build_onnx(model.runtime_, args.graph, input_format=args.input_format).graph
    inputs, outputs = (_describe(v) for v in (graph.input, graph.output))
    if not args.json:
        print(f"wrote {path} ({args.graph} graph of {'a U' if model.kind_ == 'user' else 'an I'}-CFN)")
        for role, values in (("input", inputs), ("output", outputs)):
            for v in values:
                print(f"  {role:6s} {v['name']:12s} {v['dtype']:7s} {v['shape']}")
    return {"command": "export", "model": str(args.model), "onnx": str(path), "graph": args.graph,
            "input_format": args.input_format, "inputs": inputs, "outputs": outputs}


def _describe(values: Any) -> list[dict]:
    import onnx
    out = []
    for v in values:
        tensor = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                    "shape": shape})
    return out
