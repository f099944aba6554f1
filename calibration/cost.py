"""What keeping a node out of INT8 costs: its multiply-adds per image and weight elements, read from the ONNX
graph's shapes, and an estimate in milliseconds that counts both (at batch 1 a fully connected layer is
bound by reading its weights, not by its arithmetic)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import onnx

from calibration.quantize import QUANTIZED_OP_TYPES


def node_macs(model_path: str | os.PathLike[str], input_shape: Sequence[int],
              op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> dict[str, int]:
    """{node name: multiply-adds for one image of `input_shape` (batch dimension excluded)}."""
    return node_macs_and_weights(model_path, input_shape, op_types)[0]


def node_macs_and_weights(model_path: str | os.PathLike[str], input_shape: Sequence[int],
                          op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> tuple[dict[str, int], dict[str, int]]:
    """({node: multiply-adds per image}, {node: elements of its weight}), from one read of the file.

    Only the graph's shapes are used (external weights stay on disk); they come from ONNX shape inference
    with the input's batch fixed to 1."""
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
    elements: dict[str, int] = {}
    for node in inferred.node:
        if node.op_type not in op_types:
            continue
        out = shapes.get(node.output[0])
        weight = weights.get(node.input[1])
        if not out or weight is None:
            raise ValueError(f"cannot size {node.op_type} node {node.name!r}: its output shape or weight is unknown")
        elements[node.name] = math.prod(weight)
        if node.op_type == "Conv":
            # Each output element costs (input channels / groups) x kernel area multiply-adds.
            macs[node.name] = math.prod(out[1:]) * math.prod(weight[1:])
        else:
            # Gemm/MatMul: each output element is a dot product over the shared dimension K.
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            k = weight[1] if transposed else weight[0]
            macs[node.name] = math.prod(out[1:]) * k
    return macs, elements


@dataclass(frozen=True)
class FloatCostModel:
    """Milliseconds a node adds when it runs in FP32 instead of INT8, at batch 1: the slower of its arithmetic
    at the FP32 GEMM rate and reading its FP32 weights. The defaults were measured on the 2-core reference
    machine (benchmarks/README.md, INT8): FP32 GEMM peak 99 G multiply-adds/s (the roofline probe), and about
    30 GB/s of weights read, from what keeping fc6 (411 MB, +28% of 48 ms) and fc7 (67 MB) in FP32 cost. Only
    the ranking uses it, so the ratio of the two rates matters, not the machine's speed."""

    macs_per_s: float = 99e9
    weight_bytes_per_s: float = 30e9
    bytes_per_weight: int = 4

    def ms(self, macs: int, weight_elements: int) -> float:
        return 1000.0 * max(macs / self.macs_per_s, weight_elements * self.bytes_per_weight / self.weight_bytes_per_s)

    def to_dict(self) -> dict:
        return {**asdict(self), "formula": "max(macs / macs_per_s, weight bytes / weight_bytes_per_s), batch 1"}


def float_cost_ms(macs: dict[str, int], weight_elements: dict[str, int], model: FloatCostModel = FloatCostModel()) -> dict[str, float]:
    return {node: model.ms(count, weight_elements.get(node, 0)) for node, count in macs.items()}
