"""FP16 overflow is detected and reported, never silently turned into inf."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vgg_deploy.export.fp16 import convert_fp16


def test_layers_that_would_overflow_stay_fp32(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    with torch.no_grad():
        model[0].weight.mul_(1e5)  # activations far past FP16's 65504 ...
        model[2].weight.mul_(1e-5)  # ... brought back to a normal scale by the next layer
    model.eval()
    path, out = tmp_path / "hot.onnx", tmp_path / "hot.fp16.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, external_data=False)
    batches = [np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)]
    info = convert_fp16(path, out, batches=batches, input_name="input")
    assert info["max_activation"] > 65504
    assert info["overflow_tensors"]
    ops = {n.name: n.op_type for n in onnx.load(str(path)).graph.node}
    kept = {ops[name] for name in info["kept_fp32_nodes"]}
    assert "Conv" in kept and "Relu" in kept
    reference = ort.InferenceSession(str(path)).run(None, {"input": batches[0]})[0]
    converted = ort.InferenceSession(str(out)).run(None, {"input": batches[0]})[0]
    assert np.isfinite(converted).all()
    assert np.abs(converted - reference).max() < 0.05 * np.abs(reference).max()


def test_ordinary_model_keeps_nothing_fp32(tiny_onnx, tiny_batches, tmp_path):
    info = convert_fp16(tiny_onnx, tmp_path / "t.fp16.onnx", batches=tiny_batches[:1], input_name="input")
    assert info["kept_fp32_nodes"] == [] and info["clamped_weights"] == []
