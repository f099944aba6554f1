"""Explicit Q/DQ quantization with the settings TensorRT's strongly typed networks accept."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.transformers.onnx_model import OnnxModel

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


# Where Q/DQ pairs go depends on the runtime that reads the file. Graph outputs stay float for both.
PLACEMENTS = {
    # onnxruntime and OpenVINO on CPU fuse DQ -> Conv -> Q into integer kernels, so the outputs of
    # quantized ops carry Q/DQ as well as their inputs.
    "cpu": "inputs and outputs of quantized ops; graph outputs float",
    # TensorRT places Q/DQ on the inputs of the ops it runs in INT8 and picks output precisions itself.
    "tensorrt": "inputs of quantized ops only; graph outputs float",
}


def quantize_qdq(
    float_model: str | os.PathLike[str], out: str | os.PathLike[str], *, ranges_path: str | os.PathLike[str],
    method: str, exclude_nodes: Sequence[str] = (), op_types: Sequence[str] = QUANTIZED_OP_TYPES,
    placement: str = "cpu", float_inputs_for_excluded: bool = True,
) -> None:
    """Quantize with already-collected ranges (onnxruntime's calibration cache file): no calibration runs here.

    `float_inputs_for_excluded`: an excluded node also reads its input unrounded (see
    feed_excluded_nodes_float). On runtimes that fuse a quantized op only together with its output Q, that
    costs the producer its integer kernel."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown Q/DQ placement {placement!r}; choose from {', '.join(PLACEMENTS)}")
    extra = dict(_TENSORRT_OPTIONS)
    if placement == "tensorrt":
        extra["OpTypesToExcludeOutputQuantization"] = list(op_types)
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
        extra_options=extra,
    )
    keep_graph_outputs_float(out)
    if exclude_nodes and float_inputs_for_excluded:
        feed_excluded_nodes_float(out, exclude_nodes)


def keep_graph_outputs_float(model_path: str | os.PathLike[str]) -> list[str]:
    """Drop the Q/DQ pair onnxruntime's quantizer puts on a graph output (the logits would otherwise pass
    through one per-tensor int8 scale). Rewrites the file in place; returns the outputs it freed."""
    model = onnx.load(str(model_path))
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    freed, dropped = [], []
    for output in graph.output:
        dq = producers.get(output.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        # The DequantizeLinear becomes an Identity of the float tensor the QuantizeLinear read.
        identity = onnx.helper.make_node("Identity", [q.input[0]], [output.name], name=f"{output.name}_float")
        graph.node.insert(list(graph.node).index(dq), identity)
        dropped.append(dq)
        if uses.get(q.output[0], 0) == 1:
            dropped.append(q)
        freed.append(output.name)
    if freed:
        _save_without(model, dropped, model_path)
    return freed


def _save_without(model: onnx.ModelProto, dropped: list[onnx.NodeProto], model_path) -> None:
    """Remove `dropped` nodes and the initializers only they used (their scales and zero points), then save."""
    graph = model.graph
    for node in dropped:
        graph.node.remove(node)
    still_used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in still_used]:
        graph.initializer.remove(init)
    onnx.save(model, str(model_path))


# Ops between two quantized layers that the quantizer leaves in float: a rounding before them still
# reaches the next layer.
_PASS_THROUGH = ("Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Reshape", "Flatten", "Identity")


def feed_excluded_nodes_float(model_path: str | os.PathLike[str], excluded: Sequence[str]) -> list[str]:
    """Remove the activation Q/DQ pair that still rounds an excluded node's input: the one on its producer's
    output (CPU placement), reached through ReLU/pool/reshape, when nothing else reads it. Otherwise
    "fc8 kept in float" would still read fc7's int8-rounded output. Rewrites the file; returns the freed
    tensors."""
    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producers, consumers = OnnxModel(model).output_name_to_node(), OnnxModel(model).input_name_to_nodes()
    freed, dropped = [], []
    for node in graph.node:
        if node.name not in excluded or not node.input:
            continue
        tensor, reader = node.input[0], node
        while tensor in producers and producers[tensor].op_type in _PASS_THROUGH and len(consumers[tensor]) == 1:
            tensor, reader = producers[tensor].input[0], producers[tensor]
        dq = producers.get(tensor)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if (q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits or len(consumers[tensor]) != 1
                or len(consumers[q.output[0]]) != 1):
            continue
        reader.input[list(reader.input).index(tensor)] = q.input[0]
        dropped += [dq, q]
        freed.append(q.input[0])
    if freed:
        _save_without(model, dropped, model_path)
    return freed


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
    outputs = {o.name for o in model.graph.output}
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
        "quantized_graph_outputs": sorted(o for o in outputs if o in producers and producers[o].op_type == "DequantizeLinear"),
    }


def node_names(model_path: str | os.PathLike[str], op_types: Sequence[str] = QUANTIZED_OP_TYPES) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in op_types]


