"""Which quantized layers hurt most: onnxruntime's Q/DQ debugger, read layer by layer.

For each quantized node, the signal-to-quantization-noise ratio (SQNR, dB) of the Q/DQ model's
activations against the FP32 model's is measured at the node's input and where the next quantized node
reads its result (or at the graph output). The drop across that stage is the noise the node adds; the largest drops are the layers to keep in
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
    compute_signal_to_quantization_noice_ratio,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.transformers.onnx_model import OnnxModel

from calibration.quantize import QUANTIZED_OP_TYPES
from calibration.reader import BatchReader


def layer_sqnr(
    float_model: str | os.PathLike[str], qdq_model: str | os.PathLike[str], batches: Sequence[np.ndarray], *,
    input_name: str, op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> list[dict]:
    """[{node, sqnr_in_db, sqnr_out_db, drop_db}] in graph order, for every node of `op_types` whose input and
    output tensors the Q/DQ model quantizes (directly, or just after a ReLU/pool)."""
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_model), str(aug_float), save_as_external_data=True)
        modify_model_output_intermediate_tensors(str(qdq_model), str(aug_qdq), save_as_external_data=True)
        reader = BatchReader(input_name, batches)
        float_acts = collect_activations(str(aug_float), reader)
        reader.rewind()
        qdq_acts = collect_activations(str(aug_qdq), reader)
    matching = create_activation_matching(qdq_acts, float_acts)
    # xmodel_err: each Q/DQ-rounded tensor's SQNR (dB) against the FP32 model's same tensor.
    errors = compute_activation_error(matching)

    def tensor_sqnr(name: str) -> float | None:
        if "xmodel_err" in errors.get(name, {}):
            return errors[name]["xmodel_err"]
        if name in output_names and float_acts.get(name) and qdq_acts.get(name):
            # A float graph output (no Q/DQ on it): the noise everything before it left in it.
            return compute_signal_to_quantization_noice_ratio(float_acts[name], qdq_acts[name])
        return None

    model = onnx.load(str(float_model), load_external_data=False)
    graph = model.graph
    output_names = {o.name for o in graph.output}
    consumers = OnnxModel(model).input_name_to_nodes()
    layers = []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        before = tensor_sqnr(node.input[0])
        after = _next_stage_sqnr(node.output[0], consumers, tensor_sqnr, op_types, output_names)
        if before is None or after is None:
            continue
        layers.append({"node": node.name, "sqnr_in_db": float(before), "sqnr_out_db": float(after),
                       "drop_db": float(before - after)})
    return layers


def rank_sensitive_nodes(
    float_model: str | os.PathLike[str], qdq_model: str | os.PathLike[str], batches: Sequence[np.ndarray], *,
    input_name: str, op_types: Sequence[str] = QUANTIZED_OP_TYPES,
) -> list[tuple[str, float]]:
    """[(node name, SQNR drop in dB)], most sensitive first, for the quantized nodes of `qdq_model`."""
    layers = layer_sqnr(float_model, qdq_model, batches, input_name=input_name, op_types=op_types)
    return sorted(((layer["node"], layer["drop_db"]) for layer in layers), key=lambda item: item[1], reverse=True)


def _next_stage_sqnr(tensor: str, consumers, tensor_sqnr, op_types, output_names) -> float | None:
    """SQNR where the next quantized op reads `tensor`'s descendant (after its ReLU/pool), or at the graph
    output. Measured there, not at the node's own output: an output scale stretched by values the ReLU then
    drops looks harmless at the output (the outliers dominate its signal) and ruins what comes after.
    Breadth first, so a pooling the exporter spelled as many small ops is crossed as well."""
    queue, seen = [tensor], {tensor}
    while queue:
        current = queue.pop(0)
        if current in output_names:
            return tensor_sqnr(current)
        for node in consumers.get(current, []):
            if node.op_type in op_types:
                value = tensor_sqnr(node.input[0])
                if value is not None:
                    return value
                continue
            for name in node.output:
                if name not in seen:
                    seen.add(name)
                    queue.append(name)
    return None
