"""Which quantized layers hurt most: onnxruntime's Q/DQ debugger, read layer by layer.

For each quantized node, the signal-to-quantization-noise ratio (SQNR, dB) of the Q/DQ model's
activations against the FP32 model's is measured at the node's input and at its output. The drop
across the node is the noise that node itself adds; the largest drops are the layers to keep in
higher precision first (the usual fix for INT8 accuracy loss, NVIDIA/TensorRT#1179).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from calibration.quantize import QUANTIZED_OP_TYPES
from calibration.reader import BatchReader


def _sqnr(reference: np.ndarray, noisy: np.ndarray) -> float:
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(reference.astype(np.float64) - noisy)))
    if noise == 0.0:
        return 200.0
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def rank_sensitive_nodes(
    float_model: str | os.PathLike[str], qdq_model: str | os.PathLike[str], batches: Sequence[np.ndarray], *,
    input_name: str, op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> list[tuple[str, float]]:
    """[(node name, SQNR drop in dB)], most sensitive first, for the quantized nodes of `qdq_model`."""
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_model), str(aug_float), save_as_external_data=True)
        modify_model_output_intermediate_tensors(str(qdq_model), str(aug_qdq), save_as_external_data=True)
        reader = BatchReader(input_name, batches)
        float_acts = collect_activations(str(aug_float), reader)
        reader.rewind()
        qdq_acts = collect_activations(str(aug_qdq), reader)
    matching = create_activation_matching(qdq_acts, float_acts)
    # The model's own errors per tensor (qdq_err: local rounding; xmodel: against FP32) - kept for reference.
    compute_activation_error(matching)

    def tensor_sqnr(name: str) -> float | None:
        match = matching.get(name)
        if not match or not match.get("float"):
            return None
        return _sqnr(np.concatenate(match["float"]), np.concatenate(match["post_qdq"]))

    graph = onnx.load(str(float_model), load_external_data=False).graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scores = []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        before = tensor_sqnr(node.input[0])
        after = _first_matched_downstream(node.output[0], consumers, tensor_sqnr)
        if before is None or after is None:
            continue
        scores.append((node.name, before - after))
    return sorted(scores, key=lambda item: item[1], reverse=True)


def _first_matched_downstream(tensor: str, consumers, tensor_sqnr, depth: int = 3) -> float | None:
    """SQNR of `tensor`, or of the first quantized tensor just after it (Q/DQ often sits after the ReLU)."""
    value = tensor_sqnr(tensor)
    if value is not None or depth == 0:
        return value
    for node in consumers.get(tensor, []):
        if node.op_type in QUANTIZED_OP_TYPES:
            continue
        value = _first_matched_downstream(node.output[0], consumers, tensor_sqnr, depth - 1)
        if value is not None:
            return value
    return None
