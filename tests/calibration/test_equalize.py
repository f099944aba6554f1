"""Range equalization: exact in FP32, and it rescues INT8 on a model whose channels differ by orders of
magnitude and whose head weights the small ones heavily (a standardised linear probe does)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import calibration
from calibration.equalize import equalize, find_pairs


@pytest.fixture(scope="module")
def lopsided_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        spread = torch.logspace(2, -2, 8)  # conv1's channels from x100 to x0.01, conv2 compensates: same function
        model[0].weight *= spread[:, None, None, None]
        model[0].bias *= spread
        model[3].weight /= spread[None, :, None, None]
        wide = torch.logspace(2, -1, 16)  # conv2's outputs lopsided, and the head leans on the small ones
        model[3].weight *= wide[:, None, None, None]
        model[3].bias *= wide
        model[7].weight /= wide[None, :] ** 1.5
    path = tmp_path_factory.mktemp("lopsided") / "lopsided.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, external_data=False)
    return path


def _batches(seed, count=6):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 3, 16, 16)).astype(np.float32) for _ in range(count)]


def _logits(path, batches):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": b})[0] for b in batches])


def _int8(float_path, batches, tmp_path, tag):
    cache = calibration.RangeCache(tmp_path / f"cache-{tag}")
    cache.store(calibration.CalibrationKey.build(tag, calibration.hash_batches(batches), "minmax"),
                calibration.collect_ranges(float_path, batches, input_name="input", method="minmax"))
    out = tmp_path / f"{tag}.int8.onnx"
    calibration.quantize_qdq(float_path, out, ranges_path=cache.ranges_path, method="minmax")
    return out


def test_pairs_cross_relu_pooling_and_flatten(lopsided_onnx):
    pairs = find_pairs(onnx.load(str(lopsided_onnx)))
    assert [(p.channels, p.group) for p in pairs] == [(8, 1), (16, 1)]  # conv1 -> conv2, conv2 -> linear


def test_equalized_model_is_the_same_function(lopsided_onnx, tmp_path):
    out = tmp_path / "eq.onnx"
    info = equalize(lopsided_onnx, out, _batches(0), input_name="input")
    test = _batches(1)
    reference, equalized = _logits(lopsided_onnx, test), _logits(out, test)
    assert np.allclose(equalized, reference, rtol=1e-4, atol=1e-4 * np.ptp(reference))
    assert info["fp32_output_drift"] < 1e-4
    for pair in info["pairs"]:
        assert pair["range_max_over_median_after"] < pair["range_max_over_median_before"] / 3


def test_equalization_cuts_the_int8_error(lopsided_onnx, tmp_path):
    calib, test = _batches(0), _batches(1)
    equalized = tmp_path / "eq.onnx"
    equalize(lopsided_onnx, equalized, calib, input_name="input")
    reference = _logits(lopsided_onnx, test)
    error = {tag: float(np.abs(_logits(_int8(path, calib, tmp_path, tag), test) - reference).mean())
             for tag, path in (("plain", lopsided_onnx), ("equalized", equalized))}
    assert error["equalized"] < error["plain"] / 3, error


def test_a_flattened_channel_is_scaled_as_one(tmp_path):
    """VGG's pool5 -> flatten -> fc6: each channel is a run of consecutive columns of fc6's input."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 4)).eval()
    with torch.no_grad():
        model[0].weight *= torch.logspace(2, -2, 8)[:, None, None, None]
    path = tmp_path / "flat.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, external_data=False)
    assert [(p.channels, p.group) for p in find_pairs(onnx.load(str(path)))] == [(8, 4)]
    out = tmp_path / "eq.onnx"
    info = equalize(path, out, _batches(0), input_name="input")
    reference = _logits(path, _batches(1))
    assert np.allclose(_logits(out, _batches(1)), reference, rtol=1e-4, atol=1e-4 * np.ptp(reference))
    assert info["pairs"][0]["range_max_over_median_after"] < info["pairs"][0]["range_max_over_median_before"] / 3
