"""FP16 ONNX (FP32 inputs and outputs kept): what TensorRT 11 builds FP16 engines from.

FP16 tops out at 65504. Weights and activations beyond it would become inf and then NaN, so both
are measured first: the nodes whose outputs come near the limit on the calibration images stay in
FP32, and the artifact records them. Nothing overflows silently.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from vgg_deploy.fileio import atomic_path

FP16_MAX = 65504.0
# Activations above half the FP16 limit on calibration images are too close: unseen images go higher.
ACTIVATION_HEADROOM = 0.5


def weight_overflow(proto: onnx.ModelProto) -> list[str]:
    """Initializers with values FP16 cannot hold (they would be clamped to +-65504)."""
    too_big = []
    for init in proto.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            array = numpy_helper.to_array(init)
            if array.size and float(np.abs(array).max()) > FP16_MAX:
                too_big.append(init.name)
    return too_big


def activation_peaks(model_path: Path, batches: Sequence[np.ndarray], *, input_name: str) -> dict[str, float]:
    """Largest |value| of every intermediate tensor over the batches (FP32 run)."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fp16-check-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(model_path), str(augmented), save_as_external_data=True)
        session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
        names = [_strip_save_suffix(o.name) for o in session.get_outputs()]
        for batch in batches:
            for name, value in zip(names, session.run(None, {input_name: batch})):
                peak = float(np.abs(value).max()) if value.size else 0.0
                peaks[name] = max(peaks.get(name, 0.0), peak)
    return peaks


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def drop_fp16_round_trips(proto: onnx.ModelProto) -> int:
    """Remove Cast(->fp16) -> Cast(->fp32) pairs the converter leaves between FP32-kept nodes.

    Without this, a tensor passed between two nodes kept in FP32 for overflow still goes through FP16
    (and becomes inf). Returns how many pairs were removed.
    """
    from onnxruntime.transformers.onnx_model import OnnxModel

    graph = proto.graph
    consumers = OnnxModel(proto).input_name_to_nodes()
    outputs = {o.name for o in graph.output}
    removed: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if _cast_to(node) != onnx.TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        back = consumers.get(node.output[0], [])
        if not back or any(_cast_to(c) != onnx.TensorProto.FLOAT for c in back):
            continue
        for cast in back:
            for reader in consumers.get(cast.output[0], []):
                reader.input[:] = [node.input[0] if name == cast.output[0] else name for name in reader.input]
            removed.append(cast)
        removed.append(node)
    gone = {id(n) for n in removed}
    kept_nodes = [n for n in graph.node if id(n) not in gone]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    _keep_value_info_of_live_tensors(graph)
    return sum(1 for n in removed if _cast_to(n) == onnx.TensorProto.FLOAT16)


def _keep_value_info_of_live_tensors(graph: onnx.GraphProto) -> None:
    """value_info for tensors nodes still read or write, and none for initializers: an initializer's own type
    is its type. The converter records FP16 value_info for the bias of a node it keeps in FP32 while leaving
    that bias FP32, and ONNX shape inference then rejects the graph."""
    live = {name for n in graph.node for name in [*n.input, *n.output]}
    initializers = {i.name for i in graph.initializer}
    kept_info = [v for v in graph.value_info if v.name in live and v.name not in initializers]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def _strip_save_suffix(name: str) -> str:
    try:
        from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX as suffix
    except ImportError:  # the debugger's naming is internal; this is its value since onnxruntime 1.13
        suffix = "_ReshapedSavedOutput"
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _to_fp16(proto: onnx.ModelProto, *, keep_fp32_nodes: Sequence[str]) -> onnx.ModelProto:
    """onnxruntime's converter, FP32 graph inputs and outputs kept, `keep_fp32_nodes` left in FP32 with no FP16
    round trip between them, nodes in topological order."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with contextlib.redirect_stdout(io.StringIO()):
        converted = convert_float_to_float16(proto, keep_io_types=True, node_block_list=list(keep_fp32_nodes))
    drop_fp16_round_trips(converted)
    # The converter appends its input/output Casts at the end of the node list; ONNX wants topological order.
    OnnxModel(converted).topological_sort()
    return converted


def _save_checked(proto: onnx.ModelProto, out: Path) -> None:
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))


def overflow_nodes(fp32_path: Path, batches: Sequence[np.ndarray], *, input_name: str) -> dict:
    """Which nodes must stay FP32 because FP16 cannot hold what they read or write, measured on `batches`."""
    proto = onnx.load(str(fp32_path), load_external_data=False)
    peaks = activation_peaks(fp32_path, batches, input_name=input_name)
    limit = FP16_MAX * ACTIVATION_HEADROOM
    hot_tensors = {name for name, peak in peaks.items() if peak > limit}
    # A node that reads or writes a too-large tensor stays FP32: a consumer in FP16 would receive inf.
    blocked = sorted(node.name for node in proto.graph.node
                     if any(t in hot_tensors for t in [*node.input, *node.output]))
    return {
        "kept_fp32_nodes": blocked,
        "overflow_tensors": sorted(hot_tensors),
        "max_activation": max(peaks.values(), default=0.0),
        "overflow_check_images": int(sum(b.shape[0] for b in batches)),
    }


def convert_fp16(
    fp32_path: Path, out: Path, *, batches: Sequence[np.ndarray], input_name: str
) -> dict:
    proto = onnx.load(str(fp32_path))
    info = overflow_nodes(fp32_path, batches, input_name=input_name)
    clamped_weights = weight_overflow(proto)
    _save_checked(_to_fp16(proto, keep_fp32_nodes=info["kept_fp32_nodes"]), out)
    return {**info, "clamped_weights": clamped_weights}


# DequantizeLinear and QuantizeLinear take FP16 scales from opset 19: before it, a Q/DQ graph's float parts
# can only be FP32.
FP16_QDQ_OPSET = 19


def qdq_float_parts_to_fp16(qdq_path: Path, out: Path, *, keep_fp32_nodes: Sequence[str] = ()) -> dict:
    """A Q/DQ graph whose non-quantized parts run in FP16: every float initializer (Q/DQ scales, biases, the
    weights of layers kept out of INT8) and every float tensor between them, graph inputs and outputs staying
    FP32. A strongly typed TensorRT network runs exactly the graph's types, so from the FP32 Q/DQ graph it would
    run everything between the INT8 ops (and every kept layer) in FP32."""
    proto = onnx.load(str(qdq_path))
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < FP16_QDQ_OPSET:
            opset.version = FP16_QDQ_OPSET  # the ops of a classifier graph mean the same at 19 as at 13-18
    # A node kept in FP32 for overflow may still be INT8 (Q/DQ in front of it): its dequantizers must then
    # produce FP32 too, or its input would pass through FP16 on the way in.
    keep = set(keep_fp32_nodes)
    feeds_kept = {name for node in proto.graph.node if node.name in keep for name in node.input}
    keep |= {node.name for node in proto.graph.node
             if node.op_type == "DequantizeLinear" and node.output[0] in feeds_kept}
    _save_checked(_to_fp16(proto, keep_fp32_nodes=sorted(keep)), out)
    return {"float_parts": "fp16", "opset": FP16_QDQ_OPSET, "kept_fp32_nodes": sorted(keep_fp32_nodes)}
