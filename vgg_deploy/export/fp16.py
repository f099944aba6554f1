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
    blocked = sorted(node.name for node in proto.graph.node if any(t in hot_tensors for t in node.output))
    clamped_weights = weight_overflow(proto)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converted = convert_float_to_float16(proto, keep_io_types=True, node_block_list=blocked)
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
