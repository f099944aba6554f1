"""FP16 ONNX (FP32 inputs and outputs kept): what TensorRT 11 builds FP16 engines from.

FP16 tops out at 65504. Weights and activations beyond it would become inf and then NaN, so both
are measured first: the nodes whose outputs come near the limit on the calibration images stay in
FP32, and the artifact records them. Nothing overflows silently.
"""

from __future__ import annotations

import contextlib
import io
import logging
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
    graph = proto.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
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
    live = {name for n in graph.node for name in [*n.input, *n.output]}
    kept_info = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return sum(1 for n in removed if _cast_to(n) == onnx.TensorProto.FLOAT16)


def _strip_save_suffix(name: str) -> str:
    try:
        from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX as suffix
    except ImportError:  # the debugger's naming is internal; this is its value since onnxruntime 1.13
        suffix = "_ReshapedSavedOutput"
    return name[: -len(suffix)] if name.endswith(suffix) else name


def convert_fp16(
    fp32_path: Path, out: Path, *, batches: Sequence[np.ndarray], input_name: str
) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(fp32_path))
    peaks = activation_peaks(fp32_path, batches, input_name=input_name)
    limit = FP16_MAX * ACTIVATION_HEADROOM
    hot_tensors = {name for name, peak in peaks.items() if peak > limit}
    # A node that reads or writes a too-large tensor stays FP32: a consumer in FP16 would receive inf.
    blocked = sorted(node.name for node in proto.graph.node
                     if any(t in hot_tensors for t in [*node.input, *node.output]))
    clamped_weights = weight_overflow(proto)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converted = convert_float_to_float16(proto, keep_io_types=True, node_block_list=blocked)
        drop_fp16_round_trips(converted)
        # The converter appends its input/output Casts at the end of the node list; ONNX wants topological order.
        from onnxruntime.transformers.onnx_model import OnnxModel

        OnnxModel(converted).topological_sort()
    finally:
        logging.getLogger().setLevel(quiet)
    with atomic_path(out) as tmp:
        onnx.save(converted, str(tmp))
        onnx.checker.check_model(str(tmp))
    return {
        "kept_fp32_nodes": blocked,
        "overflow_tensors": sorted(hot_tensors),
        "clamped_weights": clamped_weights,
        "max_activation": max(peaks.values(), default=0.0),
        "overflow_check_images": int(sum(b.shape[0] for b in batches)),
    }
