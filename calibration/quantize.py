"""Explicit Q/DQ quantization with the settings TensorRT's strongly typed networks accept."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from calibration.ranges import METHODS

QUANTIZED_OP_TYPES = ("Conv", "Gemm", "MatMul")

# int8 everywhere, symmetric (zero-point 0), per-channel weights, per-tensor activations:
# what TensorRT 10/11 parses into a strongly typed INT8 network.
_TENSORRT_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    # TensorRT keeps biases in float; int32 bias Q/DQ is not part of what it parses.
    "QuantizeBias": False,
}


def quantize_qdq(
    float_model: str | os.PathLike[str], out: str | os.PathLike[str], *, ranges_path: str | os.PathLike[str],
    method: str, exclude_nodes: Sequence[str] = (), op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> None:
    """Quantize with already-collected ranges (onnxruntime's calibration cache file): no calibration runs here."""
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime warns about optional pre-processing on every call
    try:
        quantize_static(
            str(float_model),
            str(out),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes),
            calibrate_method=METHODS[method],
            calibration_cache_path=str(ranges_path),
            extra_options=dict(_TENSORRT_OPTIONS),
        )
    finally:
        logging.getLogger().setLevel(quiet)


def qdq_properties(model_path: str | os.PathLike[str]) -> dict:
    """What TensorRT cares about in a Q/DQ graph, read back from the file."""
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    quant_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points, dtypes, per_channel_weights, per_tensor_activations = [], set(), 0, 0
    for node in quant_nodes:
        if len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            zero_points.append(int(np.abs(zp).max()) if zp.size else 0)
            dtypes.add(str(zp.dtype))
        scale = inits.get(node.input[1])
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            per_channel_weights += scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
        elif node.op_type == "QuantizeLinear" and scale is not None:
            per_tensor_activations += len(scale.dims) == 0 or (len(scale.dims) == 1 and scale.dims[0] == 1)
    quantized_ops = sorted(
        {
            n.name
            for n in model.graph.node
            if n.op_type in QUANTIZED_OP_TYPES
            and any(inp in producers and producers[inp].op_type == "DequantizeLinear" for inp in n.input[:2])
        }
    )
    return {
        "qdq_nodes": len(quant_nodes),
        "int8_only": dtypes <= {"int8"} and bool(dtypes),
        "zero_points_all_zero": bool(zero_points) and max(zero_points) == 0,
        "per_channel_weight_dequantizers": per_channel_weights,
        "per_tensor_activation_quantizers": per_tensor_activations,
        "quantized_nodes": quantized_ops,
        "float_nodes": sorted(n.name for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in quantized_ops),
    }


def node_names(model_path: str | os.PathLike[str], op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in op_types]


