"""Per-channel range equalization before INT8: an exact rewrite of the FP32 model.

Activations are quantized with one scale per tensor. When one channel of a tensor reaches 800 and most
stay below 10, the channels below get a handful of the 255 levels, and a consumer that weights them
heavily (a linear probe on standardised features does) turns that rounding into wrong answers.

For a producer P (Conv or Gemm) whose output reaches a consumer C (Conv or Gemm) only through
positively homogeneous per-channel ops (ReLU, max and average pooling, flatten), multiplying P's output
channel c (its weight row and bias) by s_c > 0 and dividing C's weights that read channel c by s_c
changes nothing in exact arithmetic. With s_c = sqrt(w_c / r_c) (r_c: the channel's largest |value| on
the calibration batches, at P's raw output and where C reads it; w_c: the largest weight C applies to it) each channel's activation range and
weight range become equal (sqrt(r_c w_c)): the balance of Nagel et al. 2019 (data-free quantization's
cross-layer equalization), with SmoothQuant's (Xiao et al. 2023) activation-aware migration at alpha 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.transformers.onnx_model import OnnxModel

# Ops between a producer and its consumer that commute with a positive per-channel scale.
PASS_THROUGH = ("Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
                "Identity")
LINEAR_OPS = ("Conv", "Gemm")
MAX_SCALE = 1e4
EXACT_TOLERANCE = 1e-4  # a channel that never fires (r_c ~ 0) is left alone rather than blown up


class NotExactError(ValueError):
    """The rewrite changed the FP32 function: a graph it does not understand. Nothing should use it."""


@dataclass(frozen=True)
class Pair:
    producer: str
    consumer: str
    tensor: str  # what the consumer reads: whose per-channel ranges set the scales
    channels: int
    group: int  # consumer input columns per producer channel (49 after a 7x7 flatten, 1 otherwise)


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Every producer -> consumer chain this rewrite keeps exact, in graph order."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = OnnxModel(model).input_name_to_nodes()
    uses = {name: len(nodes) for name, nodes in consumers.items()}
    outputs = {o.name for o in graph.output}
    constants = {**{name: numpy_helper.to_array(i) for name, i in inits.items() if len(i.dims) <= 1},
                 **{n.output[0]: numpy_helper.to_array(_attr(n, "value", None)) for n in graph.node
                    if n.op_type == "Constant" and _attr(n, "value", None) is not None}}
    pairs = []
    for producer in graph.node:
        if not _scalable(producer, inits, uses, as_producer=True):
            continue
        tensor = producer.output[0]
        while True:
            following = consumers.get(tensor, [])
            if tensor in outputs or len(following) != 1:
                break
            node = following[0]
            if node.op_type in LINEAR_OPS:
                if node.input[0] == tensor and _scalable(node, inits, uses, as_producer=False):
                    channels = _out_channels(producer, inits)
                    fan_in = _in_columns(node, inits)
                    if fan_in % channels == 0:
                        pairs.append(Pair(producer.name, node.name, tensor, channels, fan_in // channels))
                break
            if node.op_type not in PASS_THROUGH and not _spatial_reduce(node, constants):
                break
            tensor = node.output[0]
    return pairs


def _spatial_reduce(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """A mean or max over spatial axes only (how torch exports AdaptiveAvgPool2d(1)): per channel."""
    if node.op_type not in ("ReduceMean", "ReduceMax"):
        return False
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].tolist()
    return bool(axes) and set(np.atleast_1d(axes).tolist()) <= {2, 3, -1, -2}


def _scalable(node: onnx.NodeProto, inits, uses, *, as_producer: bool) -> bool:
    if node.op_type not in LINEAR_OPS or len(node.input) < 2 or node.input[1] not in inits:
        return False
    if uses.get(node.input[1], 0) != 1:  # a shared weight would be scaled for two nodes
        return False
    if node.op_type == "Conv" and _attr(node, "group", 1) != 1:
        return False
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        return False
    if as_producer and len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    return True


def _out_channels(node: onnx.NodeProto, inits) -> int:
    dims = inits[node.input[1]].dims
    if node.op_type == "Gemm" and not _attr(node, "transB", 0):
        return dims[1]
    return dims[0]


def _in_columns(node: onnx.NodeProto, inits) -> int:
    dims = inits[node.input[1]].dims
    if node.op_type == "Gemm" and not _attr(node, "transB", 0):
        return dims[0]
    return dims[1]


def channel_ranges(model_path: str | os.PathLike[str], tensors: Sequence[str], batches: Sequence[np.ndarray], *,
                   input_name: str) -> dict[str, np.ndarray]:
    """Largest |value| per channel (axis 1) of each tensor over the batches."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in known)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for batch in batches:
        values = session.run(list(tensors), {input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        for name, value in zip(tensors, values):
            axes = tuple(i for i in range(value.ndim) if i != 1)
            peak = np.abs(value).max(axis=axes)
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def equalize(float_model: str | os.PathLike[str], out: str | os.PathLike[str], batches: Sequence[np.ndarray], *,
             input_name: str, alpha: float = 0.5) -> dict:
    """Write the equalized model to `out`; returns what was scaled. Node and tensor names are unchanged."""
    model = onnx.load(str(float_model))
    pairs = find_pairs(model)
    nodes = {n.name: n for n in model.graph.node}
    # Both ends of the chain are quantized per tensor: the producer's raw output, negatives included (with
    # symmetric int8 the ReLU after it stays, so its input is quantized too), and what the consumer reads.
    watched = sorted({t for p in pairs for t in (nodes[p.producer].output[0], p.tensor)})
    ranges = channel_ranges(float_model, watched, batches, input_name=input_name)
    inits = {i.name: i for i in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name]).astype(np.float32, copy=True)
        return arrays[name]

    spreads = []
    for pair in pairs:
        producer, consumer = nodes[pair.producer], nodes[pair.consumer]
        weight = array(consumer.input[1])
        columns = _reader_view(consumer, weight, pair)  # [channels, ...] view of what reads each channel
        w_max = np.abs(columns).reshape(pair.channels, -1).max(axis=1)
        # A flattened tensor's columns are channel-major: each channel's range is the largest of its group's.
        r_max = np.maximum(ranges[pair.tensor].reshape(pair.channels, pair.group).max(axis=1),
                           ranges[producer.output[0]])
        live = (r_max > 0) & (w_max > 0)
        scale = np.ones(pair.channels, dtype=np.float64)
        scale[live] = w_max[live] ** (1 - alpha) / r_max[live] ** alpha
        scale[live] /= np.exp(np.mean(np.log(scale[live])))  # unit geometric mean: magnitudes stay familiar
        scale = np.clip(scale, 1 / MAX_SCALE, MAX_SCALE).astype(np.float32)
        columns /= scale.reshape((-1,) + (1,) * (columns.ndim - 1))
        _producer_rows(producer, array(producer.input[1]))[...] *= scale.reshape(
            (-1,) + (1,) * (array(producer.input[1]).ndim - 1))
        if len(producer.input) > 2 and producer.input[2]:
            array(producer.input[2])[...] *= scale
        before = r_max[live].max() / max(np.median(r_max[live]), 1e-30) if live.any() else 1.0
        after_r = (r_max * scale)[live]
        spreads.append({"producer": pair.producer, "consumer": pair.consumer, "channels": pair.channels,
                        "range_max_over_median_before": float(before),
                        "range_max_over_median_after": float(after_r.max() / max(np.median(after_r), 1e-30))
                        if live.any() else 1.0})
    for name, value in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(inits[name]).dtype), name))
    onnx.save(model, str(out))
    drift = _output_drift(float_model, out, batches[0], input_name=input_name)
    if drift > EXACT_TOLERANCE:
        raise NotExactError(f"equalization changed the FP32 outputs by {drift:.2e} of their range (a graph this "
                         "rewrite misreads); quantize without it")
    return {"method": f"per-channel range equalization, alpha {alpha}", "alpha": alpha, "pairs": spreads,
            "fp32_output_drift": drift}


def _output_drift(reference: str | os.PathLike[str], rewritten: str | os.PathLike[str], batch: np.ndarray, *,
                  input_name: str) -> float:
    """Largest output change, as a fraction of the reference output's range: float rounding only, if exact."""
    import onnxruntime as ort

    feed = {input_name: np.ascontiguousarray(batch, dtype=np.float32)}
    a, b = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
            for path in (reference, rewritten))
    return float(np.abs(a - b).max() / max(float(np.ptp(a)), 1e-30))


def _producer_rows(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """The weight viewed with the producer's output channel first."""
    if node.op_type == "Gemm" and not _attr(node, "transB", 0):
        return weight.T
    return weight


def _reader_view(node: onnx.NodeProto, weight: np.ndarray, pair: Pair) -> np.ndarray:
    """The consumer's weights viewed as [producer channel, ...] (a view: writing to it writes the weight)."""
    if node.op_type == "Conv":
        return np.moveaxis(weight, 1, 0)
    if _attr(node, "transB", 0):  # [out, in]: input column c*group + k reads channel c
        return np.moveaxis(weight.reshape(weight.shape[0], pair.channels, pair.group), 1, 0)
    return weight.reshape(pair.channels, pair.group, weight.shape[1])
