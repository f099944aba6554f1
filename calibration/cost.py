"""Multiply-adds per image of each Conv/Gemm/MatMul node, read from the ONNX graph's shapes."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import onnx

from calibration.quantize import QUANTIZED_OP_TYPES


def node_macs(model_path: str | os.PathLike[str], input_shape: Sequence[int],
              op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> dict[str, int]:
    """{node name: multiply-adds for one image of `input_shape` (batch dimension excluded)}.

    Only the graph is read (weights stay on disk); shapes come from ONNX shape inference with the
    input's batch fixed to 1."""
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, [1, *input_shape], strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = int(size)
    del graph.value_info[:]  # the exporter's shapes are for the size it traced at
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.output, *inferred.input]}
    weights = {init.name: list(init.dims) for init in graph.initializer}
    macs: dict[str, int] = {}
    for node in inferred.node:
        if node.op_type not in op_types:
            continue
        out = shapes.get(node.output[0])
        weight = weights.get(node.input[1])
        if not out or weight is None:
            raise ValueError(f"cannot size {node.op_type} node {node.name!r}: its output shape or weight is unknown")
        if node.op_type == "Conv":
            # Each output element costs (input channels / groups) x kernel area multiply-adds.
            macs[node.name] = math.prod(out[1:]) * math.prod(weight[1:])
        else:
            # Gemm/MatMul: each output element is a dot product over the shared dimension K.
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            k = weight[1] if transposed else weight[0]
            macs[node.name] = math.prod(out[1:]) * k
    return macs
